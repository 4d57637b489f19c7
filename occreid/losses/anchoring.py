"""DPM++'s early semantic anchoring: class prototypes that start from, and are held near, CLIP text features.

DPM learns its shared prototype matrix W [C, D] from a random (xavier) start, so in the first epochs the
masked branch compares features with prototypes that mean nothing yet. DPM++ transfers "ID-level semantic
priors ... from the text branch into the classifier-prototype space": the per-identity text features of
CLIP-ReID's stage 1 (``stages.prompts``), which already sit next to the images of their identity in CLIP's
joint space. This module holds the three pieces:

- :func:`text_to_prototypes` maps the text features [C, P] (joint space) into the prototype space [C, D]
  (the visual CLS space the BNNeck and the mask act in) through CLIP's visual projection ``proj`` [D, P]
  (``cls @ proj`` is the image's joint-space feature). ``pinv``: w_c = t_c · pinv(proj), the minimum-norm
  visual feature whose projection is t_c (so w_c · proj = t_c exactly when proj has full column rank, as
  CLIP's 768×512 and the tiny 64×32 do). ``transpose``: w_c = t_c · projᵀ, for which the plain logit
  ⟨f, w_c⟩ equals CLIP-ReID's image-to-text logit ⟨f·proj, t_c⟩. Rows are then rescaled to the expected
  row norm of the xavier init the prototypes would otherwise get, so the unnormalised softmax branch of
  DPM starts at its usual logit scale (the cosine branch ignores norms).
- :func:`anchor_weight` is the schedule of the soft hold: λ(e) decays from ``weight`` at epoch 1 to 0 at
  epoch ``anchor_epochs + 1`` (linearly or by a half cosine) and stays 0 — the prototypes then learn freely.
- :func:`anchor_loss` is the hold itself, mean_c ||n(w_c) − n(t_c)||² (n = L2 normalisation): directions
  only, because W's norm is free in the cosine branch and set by the softmax branch.

The hard hold (``anchor_mode: freeze``: W receives no update during the first ``anchor_epochs`` epochs)
needs no loss; :func:`in_anchor_period` says when it applies.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from occreid.errors import OccreidError

TextMap = Literal["pinv", "transpose"]
Schedule = Literal["linear", "cosine"]


def xavier_row_norm(num_classes: int, dim: int) -> float:
    """Expected row norm of a xavier-initialised [num_classes, dim] matrix: sqrt(dim · 2 / (num_classes + dim))."""
    return math.sqrt(2.0 * dim / (num_classes + dim))


def text_to_prototypes(
    text: torch.Tensor, proj: torch.Tensor, how: TextMap = "pinv", *, row_norm: float | None = None
) -> torch.Tensor:
    """Text features [C, P] → prototypes [C, D] through the visual projection ``proj`` [D, P] (module docstring).

    ``row_norm`` None keeps the mapped norms; a number rescales every row to it. Computed in float64 (the
    pseudo-inverse of a 768×512 matrix), returned as float32.
    """
    if text.dim() != 2 or proj.dim() != 2 or text.shape[1] != proj.shape[1]:
        raise OccreidError(f"text features {tuple(text.shape)} do not fit the visual projection {tuple(proj.shape)}",
                           fix="use text features of the same CLIP model (prompts stage with the method's backbone)")
    t, p = text.detach().double(), proj.detach().double().cpu()
    if how == "pinv":
        protos = t @ torch.linalg.pinv(p)
    elif how == "transpose":
        protos = t @ p.t()
    else:
        raise OccreidError(f"unknown text map '{how}'", fix="use 'pinv' or 'transpose'")
    if row_norm is not None:
        protos = F.normalize(protos, dim=1) * row_norm
    return protos.float()


def in_anchor_period(epoch: int, anchor_epochs: int) -> bool:
    """True during the first ``anchor_epochs`` epochs (``epoch`` is 1-based, as the engine's)."""
    return 1 <= epoch <= anchor_epochs


def anchor_weight(epoch: int, anchor_epochs: int, weight: float, schedule: Schedule = "linear") -> float:
    """λ of epoch ``epoch`` (1-based): ``weight`` at epoch 1, decaying to 0 at ``anchor_epochs + 1``, then 0.

    With t = (epoch − 1) / anchor_epochs: linear λ = weight·(1 − t), cosine λ = weight·(1 + cos πt) / 2.
    E.g. anchor_epochs 4, weight 1: linear 1, .75, .5, .25, 0; cosine 1, .854, .5, .146, 0.
    """
    if schedule not in ("linear", "cosine"):
        raise OccreidError(f"unknown anchoring schedule '{schedule}'", fix="use 'linear' or 'cosine'")
    if not in_anchor_period(epoch, anchor_epochs):
        return 0.0
    t = (epoch - 1) / anchor_epochs
    return weight * (1.0 - t) if schedule == "linear" else weight * 0.5 * (1.0 + math.cos(math.pi * t))


def anchor_loss(prototypes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean over classes of ||n(w_c) − n(t_c)||² (= 2 − 2·cos); ``targets`` get no gradient."""
    w = F.normalize(prototypes.float(), dim=1)
    t = F.normalize(targets.detach().float(), dim=1)
    return (w - t).pow(2).sum(dim=1).mean()
