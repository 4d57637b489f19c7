"""Where each patch of a ViT grid sits in the image: the bridge between patch-grid masks and pixels.

Saliency lives on the backbone's patch grid (h × w), but patch transfer and the overlay sheets work in
pixels, so every map must be upsampled by the same rule the rest of the pipeline uses. The rule
(:meth:`PatchGeometry.cell_index`): a convolution with kernel ``patch`` and step ``stride`` puts patch
``r`` over pixels ``r·stride … r·stride + patch − 1``; with overlap (stride < patch) a pixel lies under
several patches, so each patch *owns* the central ``stride`` pixels of its window (offset
``(patch − stride) / 2``), and the pixels before the first / after the last window go to the edge patches.
Pixel row ``y`` thus belongs to patch row ``clip(floor((y + 0.5 − offset) / stride), 0, h − 1)``. Without
overlap this is plain ``y // patch``. The same ownership pools pixel maps onto the grid
(:meth:`PatchGeometry.pool`), so pooling and upsampling are consistent.

:func:`patch_tokens_hook` edits the patch embeddings of a backbone in place of a forward pass argument:
SPT's salient-only views and the token-space patch transfer multiply or mix the tokens right after the
patch embedding (before the CLS token and the position embedding), for the timm ViT and the open_clip
backbones alike.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from occreid.errors import OccreidError


def _pair(v: Sequence[float] | float) -> tuple[float, float]:
    if isinstance(v, (int, float)):
        return float(v), float(v)
    a, b = v
    return float(a), float(b)


@dataclass(frozen=True)
class PatchGeometry:
    """An image size, its patch grid and the patch window (size, step) in pixels, per axis (rows, cols)."""

    img_size: tuple[int, int]  # (H, W) pixels
    grid: tuple[int, int]  # (h, w) patches
    patch: tuple[float, float]  # window size in pixels
    stride: tuple[float, float]  # window step in pixels

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", tuple(int(v) for v in self.img_size))
        object.__setattr__(self, "grid", tuple(int(v) for v in self.grid))
        object.__setattr__(self, "patch", _pair(self.patch))
        object.__setattr__(self, "stride", _pair(self.stride))
        for axis, (size, n, p, s) in enumerate(zip(self.img_size, self.grid, self.patch, self.stride)):
            name = ("rows", "cols")[axis]
            if n < 1 or size < 1:
                raise OccreidError(f"patch geometry: {name} need a grid >= 1 and an image >= 1 pixel, "
                                   f"got grid {self.grid}, image {self.img_size}")
            if s < 1 or p < s:
                raise OccreidError(f"patch geometry: {name} stride {s} must be >= 1 and <= the patch size {p}")
            if (n - 1) * s + p > size + 1e-6:
                raise OccreidError(f"patch geometry: {n} {name} of {p} px every {s} px do not fit in {size} px",
                                   fix="set saliency.grid to null (the model's grid) or to one that fits img_size")

    @classmethod
    def tiling(cls, img_size: Sequence[int], grid: Sequence[int]) -> "PatchGeometry":
        """Non-overlapping cells that tile the image exactly (cell size H/h × W/w, possibly fractional)."""
        (H, W), (h, w) = img_size, grid
        if h < 1 or w < 1 or h > H or w > W:
            raise OccreidError(f"grid {list(grid)} must be between [1, 1] and the image size {list(img_size)}")
        return cls((H, W), (h, w), (H / h, W / w), (H / h, W / w))

    @classmethod
    def of_backbone(cls, backbone: nn.Module) -> "PatchGeometry":
        """The geometry of an occreid backbone (timm ViT or open_clip), read from its patch convolution."""
        module, _ = _patch_module(backbone)
        conv = module.proj if hasattr(module, "proj") else module
        return cls(tuple(backbone.img_size), tuple(backbone.grid), tuple(conv.kernel_size), tuple(conv.stride))

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def cell_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows [H], cols [W]): the patch row owning each pixel row, the patch column owning each pixel column."""
        out = []
        for size, n, p, s in zip(self.img_size, self.grid, self.patch, self.stride):
            centre = np.arange(size, dtype=np.float64) + 0.5
            out.append(np.clip(np.floor((centre - (p - s) / 2.0) / s), 0, n - 1).astype(np.int64))
        return out[0], out[1]

    def upsample(self, maps: np.ndarray) -> np.ndarray:
        """Grid maps ``[..., h, w]`` → pixel maps ``[..., H, W]`` (each pixel takes its owning patch's value)."""
        maps = np.asarray(maps)
        if tuple(maps.shape[-2:]) != self.grid:
            raise ValueError(f"maps of shape {maps.shape} are not on the grid {self.grid}")
        rows, cols = self.cell_index()
        return maps[..., rows[:, None], cols[None, :]]

    def pool(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel map ``[H, W]`` → grid map ``[h, w]``: the mean over the pixels each patch owns."""
        pixels = np.asarray(pixels, dtype=np.float64)
        if pixels.shape != self.img_size:
            raise ValueError(f"pixel map of shape {pixels.shape} is not of the image size {self.img_size}")
        rows, cols = self.cell_index()
        h, w = self.grid
        cell = (rows[:, None] * w + cols[None, :]).ravel()
        sums = np.bincount(cell, weights=pixels.ravel(), minlength=h * w)
        counts = np.bincount(cell, minlength=h * w)
        return (sums / np.maximum(counts, 1)).reshape(h, w)

    def column_shift(self, roll: int) -> int:
        """Pixels an image moves when its patch mask is rolled by ``roll`` columns (roll × column stride)."""
        return int(math.floor(roll * self.stride[1] + 0.5))

    def to_array(self) -> np.ndarray:
        """``[H, W, h, w, patch_y, patch_x, stride_y, stride_x]`` as float64, for storage in .npz files."""
        return np.array([*self.img_size, *self.grid, *self.patch, *self.stride], dtype=np.float64)

    @classmethod
    def from_array(cls, a: np.ndarray) -> "PatchGeometry":
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (8,):
            raise ValueError(f"a stored patch geometry has 8 numbers, got shape {a.shape}")
        return cls((int(a[0]), int(a[1])), (int(a[2]), int(a[3])), (a[4], a[5]), (a[6], a[7]))


def _patch_module(backbone: nn.Module) -> tuple[nn.Module, str]:
    """The patch-embedding module of a backbone and its output layout (``"BND"`` or ``"BDHW"``)."""
    vit = getattr(backbone, "vit", None)
    if vit is not None and hasattr(vit, "patch_embed"):
        return vit.patch_embed, "BND"  # timm PatchEmbed (flatten=True): [B, N, D]
    visual = getattr(backbone, "visual", None)
    if visual is not None and hasattr(visual, "conv1"):
        return visual.conv1, "BDHW"  # open_clip conv1: [B, D, h, w]
    raise OccreidError(f"{type(backbone).__name__} is neither an occreid ViT nor a CLIP backbone: "
                       "cannot find its patch embedding")


@contextlib.contextmanager
def patch_tokens_hook(backbone: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, the backbone's patch embeddings ``[B, N, D]`` are replaced by ``fn(tokens)``.

    Applied after the patch convolution and before the CLS token, the position and camera embeddings,
    as SPT does for its salient-only view and its patch transfer. The hook is removed on exit.
    """
    module, layout = _patch_module(backbone)

    def hook(_module: nn.Module, _inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        if layout == "BND":
            return fn(out)
        b, d, h, w = out.shape
        tokens = fn(out.flatten(2).transpose(1, 2))  # [B, N, D]
        return tokens.transpose(1, 2).reshape(b, d, h, w)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
