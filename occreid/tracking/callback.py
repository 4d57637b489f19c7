"""The training-loop side of tracking: a callback that turns per-epoch metrics into MLflow curves.

Why a callback: the engine (``occreid.engine.fit``) knows nothing of MLflow; it calls whatever callbacks it
is given at the start, after each epoch and at the end. This adapter logs the train config once, one metric
batch per epoch (step = epoch, so the MLflow UI draws loss/accuracy curves) and the whole history as
``history.json`` at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from occreid.tracking.run import RunLogger, as_float
from occreid.tracking.tags import flatten

HISTORY_ARTIFACT = "history.json"
TAG_EPOCHS = "epochs_done"


@runtime_checkable
class Callback(Protocol):
    """What ``fit`` calls. ``metrics`` holds the epoch's scalars (loss, accuracy, lr, ...)."""

    def on_train_start(self, cfg: dict) -> None: ...

    def on_epoch_end(self, epoch: int, metrics: dict) -> None: ...

    def on_train_end(self, history: list[dict]) -> None: ...


class MlflowCallback:
    """Log a training run to ``logger``.

    ``param_prefix`` namespaces the config ``fit`` reports among the run's params (``fit.train.lr``), so it
    cannot clash with the stage's resolved config logged by ``start_run``. ``metric_prefix`` namespaces the curves
    (``train/loss``). Non-numeric entries of an epoch's metrics (e.g. a list of per-group learning rates)
    are skipped: a curve needs one number per step.
    """

    def __init__(self, logger: RunLogger, *, param_prefix: str = "fit", metric_prefix: str = "train/",
                 log_config: bool = True):
        self.logger = logger
        self.param_prefix = param_prefix
        self.metric_prefix = metric_prefix
        self.log_config = log_config
        self.skipped: set[str] = set()

    def on_train_start(self, cfg: Mapping[str, Any]) -> None:
        if self.log_config:
            self.logger.log_params({self.param_prefix: dict(cfg)} if self.param_prefix else cfg)

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        numbers: dict[str, float] = {}
        for key, value in flatten(metrics, sep="/").items():
            number = as_float(value)
            if number is None:
                self.skipped.add(key)
            else:
                numbers[f"{self.metric_prefix}{key}"] = number
        if numbers:
            self.logger.log_metrics(numbers, step=int(epoch))

    def on_train_end(self, history: list[dict]) -> None:
        self.logger.log_dict(list(history), HISTORY_ARTIFACT)
        self.logger.set_tags({TAG_EPOCHS: len(history)})
