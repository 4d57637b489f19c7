"""Supervised contrastive loss between two modalities (CLIP-ReID stage 1: image→text and text→image).

For every anchor, the contrasts sharing its identity are positives: the loss is minus the mean, over the
positives, of the log-softmax of the anchor's similarities to all contrasts. CLIP-ReID uses raw dot
products of *unnormalised* features with temperature 1.0; cosine similarity and another temperature are
options here for experiments. ``i2t + t2i`` is :func:`symmetric_supcon`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supcon_loss(
    anchors: torch.Tensor,
    contrasts: torch.Tensor,
    anchor_labels: torch.Tensor,
    contrast_labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    normalize: bool = False,
) -> torch.Tensor:
    """Mean over anchors of ``-mean_{p ∈ P(a)} log softmax_c(a·c / T)[p]`` (``P(a)``: same-label contrasts).

    Anchors without any positive contrast are left out (their term is undefined); if no anchor has one
    the inputs are wrong and a ``ValueError`` says so.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if normalize:
        anchors, contrasts = F.normalize(anchors, dim=-1), F.normalize(contrasts, dim=-1)
    logits = anchors @ contrasts.t() / temperature  # [A, C]
    log_prob = F.log_softmax(logits.float(), dim=1)
    pos = (anchor_labels[:, None] == contrast_labels[None, :]).float()
    n_pos = pos.sum(1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        raise ValueError("supervised contrastive loss: no anchor has a positive contrast")
    mean_log_prob_pos = (pos * log_prob).sum(1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob_pos.mean()


def symmetric_supcon(
    image_feats: torch.Tensor,
    text_feats: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    normalize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_i2t, L_t2i)`` for paired image and text features of one batch with shared labels."""
    i2t = supcon_loss(image_feats, text_feats, labels, labels, temperature=temperature, normalize=normalize)
    t2i = supcon_loss(text_feats, image_feats, labels, labels, temperature=temperature, normalize=normalize)
    return i2t, t2i
