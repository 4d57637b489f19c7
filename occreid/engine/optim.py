"""Optimisers: parameter groups with TransReID's bias rule, and the optimiser a method asks for.

A method describes its optimisers as :class:`OptimizerSpec` (named parameter groups, settings, whether the
lr schedule drives it); the engine builds them, schedules them and checkpoints them. Biases get lr ×
``bias_lr_factor`` and their own weight decay, as in TransReID/DPM/CLIP-ReID (``BIAS_LR_FACTOR``,
``WEIGHT_DECAY_BIAS``). Frozen parameters (``requires_grad`` False) are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from occreid.engine.config import OptimizerConfig
from occreid.errors import OccreidError


@dataclass
class OptimizerSpec:
    """One optimiser of a method. ``scheduled=False`` keeps its lr constant (DPM's mask-generator optimiser)."""

    name: str
    param_groups: list[dict]
    config: OptimizerConfig
    scheduled: bool = True


def param_groups(named_params: Iterable[tuple[str, nn.Parameter]], cfg: OptimizerConfig) -> list[dict]:
    """Two groups: weights (lr, weight_decay) and biases (lr × bias_lr_factor, weight_decay_bias)."""
    weights, biases = [], []
    for name, p in named_params:
        if p.requires_grad:
            (biases if name.endswith("bias") else weights).append(p)
    groups = [
        {"params": weights, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "group": "weight"},
        {"params": biases, "lr": cfg.lr * cfg.bias_lr_factor, "weight_decay": cfg.weight_decay_bias, "group": "bias"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The torch optimiser for ``spec`` (group lrs and weight decays come from the groups)."""
    cfg = spec.config
    if not any(g["params"] for g in spec.param_groups):
        raise OccreidError(f"optimizer '{spec.name}' has no trainable parameters")
    if cfg.name == "sgd":
        return torch.optim.SGD(spec.param_groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name == "adam":
        return torch.optim.Adam(spec.param_groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if cfg.name == "adamw":
        return torch.optim.AdamW(spec.param_groups, lr=cfg.lr, betas=tuple(cfg.betas))
    raise OccreidError(f"unknown optimizer '{cfg.name}'", fix="use sgd, adam or adamw")
