"""Baselines DPM++ compares saliency-guided patch transfer with: random erasing and cut-and-paste.

Both draw a box (area a fraction of the image, aspect = height/width drawn log-uniformly, as
timm/Zhong et al.'s RandomErasing) from an explicit ``numpy.random.Generator``, so a training item is a
pure function of its seed (timm's RandomErasing uses the global ``random`` module and cannot be seeded per
item). ``random_erase`` fills the box of a normalised tensor with N(0, 1) noise (timm's 'pixel' mode);
``cut_paste`` copies a box of another identity's image into the source image — a real occluder-like
texture, but placed without regard to where the person is, which is what SPT improves on.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from occreid.augment.config import CutPasteConfig


def sample_box(rng: np.random.Generator, size: tuple[int, int], cfg: CutPasteConfig,
               from_border: bool = False) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a box inside an image of ``size`` = (H, W)."""
    H, W = size
    area = rng.uniform(cfg.area[0], cfg.area[1]) * H * W
    aspect = math.exp(rng.uniform(math.log(cfg.aspect[0]), math.log(cfg.aspect[1])))
    h = int(min(H, max(1, round(math.sqrt(area * aspect)))))
    w = int(min(W, max(1, round(math.sqrt(area / aspect)))))
    top = int(rng.integers(0, H - h + 1))
    left = int(rng.integers(0, W - w + 1))
    if from_border:
        side = int(rng.integers(0, 4))  # 0 top, 1 bottom, 2 left, 3 right
        top = 0 if side == 0 else (H - h if side == 1 else top)
        left = 0 if side == 2 else (W - w if side == 3 else left)
    return top, left, h, w


def cut_paste(x_i: np.ndarray, x_j: np.ndarray, rng: np.random.Generator,
              cfg: CutPasteConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)``: a box of ``x_j`` (drawn anywhere in x_j) pasted onto ``x_i`` (at a box drawn with
    ``cfg.from_border``); ``mask`` [H, W] bool marks the pasted pixels. Images are ``[H, W, C]`` of one size."""
    x_i, x_j = np.asarray(x_i), np.asarray(x_j)
    if x_i.shape != x_j.shape:
        raise ValueError(f"cut_paste needs images of one shape, got {x_i.shape} and {x_j.shape}")
    top, left, h, w = sample_box(rng, x_i.shape[:2], cfg, cfg.from_border)
    src_top = int(rng.integers(0, x_j.shape[0] - h + 1))
    src_left = int(rng.integers(0, x_j.shape[1] - w + 1))
    out = x_i.copy()
    out[top:top + h, left:left + w] = x_j[src_top:src_top + h, src_left:src_left + w]
    mask = np.zeros(x_i.shape[:2], bool)
    mask[top:top + h, left:left + w] = True
    return out, mask


def random_erase(image: torch.Tensor, rng: np.random.Generator, cfg: CutPasteConfig) -> tuple[torch.Tensor, np.ndarray]:
    """``(image, mask)``: a box of a normalised ``[C, H, W]`` tensor replaced by N(0, 1) noise (seeded by ``rng``)."""
    _, H, W = image.shape
    top, left, h, w = sample_box(rng, (H, W), cfg)
    noise = torch.from_numpy(rng.standard_normal((image.shape[0], h, w)).astype(np.float32)).to(image.dtype)
    out = image.clone()
    out[:, top:top + h, left:left + w] = noise
    mask = np.zeros((H, W), bool)
    mask[top:top + h, left:left + w] = True
    return out, mask
