"""DPM's Hierarchical Mask Generator (HMG): one channel mask per image from the patch tokens of several blocks.

DPM selects, for each image, the sub-space of the class prototypes that its visible body can be matched in.
The selector is a small CNN over the patch grid, because a visible pattern is a spatially connected group of
patches; it reads the tokens of shallow *and* deep blocks ("hierarchy"), because deep tokens are smoothed
towards each other and alone give a poor mask.

Layout (as in the released DPM code, ViT-B: D = 768, taps after blocks 2, 4, 10, 12 ⇒ 4D input channels):

    concat taps [B, T·D, h, w] → conv3×3 T·D→2D + BN + ReLU → max-pool 2×2
                               → conv3×3 2D→D   + BN + ReLU → max-pool 2×2
                               → conv3×3 D→D    + BN + ReLU → global max pool → Linear D→D → sigmoid

The final Linear is zero-initialised (weight and bias), so every mask starts at exactly 0.5: training begins
from "all channels equally visible" instead of a random sub-space.

Two deliberate departures from the reference, neither changing its result on its grids:
- Pooling on small grids. The reference's 2×2 floor pooling fails once a side is 1 (ViT-B grids such as
  22×11 or 16×8 never get there, the small grids of CPU demos and tests do). :class:`SafeMaxPool2x2` pools
  2×2 with floor rounding exactly as the reference does, but uses a kernel of 1 along any side that is
  already 1 (that side is left as is). On every grid where the reference works the output is identical.
- Batch size 1. The reference squeezes the pooled map, which also drops the batch axis; we reduce the two
  spatial axes instead, so a single image gives a [1, D] mask.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import OccreidError


class SafeMaxPool2x2(nn.Module):
    """2×2 max-pool with stride 2 and floor rounding, skipping (kernel 1) any side already of length 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh = 2 if x.shape[-2] >= 2 else 1
        kw = 2 if x.shape[-1] >= 2 else 1
        if kh == 1 and kw == 1:
            return x
        return F.max_pool2d(x, kernel_size=(kh, kw), stride=(kh, kw))


def conv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """3×3 conv (padding 1, with bias as in the reference) + BatchNorm2d + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=True),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens [B, N, D] in row-major patch order → feature map [B, D, h, w]."""
    b, n, d = tokens.shape
    h, w = grid
    if h * w != n:
        raise OccreidError(f"patch grid {h}x{w} does not match {n} tokens", fix="pass BackboneOutput.grid")
    return tokens.transpose(1, 2).reshape(b, d, h, w)


class HierarchicalMaskGenerator(nn.Module):
    """Maps the tapped patch tokens of a backbone to one channel mask per image, values in (0, 1).

    ``dim`` is the token width D, ``num_taps`` how many blocks are tapped (4 for DPM; 1 when the
    ``hierarchy`` switch is off and only the last block feeds the generator). Parameter names
    (``body.{0,2,4}.{0,1}.*``, ``fc.*``) follow the reference's ``ConvLayer``/``attfc`` layout so that the
    checkpoint adapter is a rename.
    """

    def __init__(self, dim: int, num_taps: int):
        super().__init__()
        if dim < 1 or num_taps < 1:
            raise OccreidError(f"mask generator needs dim >= 1 and num_taps >= 1, got {dim}, {num_taps}")
        self.dim = dim
        self.num_taps = num_taps
        self.body = nn.Sequential(
            conv_bn_relu(num_taps * dim, 2 * dim),
            SafeMaxPool2x2(),
            conv_bn_relu(2 * dim, dim),
            SafeMaxPool2x2(),
            conv_bn_relu(dim, dim),
        )
        self.fc = nn.Linear(dim, dim)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, taps: Sequence[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """``taps``: ``num_taps`` tensors [B, N, D] (patch tokens, CLS removed) → mask [B, D]."""
        if len(taps) != self.num_taps:
            raise OccreidError(
                f"mask generator built for {self.num_taps} tapped blocks but got {len(taps)}",
                fix="make the backbone's taps match the method's mask taps",
            )
        x = torch.cat([tokens_to_map(t, grid) for t in taps], dim=1)
        x = self.body(x)
        x = torch.amax(x, dim=(-2, -1))  # global max pool; keeps the batch axis even for B = 1
        return torch.sigmoid(self.fc(x))
