"""The training transform applied to a whole batch of decoded images, with the per-image random draws unchanged.

Why: on a small model (the CPU demo's 64×32 ViT) torchvision's per-image dispatch of flip, pad, crop,
conversion and normalisation costs about as much as the model step itself. Images from the decoded-image
cache (:mod:`occreid.data.cache`) are already resized, so the rest of :func:`~occreid.data.transforms.build_train_transform`
can run on the batch: pad, convert and normalise all images at once, then per image only draw the flip and
the crop offsets, take the (flipped) crop and hand it to timm's RandomErasing.

The draws are the ones the per-image pipeline makes, in the same order from the same global generators:
for each image, ``torch.rand(1)`` for the flip (``v2.RandomHorizontalFlip``), ``torch.randint`` for the crop
top and left (``v2.RandomCrop`` on the padded image), then RandomErasing's own draws. Flip, zero padding and
cropping commute with the element-wise conversion and normalisation (padding is symmetric, so flipping the
padded image is padding the flipped one), so each output tensor is bit-identical to the per-image
pipeline's (tests/test_batch_augment.py checks it against torchvision). Colour jitter acts on the pixels
before normalisation and is not batched: :func:`batch_train_transform` returns None for it and the loader
keeps the per-image path.
"""

from __future__ import annotations

import torch
from torchvision.transforms.v2 import functional as F

from occreid.data.transforms import TransformConfig, random_erasing


class BatchTrainTransform:
    """uint8 images ``[B, 3, H, W]`` already at ``cfg.size`` → augmented, normalised float ``[B, 3, H, W]``."""

    def __init__(self, cfg: TransformConfig):
        if cfg.color_jitter is not None:
            raise ValueError("colour jitter is applied per image; use the per-image training transform")
        self.cfg = cfg
        self.size = tuple(cfg.size)
        self.erasing = random_erasing(cfg) if cfg.random_erasing_p > 0 else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        cfg, (H, W) = self.cfg, self.size
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[-2:]) != self.size:
            raise ValueError(f"expected uint8 images [B, 3, {H}, {W}], got {images.dtype} {tuple(images.shape)}")
        x = F.pad(images, [cfg.pad]) if cfg.pad > 0 else images
        x = F.normalize(F.to_dtype(x, torch.float32, scale=True), mean=cfg.mean, std=cfg.std)
        out = torch.empty((len(images), 3, H, W), dtype=torch.float32)
        for i in range(len(images)):
            xi = x[i]
            if cfg.flip_p > 0 and not torch.rand(1) >= cfg.flip_p:  # v2.RandomHorizontalFlip's test
                xi = xi.flip(-1)
            if cfg.pad > 0:  # v2.RandomCrop(size) of the padded image: top, then left
                top = int(torch.randint(0, 2 * cfg.pad + 1, size=()))
                left = int(torch.randint(0, 2 * cfg.pad + 1, size=()))
                xi = xi[:, top:top + H, left:left + W]
            out[i] = xi
            if self.erasing is not None:
                self.erasing(out[i])  # in place, as in the per-image pipeline
        return out


def batch_train_transform(cfg: TransformConfig) -> BatchTrainTransform | None:
    """The batched training transform for ``cfg``, or None when some op must run per image (colour jitter)."""
    return None if cfg.color_jitter is not None else BatchTrainTransform(cfg)
