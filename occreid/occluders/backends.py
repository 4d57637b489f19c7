"""The mask backends behind one factory: :func:`create_mask_backend` (config → image → candidate masks).

A backend is a callable ``rgb [H, W, 3] uint8 -> list[Candidate]``; the library builder filters and crops
whatever it returns, so a new segmenter is one registered constructor. A candidate keeps its mask cropped to
its bounding box: a segmentation of a large photograph has hundreds of regions, and full-size masks of all
of them would take gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from occreid.registry import Registry

from .config import OccludersConfig


@dataclass(frozen=True)
class Candidate:
    """One mask: ``mask`` [h, w] bool inside the box ``(x, y, w, h)`` of the image, and the backend's score."""

    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float

    @classmethod
    def from_full(cls, mask: np.ndarray, score: float) -> "Candidate | None":
        """The candidate of a full-image mask (None when the mask is empty)."""
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if not len(rows):
            return None
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return cls((x0, y0, x1 - x0, y1 - y0), np.ascontiguousarray(mask[y0:y1, x0:x1]), float(score))


MaskBackend = Callable[[np.ndarray], list[Candidate]]
MASK_BACKENDS: Registry[Callable[[OccludersConfig, str], MaskBackend]] = Registry("occluder mask backend")


@MASK_BACKENDS.register("sam")
def _sam(cfg: OccludersConfig, device: str) -> MaskBackend:
    from .sam import SamMasks

    return SamMasks(cfg.sam, seed=cfg.seed, device=device)


@MASK_BACKENDS.register("classical")
def _classical(cfg: OccludersConfig, device: str) -> MaskBackend:
    from .classical import ClassicalMasks

    return ClassicalMasks(cfg.classical)


def create_mask_backend(cfg: OccludersConfig, device: str = "cpu") -> MaskBackend:
    """The mask backend ``cfg.backend`` (``sam`` on ``device``; ``classical`` ignores it)."""
    return MASK_BACKENDS.get(cfg.backend)(cfg, device)
