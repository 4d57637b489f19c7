"""Training callbacks: how tracking (MLflow), evaluation during training and tests observe a run.

A callback implements any of ``on_train_start(config)``, ``on_epoch_end(epoch, metrics)`` and
``on_train_end(history)`` (missing ones are skipped). ``metrics`` is the epoch's history entry itself:
a callback earlier in the list may add keys (e.g. :class:`PeriodicEval` adds mAP) that later callbacks
(e.g. MLflow) log and that end up in the returned history. On resume, ``on_train_start`` is called again
and ``on_epoch_end`` only for the epochs trained in this process.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

log = logging.getLogger(__name__)


@runtime_checkable
class Callback(Protocol):
    def on_train_start(self, config: dict) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict) -> None: ...

    def on_train_end(self, history: list[dict]) -> None: ...


class CallbackList:
    """Calls each hook on every callback that defines it, in order."""

    def __init__(self, callbacks: Sequence[Any] = ()):
        self.callbacks = list(callbacks)

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)

    def on_train_start(self, config: dict) -> None:
        self._call("on_train_start", config)

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        self._call("on_epoch_end", epoch, metrics)

    def on_train_end(self, history: list[dict]) -> None:
        self._call("on_train_end", history)


class PeriodicEval:
    """Runs ``evaluate(epoch) -> {name: value}`` every ``period`` epochs and at ``last_epoch``; merges the
    result into the epoch metrics. ``evaluate`` should put the model in eval mode and use no_grad; the
    engine sets train mode again at the next epoch."""

    def __init__(self, evaluate: Callable[[int], dict[str, float]], period: int, last_epoch: int, prefix: str = "val/"):
        self.evaluate = evaluate
        self.period = period
        self.last_epoch = last_epoch
        self.prefix = prefix

    def on_epoch_end(self, epoch: int, metrics: dict) -> None:
        if self.period > 0 and (epoch % self.period == 0 or epoch == self.last_epoch):
            results = self.evaluate(epoch)
            metrics.update({f"{self.prefix}{k}": float(v) for k, v in results.items()})
            log.info("epoch %d evaluation: %s", epoch, ", ".join(f"{k}={v:.4f}" for k, v in results.items()))
