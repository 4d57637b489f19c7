"""DPM's prototype classifier: one matrix W shared by a plain softmax branch and a masked ArcFace branch.

The rows of W are read as holistic class prototypes. The plain branch trains them as an ordinary
classifier (logits feat·Wᵀ, no normalisation, no scale). The masked branch asks, for each image i, how well
its feature matches every prototype *inside the sub-space its mask selects*:

    cos_ic = ⟨n(f_i), n(m_i ⊙ n(W_c))⟩          n = L2 normalisation, m_i = image i's own mask

and trains that cosine with an additive angular margin (ArcFace), which the paper needs so the masked loss is
not too small to teach the mask generator anything (Table 4).

``renormalize=False`` drops the second normalisation, cos_ic = ⟨n(f_i), m_i ⊙ n(W_c)⟩ (the mask "after" the
L2 normalisation). Note that masking before or after the *first* normalisation is the same thing once the
result is re-normalised (n(m ⊙ n(w)) = n(m ⊙ w)), so the released code's form is the paper's "mask before the
normalisation" (its final model); Table 5's other variant can only differ by not re-normalising.
``mask_feature=True`` also masks the feature, n(m_i ⊙ n(f_i)) (without the outer n when not renormalising).

The cosine is computed without materialising the B×C×D masked prototypes: with w_c the normalised
prototype, ⟨f, m ⊙ w_c⟩ = (f ⊙ m)·w_c and ||m ⊙ w_c||² = (m²)·(w_c²), so both are matrix products.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-12  # same floor as F.normalize


def masked_cosine(
    feat: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    renormalize: bool = True,
    mask_feature: bool = False,
) -> torch.Tensor:
    """Cosine [B, C] between each feature [B, D] and every prototype [C, D] under the feature's own mask [B, D].

    ``mask=None`` is the unmasked cosine (plain ArcFace). See the module docstring for the switches.
    """
    f = F.normalize(feat, dim=1)
    w = F.normalize(weight, dim=1)
    if mask is None:
        return f @ w.t()
    if mask_feature:
        f = mask * f
        if renormalize:
            f = F.normalize(f, dim=1)
    dot = (f * mask) @ w.t()
    if not renormalize:
        return dot
    norm = ((mask * mask) @ (w * w).t()).clamp_min(_EPS * _EPS).sqrt()
    return dot / norm


def arcface_logits(cos: torch.Tensor, labels: torch.Tensor, *, scale: float, margin: float) -> torch.Tensor:
    """ArcFace logits: s·cos(θ_y + m) for the true class, s·cos θ for the others.

    Non-easy-margin variant (as in the reference): where θ_y + m would pass π (cos θ_y ≤ cos(π − m)), the
    monotone fallback cos θ_y − m·sin(π − m) is used instead of cos(θ_y + m).
    """
    cos = cos.float()
    sin = (1.0 - cos * cos).clamp_min(_EPS).sqrt()  # floor keeps the gradient finite at |cos| = 1
    phi = cos * math.cos(margin) - sin * math.sin(margin)
    phi = torch.where(cos > math.cos(math.pi - margin), phi, cos - math.sin(math.pi - margin) * margin)
    target = F.one_hot(labels, num_classes=cos.shape[1]).bool()
    return scale * torch.where(target, phi, cos)


class PrototypeClassifier(nn.Module):
    """The shared prototype matrix W [num_classes, dim] (xavier-uniform init, no bias)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)

    def plain_logits(self, feat: torch.Tensor) -> torch.Tensor:
        """feat·Wᵀ — no normalisation, no scale (the "softmax" branch)."""
        return feat @ self.weight.t()

    def cosine(self, feat: torch.Tensor, mask: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """See :func:`masked_cosine`."""
        return masked_cosine(feat, self.weight, mask, **kw)


def arcface_loss(cos: torch.Tensor, labels: torch.Tensor, *, scale: float, margin: float) -> torch.Tensor:
    """Cross-entropy over :func:`arcface_logits` (batch mean)."""
    return F.cross_entropy(arcface_logits(cos, labels, scale=scale, margin=margin), labels)
