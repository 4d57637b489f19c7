"""The training engine shared by every method: config, optimisers, schedules, checkpoints, the loop."""

from occreid.engine.callbacks import Callback, CallbackList, PeriodicEval
from occreid.engine.checkpoint import load_model, save_model
from occreid.engine.config import OptimizerConfig, SchedulerConfig, TrainConfig
from occreid.engine.context import TrainContext
from occreid.engine.loop import fit
from occreid.engine.optim import OptimizerSpec, build_optimizer, param_groups
from occreid.engine.schedulers import EpochLR, lr_curve
from occreid.engine.seeding import derive_seed, seed_everything

__all__ = [
    "Callback", "CallbackList", "PeriodicEval", "load_model", "save_model", "OptimizerConfig",
    "SchedulerConfig", "TrainConfig", "TrainContext", "fit", "OptimizerSpec", "build_optimizer",
    "param_groups", "EpochLR", "lr_curve", "derive_seed", "seed_everything",
]
