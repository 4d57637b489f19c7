"""DPM's Head Enrich Module (HEM): an orthonormality penalty on the CLS attention of the last block's heads.

Without it, several heads of the last block let the CLS token look at the same patches, so the CLS feature
(and the prototypes learned from it) carries fewer distinct patterns for the mask to choose from. In the
released DPM code "HEM" is only this loss, no extra module: each head's CLS→patch attention vector is
L2-normalised over the patches, the per-image Gram matrix G (heads × heads) is compared with the identity,

    loss = Σ_images ||G − I||²_F / H²

Where we follow the code rather than the paper:
- the vectors are the *scaled pre-softmax logits* (the paper's Eq. 5 writes a softmax); ``softmax=True``
  gives the paper's version (softmax over the patches only);
- the images are *summed* (the paper's Eq. 6 is per image; the code sums the batch, so the effective weight
  grows with the batch size). ``reduction="mean"`` averages instead.

In data-parallel training with the global batch scope the sum (or mean) runs over the whole batch of all
processes (``batch_sum`` / ``batch_mean``), so the weight is the one-process one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..engine.distributed import batch_mean, batch_sum
from ..errors import OccreidError

REDUCTIONS = ("sum", "mean")


def head_gram(attn_logits: torch.Tensor, *, softmax: bool = False) -> torch.Tensor:
    """[B, H, N] CLS→patch attention (logits) → [B, H, H] Gram matrix of the per-head unit vectors."""
    if attn_logits.dim() != 3:
        raise OccreidError(f"head-enrich loss expects attention logits [B, heads, N], got {tuple(attn_logits.shape)}")
    a = attn_logits.float()
    if softmax:
        a = a.softmax(dim=-1)
    a = F.normalize(a, dim=-1)
    return a @ a.transpose(1, 2)


def head_enrich_loss(attn_logits: torch.Tensor, *, reduction: str = "sum", softmax: bool = False) -> torch.Tensor:
    """Σ (or mean) over the batch of ||G − I||²_F / H², G the heads' Gram matrix (see the module docstring)."""
    if reduction not in REDUCTIONS:
        raise OccreidError(f"unknown head-enrich reduction '{reduction}'", fix=f"use one of {', '.join(REDUCTIONS)}")
    g = head_gram(attn_logits, softmax=softmax)
    heads = g.shape[-1]
    eye = torch.eye(heads, dtype=g.dtype, device=g.device)
    per_image = (g - eye).pow(2).sum(dim=(1, 2)) / heads**2
    return batch_sum(per_image) if reduction == "sum" else batch_mean(per_image)
