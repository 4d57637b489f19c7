"""Test helpers for the occluder library: photographs with known objects, and small library configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from occreid.occluders import ClassicalConfig, FilterConfig, OccludersConfig, SamConfig

RED_BOX = (10, 12, 16, 16)  # x, y, w, h of the red square in scene()
BLUE_BOX = (40, 30, 10, 30)  # the blue bar: 3 times as tall as wide


def scene() -> np.ndarray:
    """A grey 80×64 photograph with two flat objects whose masks are known exactly."""
    im = np.full((64, 80, 3), 128, np.uint8)
    for (x, y, w, h), colour in ((RED_BOX, (220, 30, 30)), (BLUE_BOX, (30, 30, 220))):
        im[y:y + h, x:x + w] = colour
    return im


def photo_folder(folder: Path) -> Path:
    """A source folder: the known scene, and two textured crops of scikit-image photographs (sub-folder too)."""
    import skimage.data

    (folder / "more").mkdir(parents=True)
    Image.fromarray(scene()).save(folder / "a_scene.png")
    Image.fromarray(np.asarray(skimage.data.coffee())[::4, ::4]).save(folder / "b_coffee.jpg", quality=95)
    Image.fromarray(np.asarray(skimage.data.chelsea())[::4, ::4]).save(folder / "more" / "c_cat.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def classical_cfg(source: Path | None, **filters) -> OccludersConfig:
    """Exact Felzenszwalb (no smoothing) with the demo's filters, changed by ``filters``."""
    return OccludersConfig(source=None if source is None else str(source), image_max_side=128, backend="classical",
                           classical=ClassicalConfig(sigma=0.0, min_size=20), filters=FilterConfig(**filters),
                           sheet_objects=8, sheet_cell=16)


def tiny_sam_cfg(source: Path, **filters) -> OccludersConfig:
    """The random tiny SAM with the quality thresholds off (else it keeps nothing) and loose filters."""
    loose = dict(min_area=0.0, max_area=1.0, min_fill=0.0, exclude_border=False, min_side=1)
    return OccludersConfig(source=str(source), image_max_side=96, backend="sam",
                           sam=SamConfig(model_type="tiny", points_per_side=3, pred_iou_thresh=0.0,
                                         stability_score_thresh=0.0),
                           filters=FilterConfig(**{**loose, **filters}), sheet_objects=4, sheet_cell=16)
