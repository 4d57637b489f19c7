"""Identity (classification) loss: cross-entropy with optional label smoothing.

PyTorch's ``label_smoothing=ε`` targets (1−ε)·onehot + ε/C, the same as TransReID's and CLIP-ReID's
``CrossEntropyLabelSmooth`` (ε = 0.1 there); DPM uses none (ε = 0). Logits are upcast to float32 so the
loss is computed at full precision under mixed-precision training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def id_loss(logits: torch.Tensor, pids: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [B, C] against ``pids`` [B]."""
    return F.cross_entropy(logits.float(), pids, label_smoothing=label_smoothing)


class IDLoss(torch.nn.Module):
    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        return id_loss(logits, pids, self.label_smoothing)
