"""Per-epoch learning-rate schedules, from timm and torch (nothing hand-written).

Convention of TransReID, DPM and CLIP-ReID: the schedule is stepped at the *start* of each epoch with the
1-based epoch number, so epoch e trains at the schedule's value at t = e (the first epoch is already one
warm-up step in). :class:`EpochLR` gives both kinds one interface, ``step(epoch)``, and a checkpointable
state.

- ``cosine``: ``timm.scheduler.CosineLRScheduler(t_initial=epochs, lr_min=min_lr_factor·lr,
  warmup_t=warmup_epochs, warmup_lr_init=warmup_factor·lr)``; warm-up start and floor are absolute, the same
  for every group (TransReID's ``create_scheduler``). At t = epochs the lr reaches the floor.
- ``multistep``: torch ``ChainedScheduler(LinearLR(warmup_factor → 1 over warmup_epochs), MultiStepLR)``:
  lr(t) = lr · warm(t) · gamma^(#milestones ≤ t), per group (CLIP-ReID's ``WarmupMultiStepLR``).
"""

from __future__ import annotations

import warnings

import torch
from timm.scheduler import CosineLRScheduler
from torch.optim.lr_scheduler import ChainedScheduler, LinearLR, MultiStepLR

from occreid.engine.config import SchedulerConfig


class EpochLR:
    """Sets an optimiser's learning rates for epoch e (1-based) with ``step(e)``; epochs only move forward."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int, base_lr: float):
        self.optimizer = optimizer
        self.kind = cfg.name
        self.t = 0
        if cfg.name == "cosine":
            self.scheduler = CosineLRScheduler(
                optimizer,
                t_initial=epochs,
                lr_min=cfg.min_lr_factor * base_lr,
                warmup_t=cfg.warmup_epochs,
                warmup_lr_init=cfg.warmup_factor * base_lr,
                t_in_epochs=True,
            )
        elif cfg.name == "multistep":
            parts: list = []
            if cfg.warmup_epochs > 0:
                parts.append(LinearLR(
                    optimizer, start_factor=cfg.warmup_factor, end_factor=1.0, total_iters=cfg.warmup_epochs
                ))
            parts.append(MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma))
            self.scheduler = ChainedScheduler(parts, optimizer=optimizer)
        else:
            raise ValueError(f"unknown scheduler {cfg.name!r}")

    def step(self, epoch: int) -> None:
        if epoch < self.t:
            raise ValueError(f"learning-rate schedule is at epoch {self.t}, cannot go back to {epoch}")
        if self.kind == "cosine":
            self.scheduler.step(epoch)
        else:
            with warnings.catch_warnings():  # stepping before the first optimizer.step() is the convention here
                warnings.filterwarnings("ignore", message="Detected call of")
                while self.t < epoch:
                    self.scheduler.step()
                    self.t += 1
        self.t = epoch

    def lrs(self) -> list[float]:
        """Current learning rate of each parameter group."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"t": self.t, "kind": self.kind, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["kind"] != self.kind:
            raise ValueError(f"scheduler state is for {state['kind']!r}, not {self.kind!r}")
        self.t = int(state["t"])
        self.scheduler.load_state_dict(state["scheduler"])


def lr_curve(
    cfg: SchedulerConfig, epochs: int, base_lr: float, group_lr_factors: tuple[float, ...] = (1.0,)
) -> list[list[float]]:
    """The lr of every group for epochs 1..epochs (a throwaway optimiser; for reports, plots and tests)."""
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": base_lr * f} for f in group_lr_factors]
    opt = torch.optim.SGD(params, lr=base_lr)
    sched = EpochLR(opt, cfg, epochs, base_lr)
    out = []
    for e in range(1, epochs + 1):
        sched.step(e)
        out.append(sched.lrs())
    return out
