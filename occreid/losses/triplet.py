"""Batch-hard triplet loss (Hermans et al. 2017) with a hard margin or the soft-margin variant.

For every anchor, the farthest positive and the nearest negative in the batch (which the P×K sampler
guarantees to exist) form the triplet. With a margin m (CLIP-ReID, TransReID: 0.3) the loss is
mean(max(0, d_ap − d_an + m)); with ``margin=None`` it is the soft margin mean(log(1 + exp(d_ap − d_an)))
(DPM: ``NO_MARGIN``, i.e. PyTorch's SoftMarginLoss). Distances are Euclidean on the raw features
(``normalize=False``, as in all three papers) computed as sqrt(max(|x|² + |y|² − 2x·y, 1e-12)), the
TransReID form, so a zero distance has a finite, zero gradient. In data-parallel training with the
global batch scope the mining runs over the whole batch of all processes (``gather_batch``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from occreid.engine.distributed import gather_batch


def euclidean_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances [n, m], clamped below at 1e-6 (sqrt of 1e-12)."""
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * x @ y.t()
    return d2.clamp(min=1e-12).sqrt()


def hardest_pairs(dist: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor: largest distance to a same-id sample (itself included), smallest to another id."""
    same = pids.unsqueeze(0) == pids.unsqueeze(1)
    d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    return d_ap, d_an


def batch_hard_triplet(
    feat: torch.Tensor, pids: torch.Tensor, margin: float | None = 0.3, normalize: bool = False
) -> torch.Tensor:
    """Mean batch-hard triplet loss; ``margin=None`` is the soft-margin variant. Needs ≥ 2 ids in the batch."""
    feat, pids = gather_batch(feat.float(), pids)  # the whole batch under data-parallel training
    if normalize:
        feat = F.normalize(feat, dim=1)
    d_ap, d_an = hardest_pairs(euclidean_distances(feat, feat), pids)
    if margin is None:
        return F.soft_margin_loss(d_an - d_ap, torch.ones_like(d_an))
    return F.margin_ranking_loss(d_an, d_ap, torch.ones_like(d_an), margin=margin)


class TripletLoss(torch.nn.Module):
    """Module form of :func:`batch_hard_triplet` (margin fixed at construction)."""

    def __init__(self, margin: float | None = 0.3, normalize: bool = False):
        super().__init__()
        self.margin = margin
        self.normalize = normalize

    def forward(self, feat: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        return batch_hard_triplet(feat, pids, self.margin, self.normalize)
