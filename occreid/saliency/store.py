"""Compact saliency storage (one .npz) and the overlay sheet that lets a person check the maps by eye.

Storage: saliency lives on the patch grid, so a dataset's maps are a float16 array ``[N, h, w]`` (Occluded-Duke
at 21×10: 15 618 × 210 × 2 bytes ≈ 6.6 MB) plus the image paths *relative to the prepared dataset folder*
(so the file does not depend on where the project lives), the :class:`PatchGeometry` that maps patches to
pixels, and the backend's name. float16 keeps ~3 significant digits, far finer than any threshold we apply.

:func:`write_npz` writes a zip whose bytes depend only on the arrays (fixed timestamps, sorted names): NumPy's
own ``savez`` stamps the current time into the zip, which would make every DVC run look changed.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from occreid.errors import OccreidError
from occreid.io import atomic_path
from occreid.saliency.geometry import PatchGeometry

log = logging.getLogger(__name__)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def write_npz(target: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as a compressed .npz atomically, byte-identical for identical arrays."""
    with atomic_path(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(arrays):
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
    return Path(target)


def read_npz(path: str | Path, keys: Sequence[str], *, what: str, fix: str) -> dict[str, np.ndarray]:
    """Load the named arrays of an .npz (no pickles), with errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise OccreidError(f"{what} not found", path=path, fix=fix)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise OccreidError(f"{what} lacks arrays {missing} (written by another version?)", path=path, fix=fix)
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise OccreidError(f"cannot read {what}: {e}", path=path, fix=fix) from None


@dataclass
class SaliencyMaps:
    """Saliency of a dataset's training images, in record order."""

    maps: np.ndarray  # float16 [N, h, w], values in [0, 1]
    paths: list[str]  # image paths relative to the prepared dataset folder (posix separators)
    geometry: PatchGeometry
    backend: str

    def __post_init__(self) -> None:
        self.maps = np.asarray(self.maps, dtype=np.float16)
        if self.maps.ndim != 3 or tuple(self.maps.shape[1:]) != self.geometry.grid:
            raise ValueError(f"maps {self.maps.shape} are not [N, *grid] with grid {self.geometry.grid}")
        if len(self.paths) != len(self.maps):
            raise ValueError(f"{len(self.paths)} paths for {len(self.maps)} maps")

    def __len__(self) -> int:
        return len(self.maps)


_FIX = "re-run the saliency stage (python -m stages.saliency --dataset NAME)"


def save_saliency(target: str | Path, sal: SaliencyMaps) -> Path:
    """Write ``sal`` to one .npz (keys: maps, paths, geometry, backend)."""
    path = write_npz(target, {
        "maps": sal.maps,
        "paths": np.array(sal.paths, dtype=str),
        "geometry": sal.geometry.to_array(),
        "backend": np.array(sal.backend),
    })
    log.info("saliency of %d images (grid %s, %s) written to %s", len(sal), sal.geometry.grid, sal.backend, path)
    return path


def load_saliency(path: str | Path) -> SaliencyMaps:
    data = read_npz(path, ("maps", "paths", "geometry", "backend"), what="saliency file", fix=_FIX)
    try:
        return SaliencyMaps(data["maps"], [str(p) for p in data["paths"]],
                            PatchGeometry.from_array(data["geometry"]), str(data["backend"]))
    except (ValueError, OccreidError) as e:
        raise OccreidError(f"inconsistent saliency file: {e}", path=path, fix=_FIX) from None


def relative_paths(paths: Sequence[str], root: str | Path) -> list[str]:
    """Paths relative to ``root`` with '/' separators (what the .npz files store)."""
    root = Path(root).resolve()
    out = []
    for p in paths:
        try:
            out.append(Path(p).resolve().relative_to(root).as_posix())
        except ValueError:
            raise OccreidError(f"image {p} is not inside the dataset folder", path=root) from None
    return out


def load_rgb(path: str, img_size: Sequence[int]) -> np.ndarray:
    """An image resized (bicubic, as the model input) to ``img_size`` = (H, W), RGB uint8 ``[H, W, 3]``."""
    from occreid.data.loader import read_image

    H, W = int(img_size[0]), int(img_size[1])
    return np.asarray(read_image(path).resize((W, H), Image.BICUBIC), dtype=np.uint8)


# ---- sheets ---------------------------------------------------------------------------------------------

def heat_overlay(rgb: np.ndarray, pixel_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """An RGB uint8 image blended with the 'jet' colouring of a [0, 1] pixel map."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(pixel_map, 0.0, 1.0))[..., :3] * 255.0
    return np.round((1 - alpha) * np.asarray(rgb, np.float64) + alpha * heat).astype(np.uint8)


def compose_sheet(rows: Sequence[Sequence[np.ndarray]], pad: int = 2, background: int = 255) -> np.ndarray:
    """Tiles (RGB uint8, all the same size) laid out row by row with ``pad`` pixels between them."""
    rows = [list(r) for r in rows if len(r)]
    if not rows:
        return np.full((1, 1, 3), background, np.uint8)
    th, tw = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    sheet = np.full((pad + len(rows) * (th + pad), pad + cols * (tw + pad), 3), background, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            if tile.shape[:2] != (th, tw):
                raise ValueError(f"tile of shape {tile.shape} differs from {(th, tw)}")
            y, x = pad + r * (th + pad), pad + c * (tw + pad)
            sheet[y:y + th, x:x + tw] = tile[..., :3]
    return sheet


def save_png(target: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as PNG atomically (PIL's PNG bytes are deterministic)."""
    with atomic_path(target) as tmp:
        Image.fromarray(np.asarray(rgb, np.uint8)).save(tmp, format="PNG")
    return Path(target)


def overlay_sheet(images: Sequence[np.ndarray], maps: np.ndarray, geometry: PatchGeometry,
                  per_row: int = 8) -> np.ndarray:
    """Pairs (image, image with its upsampled saliency heat-map), ``per_row`` pairs per row."""
    tiles = []
    for rgb, m in zip(images, np.asarray(maps, np.float64)):
        tiles.append(np.concatenate([rgb, heat_overlay(rgb, geometry.upsample(m))], axis=1))
    rows = [tiles[i:i + per_row] for i in range(0, len(tiles), per_row)]
    return compose_sheet(rows, pad=3)


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread over ``range(n)`` (all of them when k >= n): the deterministic sheet sample."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / max(k - 1, 1))) for i in range(k)})
