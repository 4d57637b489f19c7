"""What a method's ``train_step`` gets from the engine: device, optimisers, mixed precision, counters.

Methods never build optimisers, scalers or autocast contexts themselves; they call the helpers here, so
every method gets the same AMP policy and checkpointing (the engine owns all of these objects and saves
them). A two-step update (DPM) is two ``backward_and_step`` calls on two named optimisers; one GradScaler
is updated after each step, as in DPM's released code. Under torchrun, ``step`` first averages the
gradients of the optimiser's parameters over the processes (:mod:`occreid.engine.distributed`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch

from occreid.engine.distributed import Distributed


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None = full precision). CPU: only when asked."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16":
        return torch.bfloat16
    return torch.float16


@dataclass
class TrainContext:
    device: torch.device
    optimizers: dict[str, torch.optim.Optimizer]
    amp_dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None  # only for fp16 on CUDA
    epoch: int = 0  # 1-based, set by the engine
    iteration: int = 0  # within the epoch, 0-based
    global_step: int = 0
    extra: dict = field(default_factory=dict)  # free room for methods (e.g. cached text features)
    distributed: Distributed = field(default_factory=Distributed)  # the training processes (default: one)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed-precision region for forward passes and losses (a no-op when AMP is off)."""
        if self.amp_dtype is None:
            yield
        else:
            with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
                yield

    def optimizer(self, which: str | torch.optim.Optimizer) -> torch.optim.Optimizer:
        return self.optimizers[which] if isinstance(which, str) else which

    def zero_grad(self, *which: str | torch.optim.Optimizer) -> None:
        """Clear the gradients of the named optimisers (all when none are named)."""
        for opt in [self.optimizer(w) for w in which] or list(self.optimizers.values()):
            opt.zero_grad(set_to_none=True)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, which: str | torch.optim.Optimizer) -> None:
        """Step one optimiser (through the GradScaler when there is one, which is then updated), after
        averaging its parameters' gradients over the training processes."""
        opt = self.optimizer(which)
        self.distributed.average_gradients(opt)  # no-op in one process
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def backward_and_step(self, loss: torch.Tensor, which: str | torch.optim.Optimizer = "main") -> None:
        self.backward(loss)
        self.step(which)
