"""One image from its plan entry: scene, person, occluder, camera — all from the image's own seed."""

from __future__ import annotations

import functools

import numpy as np

from .cameras import Camera, capture
from .config import SynthOccConfig
from .identity import Identity, sample_identity
from .occluders import Figure, occlude
from .plan import ImageSpec
from .render import VIEWS, Pose, render_person
from .scenes import background, foot_shadow


@functools.lru_cache(maxsize=4096)
def identity(seed: int, pid: int) -> Identity:
    return sample_identity(seed, pid)


def image_rng(cfg: SynthOccConfig, spec: ImageSpec) -> np.random.Generator:
    """The generator of one image: it depends on (seed, split, pid, index) only, never on drawing order."""
    return np.random.default_rng([cfg.seed, 6, *spec.seed_key])


def render_image(spec: ImageSpec, cfg: SynthOccConfig, camera: Camera) -> tuple[np.ndarray, float, str]:
    """The uint8 (h, w, 3) image of ``spec``, the share of the person hidden (0 when not occluded) and the
    occluder kind ("" when not occluded)."""
    rng = image_rng(cfg, spec)
    size = (cfg.height, cfg.width)
    h, w = size
    person = identity(cfg.seed, spec.pid)
    view = VIEWS[int(rng.choice(len(VIEWS), p=camera.view_probs))]
    pose = Pose(view, mirrored=view == "side" and bool(rng.random() < 0.5),
                stride=float(rng.uniform(0.1, 1.0)), swing=float(rng.uniform(-1.0, 1.0)))
    height = h * min(person.height * float(rng.uniform(*camera.scale)), 0.98)
    top = (h - height) * float(rng.uniform(0.3, 0.75))
    cx = w * (0.5 + float(rng.uniform(-camera.shift, camera.shift)))
    scene = background(camera.scene, rng, size)
    scene *= foot_shadow(size, cx, top + height, 0.16 * height)[..., None]
    figure = render_person(person, pose, size, cx, top, height)
    image = figure.over(scene)
    share, kind = 0.0, ""
    if spec.occluded:
        layer, share, kind = occlude(rng, figure.alpha, Figure(cx, top, height), cfg.occlusion_min,
                                     cfg.occlusion_max, cfg.seed)
        image = layer.over(image)
    return capture(image, camera, rng), share, kind
