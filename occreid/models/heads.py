"""BNNeck (Luo et al., "Bag of Tricks"; TransReID): batch norm between the metric and the ID loss.

The triplet loss works on the raw feature, the ID classifier on its batch-normalised version, so the two
losses do not pull one embedding space in different directions. As in TransReID: BN1d whose bias is
frozen at 0 (the BN then only scales, keeping the feature centred for the bias-free classifier), weight
1, and a bias-free linear classifier initialised N(0, 0.001).
"""

from __future__ import annotations

import torch
from torch import nn


class BNNeck(nn.Module):
    """``forward(feat) -> (bn_feat, logits)``; ``classifier`` is None when ``num_classes`` is 0."""

    def __init__(self, dim: int, num_classes: int, classifier_std: float = 0.001):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)
        self.classifier: nn.Linear | None = None
        if num_classes > 0:
            self.classifier = nn.Linear(dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=classifier_std)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        bn_feat = self.bn(feat)
        logits = self.classifier(bn_feat) if self.classifier is not None else None
        return bn_feat, logits
