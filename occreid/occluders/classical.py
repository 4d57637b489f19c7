"""Weight-free candidate masks: every region of a graph-based segmentation (scikit-image).

Felzenszwalb & Huttenlocher's segmentation merges pixels into regions whose inside varies less than their
borders, so on a photograph its regions follow object and part boundaries — a coin, a cup, a window — though
without SAM's notion of a whole object. SLIC superpixels are the compact alternative. Both are deterministic
and take well under a second on a 256 px photograph: the CPU demo's backend, since a randomly initialised SAM
cuts out noise. The filters of the library (area, aspect, fill, border) then pick the object-like regions.
"""

from __future__ import annotations

import numpy as np

from .backends import Candidate
from .config import ClassicalConfig


def segment_labels(rgb: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """A label image [H, W] (int, 0..K-1) of ``rgb`` with ``cfg.method``."""
    from skimage.segmentation import felzenszwalb, slic

    if cfg.method == "felzenszwalb":
        return felzenszwalb(rgb, scale=cfg.scale, sigma=cfg.sigma, min_size=cfg.min_size)
    return slic(rgb, n_segments=cfg.n_segments, compactness=cfg.compactness, sigma=cfg.sigma, start_label=0)


class ClassicalMasks:
    """Image → one candidate mask per segmentation region; the score is the region's fill of its bounding
    box (compact regions first), so ``max_per_image`` keeps the most object-like."""

    def __init__(self, cfg: ClassicalConfig):
        self.cfg = cfg

    def __call__(self, rgb: np.ndarray) -> list[Candidate]:
        from scipy import ndimage

        labels = segment_labels(rgb, self.cfg)
        out = []
        for label, box in enumerate(ndimage.find_objects(labels + 1)):
            if box is None:
                continue
            region = labels[box] == label
            y, x = box[0].start, box[1].start
            out.append(Candidate((x, y, region.shape[1], region.shape[0]), region, float(region.mean())))
        return out
