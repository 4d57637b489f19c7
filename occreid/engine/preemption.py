"""Stopping on request: SIGTERM / SIGUSR1 → a checkpoint at the next iteration boundary → exit status 75.

A cluster scheduler warns a job before it takes the machine away: SLURM sends SIGTERM before a preemption or
at the time limit (then SIGKILL after its grace time), and any signal asked for with ``--signal`` some
seconds before the limit. :class:`StopRequest` turns those signals into a flag; :func:`occreid.engine.fit`
polls it after every iteration (all ranks together, so they stop at the same iteration), writes a
*mid-epoch* checkpoint and raises :class:`Preempted`; the train stage then exits with
:data:`EXIT_PREEMPTED`, a failure Snakemake retries (``retries`` in the SLURM profile). The re-run resumes
from that checkpoint and reaches the same weights and metrics as an uninterrupted run: the checkpoint holds
the position in the epoch and the epoch's running sums (:class:`EpochProgress`) besides the model,
optimisers, schedules, scaler and every rank's RNG states, and :func:`resume_batches` replays the rest of
the epoch's plan exactly. A kill without warning (SIGKILL, node failure) resumes from the last periodic
checkpoint instead, to the same result.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

log = logging.getLogger(__name__)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): "temporary failure, try again" — the run resumes when re-run
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class StopRequest:
    """A flag raised by a stop signal (or by :meth:`request`); ``bool(stop)`` tells whether it is raised."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        if self.reason is None:  # the first reason wins (torchrun forwards the signal a second time)
            self.reason = reason

    @contextlib.contextmanager
    def installed(self, signals: Iterable[str] = STOP_SIGNALS) -> Iterator["StopRequest"]:
        """Within the block the given signals raise the flag instead of killing the process; the previous
        handlers come back afterwards. Outside the main thread (where Python allows no handlers) a no-op."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {}

        def handler(signum, _frame) -> None:
            self.request(signal.Signals(signum).name)

        for name in signals:
            sig = getattr(signal, name)
            previous[sig] = signal.signal(sig, handler)
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


class EpochInterrupted(Exception):
    """Raised by the epoch loop when the ranks agreed to stop; carries where the epoch got to."""

    def __init__(self, progress: "EpochProgress"):
        super().__init__(f"stopped in epoch {progress.epoch} after iteration {progress.iteration}")
        self.progress = progress


class Preempted(Exception):
    """Training stopped on request after writing a resumable checkpoint (``path``; None on ranks > 0)."""

    def __init__(self, reason: str, epoch: int, iteration: int, path: Path | None):
        super().__init__(f"training stopped by {reason} in epoch {epoch} after iteration {iteration}"
                         + (f"; checkpoint {path}" if path else ""))
        self.reason, self.epoch, self.iteration, self.path = reason, epoch, iteration, path


@dataclass
class EpochProgress:
    """How far an epoch got: batches done and the running sums of its logged scalars (in the order they were
    first logged, which is the history's column order), images seen and seconds spent."""

    epoch: int
    iteration: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0

    def add(self, stats: dict[str, float], images: int) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.iteration += 1
        self.images += images

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "iteration": self.iteration, "sums": dict(self.sums), "images": self.images,
                "seconds": self.seconds}

    @classmethod
    def from_state(cls, state: dict) -> "EpochProgress":
        return cls(int(state["epoch"]), int(state["iteration"]), {str(k): float(v) for k, v in state["sums"].items()},
                   int(state["images"]), float(state["seconds"]))


def resume_batches(loader, sampler, skip: int) -> Iterator:
    """The loader's batches of this epoch from batch ``skip`` on, drawn exactly as an uninterrupted pass
    would draw them. In-process loading (``num_workers = 0``) draws its augmentations from the global RNGs,
    which the checkpoint restores: the sampler skips the first batches without loading them. Worker processes
    draw from per-worker streams seeded when the pass starts, so they must load and drop the first batches to
    reach the same state (the main process's RNGs are not touched by that)."""
    if skip and loader.num_workers == 0:
        sampler.skip_next(skip)
        return iter(loader)
    batches = iter(loader)
    for _ in range(skip):
        next(batches)
    return batches
