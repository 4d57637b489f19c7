"""Cameras: what makes the same person look different from one camera to the next.

Each camera has its own scene, illumination (gain, gamma), colour balance (per-channel tint), preferred
viewpoints (a camera along a corridor sees mostly fronts and backs, one across it mostly sides), framing
(scale and position jitter of the detection box), optical blur and sensor noise. These are the nuisances a
re-ID model must become invariant to; they are sampled once per camera from the dataset seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from .render import VIEWS
from .scenes import WALLS, Scene, sample_scene


@dataclass(frozen=True)
class Camera:
    index: int  # 0-based; file names show index + 1
    scene: Scene
    gain: float
    gamma: float
    tint: tuple[float, float, float]
    view_probs: tuple[float, float, float]  # front, back, side
    scale: tuple[float, float]  # range of the person's height factor in the frame
    shift: float  # horizontal jitter of the person, share of the width
    blur: float  # Gaussian blur radius in pixels
    noise: float  # sensor noise standard deviation, in [0, 1] intensity units


def sample_cameras(seed: int, count: int, size: tuple[int, int]) -> list[Camera]:
    """``count`` cameras for images of ``size`` = (h, w); the walls are distinct while the photos last."""
    walls = np.random.default_rng([seed, 3]).permutation(len(WALLS))
    return [_camera(np.random.default_rng([seed, 3, c]), c, WALLS[walls[c % len(WALLS)]], size[0] / size[1])
            for c in range(count)]


def _camera(rng: np.random.Generator, index: int, wall: str, aspect: float) -> Camera:
    scene = sample_scene(rng, wall, aspect)
    favourite = int(rng.integers(len(VIEWS)))
    probs = np.full(len(VIEWS), 0.2)
    probs[favourite] = 0.6
    tint = 1.0 + rng.normal(0.0, 0.07, 3)
    tint = tint / tint.mean()
    low = float(rng.uniform(0.9, 0.98))
    return Camera(
        index=index,
        scene=scene,
        gain=float(rng.uniform(0.75, 1.2)),
        gamma=float(rng.uniform(0.85, 1.15)),
        tint=tuple(float(t) for t in tint),
        view_probs=tuple(float(p) for p in probs),
        scale=(low, low + 0.06),
        shift=float(rng.uniform(0.02, 0.08)),
        blur=float(rng.uniform(0.0, 0.9)),
        noise=float(rng.uniform(0.008, 0.03)),
    )


def capture(image: np.ndarray, camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """The (h, w, 3) scene radiance in [0, 1] as ``camera`` records it: uint8 with light, tint, blur and noise."""
    gain = camera.gain * float(rng.uniform(0.93, 1.07))  # clouds, lamps: a little light change per frame
    out = np.clip(image * (gain * np.asarray(camera.tint, np.float32)), 0.0, 1.0) ** camera.gamma
    if camera.blur > 0.05:
        pil = Image.fromarray((out * 255.0 + 0.5).astype(np.uint8)).filter(ImageFilter.GaussianBlur(camera.blur))
        out = np.asarray(pil, np.float32) / 255.0
    out = out + rng.normal(0.0, camera.noise, out.shape).astype(np.float32)
    return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
