"""Test helpers for the saliency / SPT part: tiny "pedestrian" images and a Market-layout folder of them.

A person is a bright rectangle (its colour encodes the identity) on a dark, slightly noisy background whose
colour encodes the camera; its horizontal position varies a little per image, so masks differ and rolls
matter. Everything is seeded, small (32×16 pixels by default) and written as high-quality JPEGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ID_COLOURS = [(230, 60, 60), (60, 220, 60), (70, 90, 240), (240, 220, 60), (220, 70, 220), (60, 220, 220)]
CAM_COLOURS = [(30, 30, 40), (45, 35, 25), (25, 45, 35)]


def person_image(pid: int, cam: int, shift: int, size: tuple[int, int] = (32, 16), seed: int = 0) -> np.ndarray:
    """RGB uint8 [H, W, 3]: background of camera ``cam`` with noise, a person box of identity ``pid``."""
    H, W = size
    rng = np.random.default_rng(seed)
    img = np.empty((H, W, 3), np.float64)
    img[:] = CAM_COLOURS[cam % len(CAM_COLOURS)]
    img += rng.normal(0, 4, img.shape)
    top, bottom = H // 8, H - H // 8
    left = W // 4 + shift
    right = left + W // 2
    img[top:bottom, max(left, 0):min(right, W)] = ID_COLOURS[pid % len(ID_COLOURS)]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def build_person_dataset(root: Path, *, ids: int = 4, per_id: int = 4, size: tuple[int, int] = (32, 16)) -> Path:
    """A Market-layout folder: ``ids`` × ``per_id`` training images, one query and one gallery image."""
    train = root / "bounding_box_train"
    train.mkdir(parents=True)
    for pid in range(ids):
        for k in range(per_id):
            cam = k % 3
            img = person_image(pid, cam, shift=(k % 3) - 1, size=size, seed=100 * pid + k)
            Image.fromarray(img).save(train / f"{pid + 1:04d}_c{cam + 1}s1_{k:06d}_01.jpg", quality=95)
    for folder, pid, cam in (("query", 90, 0), ("bounding_box_test", 90, 1)):
        (root / folder).mkdir()
        Image.fromarray(person_image(pid, cam, 0, size)).save(root / folder / f"{pid:04d}_c{cam + 1}s1_000001_01.jpg",
                                                              quality=95)
    return root
