"""DPM++'s mask-guided optimisation: metric losses computed the way retrieval will look, through the mask.

At test time a DPM-style model ranks the gallery through the *query's* mask, so the training metric should
too; otherwise the triplet shapes a holistic distance that retrieval never uses. Two losses:

- :func:`masked_batch_hard_triplet`: batch-hard triplet where the distance from anchor a to sample j is
  the masked Euclidean distance of retrieval (:mod:`occreid.eval.distance`, ``masked_euclidean``) under
  the anchor's mask m_a,

      d(a, j) = ||m_a ⊙ (f_a − f_j)|| / rms(m_a),

  i.e. channel weights m_a² / mean(m_a²). A constant mask (all ones, or DPM's initial 0.5) gives exactly
  the plain Euclidean distance, so this loss then *equals* :func:`occreid.losses.batch_hard_triplet` —
  masking only changes which channels count, never the scale.
- :func:`masked_consistency`: each synthetic occluded view (from patch transfer) is tied to its holistic
  source inside the view's own mask m (the channels it can still see):

      L = mean over pairs of 1 − cos(m ⊙ f_view, m ⊙ f_src).

  The mask is the view's because only its visible sub-space should agree; channels the occluder destroyed
  are left free. :func:`pair_indices` finds the pairs from the batch fields of the pairing sampler.

Under data-parallel training with the global batch scope both run over the whole batch of all processes
(the triplet on the gathered batch, the consistency as a mean over every process's pairs).

Masks arrive detached by default (the caller decides): a metric loss that could move the mask would
shrink it to the few channels where the pair already agrees (1 − cos → 0 with a one-hot mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from occreid.engine.distributed import batch_mean, gather_batch
from occreid.errors import OccreidError
from occreid.losses.triplet import euclidean_distances, hardest_pairs

_EPS = 1e-12


def masked_distances(feat: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """[B, B] distances d(a, j) = sqrt(Σ_c w_ac (f_ac − f_jc)²), w_a = m_a² / mean(m_a²); None = Euclidean.

    Three matrix products (Σ w f_a² − 2 (w ⊙ f_a)·f_j + w·f_j²), clamped at 1e-12 before the square root
    like :func:`~occreid.losses.triplet.euclidean_distances`, so a zero distance has a finite gradient.
    """
    feat = feat.float()
    if mask is None:
        return euclidean_distances(feat, feat)
    m2 = mask.float().pow(2)
    w = m2 / m2.mean(dim=1, keepdim=True).clamp_min(_EPS)
    sq = feat.pow(2)
    d2 = (w * sq).sum(1, keepdim=True) - 2.0 * (w * feat) @ feat.t() + w @ sq.t()
    return d2.clamp(min=1e-12).sqrt()


def masked_batch_hard_triplet(
    feat: torch.Tensor, pids: torch.Tensor, mask: torch.Tensor | None, margin: float | None = None
) -> torch.Tensor:
    """Batch-hard triplet over :func:`masked_distances` (each row: its anchor's mask); ``margin`` None = soft."""
    feat, pids, mask = gather_batch(feat, pids, mask)  # the whole batch under data-parallel training
    d_ap, d_an = hardest_pairs(masked_distances(feat, mask), pids)
    if margin is None:
        return F.soft_margin_loss(d_an - d_ap, torch.ones_like(d_an))
    return F.margin_ranking_loss(d_an, d_ap, torch.ones_like(d_an), margin=margin)


def pair_indices(pair_id: torch.Tensor, is_transferred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(source rows, view rows) of the occluded pairs in a batch.

    A view is an item with ``is_transferred`` and ``pair_id >= 0``; its source is the other item with the
    same ``pair_id``, which must be holistic (the pairing sampler's contract: two items per pair). Views of
    pairs whose second view is holistic (transfer not drawn) are not pairs here.
    """
    pair_id = pair_id.long()
    views = torch.nonzero(is_transferred.bool() & (pair_id >= 0)).flatten()
    if len(views) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=pair_id.device)
        return empty, empty
    same = (pair_id[views, None] == pair_id[None, :]) & ~is_transferred.bool()[None, :]
    if not bool((same.sum(dim=1) == 1).all()):
        raise OccreidError("every occluded view needs exactly one holistic source with its pair_id in the batch",
                           fix="train with the occlusion pairing sampler (method switch pairing: true)")
    return same.float().argmax(dim=1), views


def masked_consistency(
    view_feat: torch.Tensor, source_feat: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """mean over pairs of 1 − cos(m ⊙ f_view, m ⊙ f_src) (``mask`` [n, D] of the views; None = unmasked);
    zero, keeping the graph and the log key, when the batch has no pair."""
    a, b = view_feat.float(), source_feat.float()
    if mask is not None:
        a, b = a * mask.float(), b * mask.float()
    return batch_mean(1.0 - F.cosine_similarity(a, b, dim=1, eps=_EPS))
