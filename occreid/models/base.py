"""Types shared by every backbone and method.

A backbone returns a :class:`BackboneOutput` so that heads (BNNeck, DPM's mask generator, prompt losses)
can use the CLS feature, the patch tokens, intermediate block taps and the last block's CLS-to-patch
attention logits without knowing which library built the transformer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class BackboneOutput:
    cls: torch.Tensor  # [B, D] final CLS feature (after the final norm)
    tokens: torch.Tensor  # [B, N, D] final patch tokens (CLS removed)
    taps: list[torch.Tensor] = field(default_factory=list)  # [B, N, D] patch tokens after the tapped blocks
    attn_logits: torch.Tensor | None = None  # [B, heads, N] last block's scaled pre-softmax CLS→patch logits
    grid: tuple[int, int] = (0, 0)  # patch grid (rows, cols), rows * cols == N
    extra: dict = field(default_factory=dict)  # backbone-specific (e.g. CLIP's projected CLS)


@dataclass
class Embedding:
    """What a method gives evaluation for one batch: the retrieval feature and, for masked metrics, a mask."""

    feat: torch.Tensor  # [B, D]
    mask: torch.Tensor | None = None  # [B, D] channel mask in (0, 1), applied to gallery features per query
