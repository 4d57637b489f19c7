"""The photographs objects are cut from: a user's folder (e.g. an SA-1B subset) or scikit-image's bundled ones.

A source is listed in a fixed order (sorted relative paths; scikit-image's in the order of
:data:`SKIMAGE_PHOTOS`), so the library does not depend on the file system's listing order, and each image is
read as RGB uint8, downscaled to a longest side of at most ``max_side`` (SAM works at 1024 px anyway; SA-1B
images are ~1500 × 2250).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from occreid.errors import OccreidError

# Natural photographs shipped inside scikit-image (no download): scenes with separable objects.
SKIMAGE_PHOTOS = ("astronaut", "camera", "chelsea", "clock", "coffee", "coins", "motorcycle", "rocket")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class SourceImage:
    """One photograph: its name in the manifest and how to read it."""

    name: str  # "skimage:astronaut" or the path relative to the source folder
    read: Callable[[], np.ndarray]  # -> RGB uint8 [H, W, 3] at full size


def _skimage(name: str) -> np.ndarray:
    import skimage.data

    array = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    return np.asarray(Image.fromarray(np.asarray(array)).convert("RGB"))


def _file(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as e:
        raise OccreidError(f"cannot read image: {e}", path=path,
                           fix="remove the file from the source folder or replace it") from None


def list_sources(folder: str | Path | None, max_images: int | None = None) -> list[SourceImage]:
    """The photographs of ``folder`` (recursively, sorted) or scikit-image's (``folder`` None), at most
    ``max_images`` of them."""
    if folder is None:
        images = [SourceImage(f"skimage:{n}", lambda n=n: _skimage(n)) for n in SKIMAGE_PHOTOS]
    else:
        root = Path(folder)
        if not root.is_dir():
            raise OccreidError("occluder source folder not found", path=root,
                               fix="set occluders.source to a folder of photographs, or null for scikit-image's")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        images = [SourceImage(p.relative_to(root).as_posix(), lambda p=p: _file(p)) for p in files]
        if not images:
            raise OccreidError("no images in the occluder source folder", path=root,
                               fix=f"put photographs ({', '.join(IMAGE_SUFFIXES)}) there, or set occluders.source")
    return images[:max_images] if max_images is not None else images


def downscale(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """``rgb`` resized (area-averaging) so that its longest side is at most ``max_side``."""
    h, w = rgb.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return rgb
    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.BOX))


def read_sources(sources: list[SourceImage], max_side: int | None) -> Iterator[tuple[SourceImage, np.ndarray]]:
    """Each source with its (downscaled) pixels, one at a time (memory: one photograph)."""
    for src in sources:
        yield src, downscale(src.read(), max_side)


def pixel_sha256(rgb: np.ndarray) -> str:
    """sha256 of an image's shape and pixels (what was segmented, whatever the file format)."""
    digest = hashlib.sha256(f"{rgb.shape}".encode())
    digest.update(np.ascontiguousarray(rgb).tobytes())
    return digest.hexdigest()
