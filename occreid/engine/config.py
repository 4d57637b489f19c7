"""Training configuration: the dataclasses that are also the params schema of the ``train`` section.

Defaults are the TransReID/DPM recipe (SGD 0.008, bias lr ×2, cosine with 5 warm-up epochs from 0.01×,
floor 0.002×, P×K = 16×4, 256×128 crops); presets and params.yaml override them. ``__post_init__`` checks
values so a bad params file fails at load time with the key named, not hours into a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from occreid.data.loader import LoaderConfig
from occreid.data.transforms import TransformConfig
from occreid.errors import OccreidError


@dataclass
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.008
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    bias_lr_factor: float = 2.0  # biases train at lr × this factor (TransReID BIAS_LR_FACTOR)
    weight_decay_bias: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW only

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.bias_lr_factor <= 0:
            raise OccreidError(f"optimizer.lr and bias_lr_factor must be > 0, got {self.lr}, {self.bias_lr_factor}")
        if self.weight_decay < 0 or self.weight_decay_bias < 0:
            raise OccreidError("optimizer.weight_decay and weight_decay_bias must be >= 0")
        if len(self.betas) != 2:
            raise OccreidError(f"optimizer.betas needs 2 values, got {self.betas}")


@dataclass
class SchedulerConfig:
    """Per-epoch learning-rate schedule; the lr of epoch e (1-based) is the schedule's value at t = e.

    ``cosine``: timm CosineLRScheduler over ``epochs``, linear warm-up from ``warmup_factor``×lr over
    ``warmup_epochs``, floor ``min_lr_factor``×lr (TransReID, DPM). ``multistep``: linear warm-up from
    ``warmup_factor``×lr, times ``gamma`` at each milestone (CLIP-ReID: warm-up 10 from 0.1, [30, 50], 0.1).
    """

    name: Literal["cosine", "multistep"] = "cosine"
    warmup_epochs: int = 5
    warmup_factor: float = 0.01
    min_lr_factor: float = 0.002
    milestones: list[int] = field(default_factory=lambda: [30, 50])
    gamma: float = 0.1

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0 or not 0 < self.warmup_factor <= 1:
            raise OccreidError("scheduler.warmup_epochs must be >= 0 and warmup_factor in (0, 1]")
        if not 0 <= self.min_lr_factor <= 1:
            raise OccreidError(f"scheduler.min_lr_factor must be in [0, 1], got {self.min_lr_factor}")
        if list(self.milestones) != sorted(self.milestones):
            raise OccreidError(f"scheduler.milestones must be increasing, got {self.milestones}")


@dataclass
class DistributedConfig:
    """Data-parallel training over ``gpus`` × ``nodes`` processes started by torchrun (occreid/engine/distributed.py).

    ``gpus``: processes per node, one per GPU (on a CPU machine: gloo processes). ``nodes``: machines (SLURM
    ``srun`` starts one torchrun per node). The P×K batch is the global batch: each process trains on a
    1/(gpus·nodes) share of every batch of the same plan as one process. ``batch_scope``: ``global`` — batch
    norm and the batch-level losses (batch-hard triplet, DPM's summed head-enrich loss, DPM++'s pair terms)
    see the whole batch through autograd-aware all-gathers, so N processes train like one process with the
    whole batch (up to float rounding); ``rank`` — each process's batch norm and batch losses see only its
    share, as TransReID, DPM and CLIP-ReID do under DDP. ``backend``: ``auto`` = nccl on CUDA, else gloo.
    """

    gpus: int = 1
    nodes: int = 1
    batch_scope: Literal["global", "rank"] = "global"
    backend: Literal["auto", "nccl", "gloo"] = "auto"

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.nodes < 1:
            raise OccreidError(f"train.distributed.gpus and nodes must be >= 1, got {self.gpus}, {self.nodes}")

    @property
    def world_size(self) -> int:
        return self.gpus * self.nodes


@dataclass
class TrainConfig:
    """Everything :func:`occreid.engine.fit` needs besides the method and the data."""

    epochs: int = 120
    ids_per_batch: int = 16  # P
    images_per_id: int = 4  # K
    num_workers: int = 0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    amp: Literal["auto", "off", "fp16", "bf16"] = "auto"  # auto: fp16 + GradScaler on CUDA, off on CPU
    device: str = "auto"  # auto: cuda when available, else cpu
    checkpoint_period: int = 1  # epochs between resumable checkpoints (the last epoch always saves)
    keep_checkpoints: int = 1  # newest checkpoints kept on disk
    eval_period: int = 0  # epochs between evaluations by an evaluation callback; 0 = none during training
    seed: int = 1234
    log_period: int = 50  # iterations between log lines
    deterministic: bool = True  # deterministic kernels (cuDNN); CPU runs are bit-reproducible either way
    transforms: TransformConfig = field(default_factory=TransformConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)  # torchrun processes (one: off)
    loader: LoaderConfig = field(default_factory=LoaderConfig)  # image cache, worker options (no effect on results)

    def __post_init__(self) -> None:
        for name in ("epochs", "ids_per_batch", "images_per_id", "checkpoint_period", "keep_checkpoints", "log_period"):
            if getattr(self, name) < 1:
                raise OccreidError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0 or self.eval_period < 0:
            raise OccreidError("train.num_workers and train.eval_period must be >= 0")

    @property
    def batch_size(self) -> int:
        return self.ids_per_batch * self.images_per_id
