"""Training-free saliency: where the image encoder's CLS token looks in its last block.

A pre-trained ViT's CLS query attends to the object it summarises (DINO, CLIP), so its attention over the
patches is a person prior without any training. We take the last block's scaled pre-softmax CLS→patch
logits that every occreid backbone exposes (:attr:`BackboneOutput.attn_logits`), apply the softmax over
the patches per head, average the heads (each head covers different parts; their mean covers the body),
and min-max scale per image to [0, 1] so a fixed threshold means the same on every image. With a random
backbone (the CPU demo's ``vit_tiny``) the maps are noise: use ``classical`` there.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from occreid.errors import OccreidError

log = logging.getLogger(__name__)


def unit_scale_rows(x: torch.Tensor) -> torch.Tensor:
    """Min-max scale each row of ``[B, N]`` to [0, 1]; a constant row becomes zeros."""
    lo = x.min(dim=1, keepdim=True).values
    hi = x.max(dim=1, keepdim=True).values
    span = hi - lo
    return torch.where(span > 1e-12, (x - lo) / span.clamp_min(1e-12), torch.zeros_like(x))


def attention_saliency(attn_logits: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, heads, N]`` CLS→patch logits → ``[B, h, w]`` saliency in [0, 1]."""
    if attn_logits.ndim != 3 or attn_logits.shape[-1] != grid[0] * grid[1]:
        raise ValueError(f"attention logits {tuple(attn_logits.shape)} do not match the grid {grid}")
    probs = attn_logits.float().softmax(dim=-1).mean(dim=1)  # [B, N]
    return unit_scale_rows(probs).reshape(-1, *grid)


@torch.no_grad()
def attention_maps(backbone: nn.Module, loader: DataLoader, device: torch.device) -> np.ndarray:
    """Saliency of every image of ``loader`` (in order), ``[N, h, w]`` float32; ``backbone`` must return attention."""
    backbone.eval().to(device)
    maps = []
    for batch in tqdm(loader, desc="attention saliency", leave=False, mininterval=1.0):
        out = backbone(batch["image"].to(device), None)
        if out.attn_logits is None:
            raise OccreidError("the backbone returns no attention logits",
                               fix="build it with return_attn=True (BackboneConfig.build(..., return_attn=True))")
        maps.append(attention_saliency(out.attn_logits, tuple(out.grid)).cpu().numpy())
    return np.concatenate(maps).astype(np.float32) if maps else np.zeros((0, 0, 0), np.float32)
