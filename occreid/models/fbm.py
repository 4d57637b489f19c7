"""DPEFormer's feature blending module (FBM, Zhang et al. 2024, Sec. III-B): the global feature blended into one
local part feature by cross-attention over sub-parts of the two vectors.

Paper (Eqs. 7-11), ``style: paper``: three 1×1 convolutions (linear maps of the whole D-vector) give the query
f'_part from the part feature and the key f'_g and value f''_g from the global feature; each vector is cut into
D/16 sub-parts of 16 channels (FPR: 768 → 48 × 16), a learnable position embedding is added, layer-normalised,
and a multi-head attention takes its queries from the part's sub-parts and its keys/values from the global's
(√d_k = 4, i.e. one 16-channel head). The output (W^O, reshaped back to D) is added to the part feature and
normalised, then a feed-forward layer is added on top: f_fbm = LN(f_part + f_mhsa) + FFN(LN(f_part + f_mhsa)).

Released code, ``style: code`` (``fbm_qkv``): the vectors are cut into sub-parts first; the position embedding
(zeros, shared by both) is added; a pre-norm block follows — LN, a bias-free 16→16 query map on the part and
16→32 key/value map on the global, 2 heads of 8 channels, output projection, residual, then LN → MLP(16→16→16)
→ residual, all per sub-part. ``heads`` and ``mlp_ratio`` are free in both styles (paper: 1 head; the FFN's
width is not given, we take the code's ratio 1). The FFN is timm's ``Mlp``; attention is
``F.scaled_dot_product_attention`` (scale 1/√(channels per head)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from occreid.errors import OccreidError


@dataclass
class FBMConfig:
    """Shape of each FBM (``methods.dpeformer.blending``); paper values are the defaults."""

    style: Literal["paper", "code"] = "paper"
    subpart_dim: int = 16  # channels per sub-part (768 → 48 × 16)
    heads: int = 1  # paper: √d_k = 4 = √16, one head per 16-channel sub-part; released code: 2
    mlp_ratio: float = 1.0  # FFN hidden width / input width (paper: not given; code: 1)
    mix_batch: bool = False  # the released code's head merge, which mixes images of a batch (parity only)

    def __post_init__(self) -> None:
        if self.style not in ("paper", "code"):
            raise OccreidError(f"blending.style must be 'paper' or 'code', got {self.style!r}")
        if self.subpart_dim < 1 or self.heads < 1 or self.subpart_dim % self.heads:
            raise OccreidError(f"blending.subpart_dim ({self.subpart_dim}) must be a positive multiple of "
                               f"blending.heads ({self.heads})")
        if self.mlp_ratio <= 0:
            raise OccreidError(f"blending.mlp_ratio must be > 0, got {self.mlp_ratio}")

    def check_dim(self, dim: int) -> None:
        if dim % self.subpart_dim:
            raise OccreidError(f"the feature width {dim} is not a multiple of blending.subpart_dim {self.subpart_dim}",
                               fix="choose a subpart_dim dividing the backbone's width (16 for 768 and for 96)")


def cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                    mix_batch: bool = False) -> torch.Tensor:
    """Multi-head attention of ``q`` [B, S, C] over ``k``, ``v`` [B, S, C] (heads split the channels,
    concatenated back): [B, S, C].

    ``mix_batch`` reproduces the released code's head merge: its attention output has a leading singleton axis
    ([1, B, heads, S, c]) and ``transpose(1, 2)`` then swaps the batch and head axes instead of heads and
    sub-parts, so the reshape to [B, S, C] fills image b's output with pieces of other images' (and heads')
    results. Only for forward parity with that code: it makes an image's feature depend on its batch."""
    B, S, C = q.shape
    split = lambda t: t.reshape(B, t.shape[1], heads, C // heads).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))  # [B, heads, S, c]
    if mix_batch:
        return out.transpose(0, 1).reshape(B, S, C)
    return out.transpose(1, 2).reshape(B, S, C)


class PaperFBM(nn.Module):
    """FBM as the paper writes it (Eqs. 10-11): ``forward(part [B, D], global [B, D]) -> [B, D]``."""

    def __init__(self, dim: int, cfg: FBMConfig):
        super().__init__()
        cfg.check_dim(dim)
        self.heads, self.subpart_dim, self.mix_batch = cfg.heads, cfg.subpart_dim, cfg.mix_batch
        self.proj_q = nn.Linear(dim, dim)  # f'_part
        self.proj_k = nn.Linear(dim, dim)  # f'_g
        self.proj_v = nn.Linear(dim, dim)  # f''_g
        self.pos_embed = nn.Parameter(torch.zeros(1, dim // cfg.subpart_dim, cfg.subpart_dim))
        self.norm_q = nn.LayerNorm(cfg.subpart_dim)
        self.norm_kv = nn.LayerNorm(cfg.subpart_dim)
        self.out = nn.Linear(cfg.subpart_dim, cfg.subpart_dim)  # W^O
        self.norm = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, hidden_features=max(1, int(dim * cfg.mlp_ratio)))

    def _subparts(self, x: torch.Tensor) -> torch.Tensor:  # FPR: [B, D] -> [B, D/d, d], + PE
        return x.reshape(x.shape[0], -1, self.subpart_dim) + self.pos_embed

    def forward(self, part: torch.Tensor, global_feat: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(self._subparts(self.proj_q(part)))
        k = self.norm_kv(self._subparts(self.proj_k(global_feat)))
        v = self.norm_kv(self._subparts(self.proj_v(global_feat)))
        blended = self.out(cross_attention(q, k, v, self.heads, self.mix_batch)).reshape(part.shape)  # RE
        y = self.norm(part + blended)
        return y + self.ffn(y)


class CodeFBM(nn.Module):
    """FBM as the released code computes it (``fbm_qkv``, a pre-norm block on sub-parts)."""

    def __init__(self, dim: int, cfg: FBMConfig):
        super().__init__()
        cfg.check_dim(dim)
        d = cfg.subpart_dim
        self.heads, self.subpart_dim, self.mix_batch = cfg.heads, d, cfg.mix_batch
        self.pos_embed = nn.Parameter(torch.zeros(1, dim // d, d))
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d)
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)  # keys: the first d outputs, values: the last d
        self.proj = nn.Linear(d, d)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn = Mlp(d, hidden_features=max(1, int(d * cfg.mlp_ratio)))

    def forward(self, part: torch.Tensor, global_feat: torch.Tensor) -> torch.Tensor:
        x = part.reshape(part.shape[0], -1, self.subpart_dim) + self.pos_embed
        g = global_feat.reshape(global_feat.shape[0], -1, self.subpart_dim) + self.pos_embed
        k, v = self.kv(self.norm_kv(g)).chunk(2, dim=-1)
        x = x + self.proj(cross_attention(self.q(self.norm_q(x)), k, v, self.heads, self.mix_batch))
        x = x + self.ffn(self.norm_ffn(x))
        return x.reshape(part.shape)


FBM_STYLES: dict[str, type[nn.Module]] = {"paper": PaperFBM, "code": CodeFBM}


def build_fbm(dim: int, cfg: FBMConfig) -> nn.Module:
    return FBM_STYLES[cfg.style](dim, cfg)
