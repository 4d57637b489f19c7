"""Real-photo material: backgrounds of each camera's scene and textures for occluders.

The photographs bundled with scikit-image (no download) are the only image source. A camera's scene is a
"wall" photo above a "ground" photo, each seen through a fixed window with a tint, so every camera has a
recognisable place, as in a real network; each image shifts the windows a little (a person walks through
the scene). Occluders are textured with crops of the same photos.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

WALLS = ("brick", "rocket", "camera", "astronaut", "coffee", "page", "text", "clock")
GROUNDS = ("gravel", "grass", "brick", "moon")
TEXTURES = ("brick", "gravel", "coins", "coffee", "rocket", "camera", "chelsea", "grass", "moon", "text",
            "page", "astronaut", "immunohistochemistry")
TINTS = ((1.0, 0.86, 0.74), (0.82, 0.88, 1.0), (0.9, 0.96, 0.84), (1.0, 1.0, 1.0), (0.96, 0.92, 0.86))


@functools.lru_cache(maxsize=None)
def photo(name: str) -> Image.Image:
    """A scikit-image sample photograph as an RGB PIL image (loaded once per process)."""
    import skimage.data

    array = getattr(skimage.data, name)()
    return Image.fromarray(np.asarray(array)).convert("RGB")


def crop(name: str, box: tuple[float, float, float, float], size: tuple[int, int],
         tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The region ``box`` = (x0, y0, x1, y1) of photo ``name`` resized to ``size`` = (h, w), tinted, in [0, 1]."""
    h, w = size
    im = photo(name).resize((max(w, 1), max(h, 1)), Image.BILINEAR, box=box)
    return np.asarray(im, np.float32) * (np.asarray(tint, np.float32) / 255.0)


def random_window(rng: np.random.Generator, name: str, zoom: tuple[float, float],
                  aspect: float) -> tuple[float, float, float, float]:
    """A random window of photo ``name`` with width ``zoom`` × photo width and height/width ``aspect``."""
    pw, ph = photo(name).size
    ww = pw * float(rng.uniform(*zoom))
    wh = min(ww * aspect, ph * 0.95)
    ww = wh / aspect
    x0 = float(rng.uniform(0, pw - ww))
    y0 = float(rng.uniform(0, ph - wh))
    return (x0, y0, x0 + ww, y0 + wh)


def texture(rng: np.random.Generator, size: tuple[int, int], names: tuple[str, ...] = TEXTURES) -> np.ndarray:
    """A random crop of a random photo, resized to ``size`` = (h, w): the surface of an occluder."""
    name = names[int(rng.integers(len(names)))]
    h, w = size
    box = random_window(rng, name, (0.15, 0.5), h / max(w, 1))
    tint = TINTS[int(rng.integers(len(TINTS)))]
    return crop(name, box, size, tint)


@dataclass(frozen=True)
class Scene:
    """Where a camera looks: wall and ground photos, their windows and tints, and the horizon row share."""

    wall: str
    wall_box: tuple[float, float, float, float]
    wall_tint: tuple[float, float, float]
    ground: str
    ground_box: tuple[float, float, float, float]
    ground_tint: tuple[float, float, float]
    horizon: float


def sample_scene(rng: np.random.Generator, wall: str, aspect: float) -> Scene:
    """A scene on ``wall`` with a random ground; ``aspect`` is the image height/width."""
    ground = GROUNDS[int(rng.integers(len(GROUNDS)))]
    horizon = float(rng.uniform(0.55, 0.75))
    return Scene(
        wall=wall,
        wall_box=random_window(rng, wall, (0.3, 0.55), aspect * horizon),
        wall_tint=TINTS[int(rng.integers(len(TINTS)))] if photo_is_grey(wall) else (1.0, 1.0, 1.0),
        ground=ground,
        ground_box=random_window(rng, ground, (0.3, 0.55), aspect * (1 - horizon)),
        ground_tint=TINTS[int(rng.integers(len(TINTS)))],
        horizon=horizon,
    )


@functools.lru_cache(maxsize=None)
def photo_is_grey(name: str) -> bool:
    a = np.asarray(photo(name))
    return bool((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all())


def background(scene: Scene, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """One frame of ``scene`` at ``size`` = (h, w): both windows shifted by up to 12% of their size."""
    h, w = size
    rows = min(max(int(round(scene.horizon * h)), 1), h - 1)
    wall = crop(scene.wall, _jitter(rng, scene.wall, scene.wall_box), (rows, w), scene.wall_tint)
    ground = crop(scene.ground, _jitter(rng, scene.ground, scene.ground_box), (h - rows, w), scene.ground_tint)
    image = np.concatenate([wall, ground * 0.92], axis=0)
    image[rows - 1:rows + 1] *= 0.7  # the kerb line between wall and ground
    return image


def _jitter(rng: np.random.Generator, name: str, box: tuple[float, float, float, float]) -> tuple[float, ...]:
    pw, ph = photo(name).size
    x0, y0, x1, y1 = box
    dx = float(rng.uniform(-0.12, 0.12)) * (x1 - x0)
    dy = float(rng.uniform(-0.12, 0.12)) * (y1 - y0)
    dx = min(max(dx, -x0), pw - x1)
    dy = min(max(dy, -y0), ph - y1)
    return (x0 + dx, y0 + dy, x1 + dx, y1 + dy)


def foot_shadow(size: tuple[int, int], cx: float, y: float, rx: float) -> np.ndarray:
    """A soft multiplicative shadow (h, w) under the feet at (cx, y)."""
    h, w = size
    ys = (np.arange(h, dtype=np.float32)[:, None] - y) / max(rx * 0.22, 1.0)
    xs = (np.arange(w, dtype=np.float32)[None, :] - cx) / max(rx, 1.0)
    return 1.0 - 0.45 * np.exp(-(xs * xs + ys * ys))
