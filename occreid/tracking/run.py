"""One tracked run: ``with start_run(...) as run: run.log_metrics(...)``.

Why a wrapper instead of ``mlflow.start_run``: the fluent API keeps a global active run and writes one row
per call, while a stage needs an explicit run object, every write retried on a locked SQLite store, metric
dicts written as one batch, nested configs flattened and over-long values cut, and a switch that turns the
whole thing into no-ops for quick tests (``OCCREID_TRACKING=0``) without importing MLflow.

Tracking never stops a stage: when the store cannot be reached or stays locked (a tracking server that is
down, a SQLite file locked for longer than ``$OCCREID_TRACKING_TIMEOUT``), the run logs ONE warning saying
so and every later write is skipped, so training still finishes and writes its outputs (which DVC keeps).
A run that lost writes half-way is tagged ``tracking_incomplete`` when the store answers again at its end.
Usage errors (a non-numeric metric, a changed param, a missing artifact file) still raise.

Distributed training: ranks other than 0 call ``start_run(..., enabled=False)`` and get a
:class:`NullRunLogger`, which accepts the same calls and records nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import numbers
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from occreid.errors import OccreidError
from occreid.io import write_json
from occreid.tracking.mlflow_store import (
    bound_http_retries,
    is_server,
    open_experiment,
    probe_server,
    project_root,
    retry_locked,
    store_timeout,
    tracking_enabled,
    tracking_uri,
)
from occreid.tracking.system_metrics import monitor_system, system_metrics_wanted
from occreid.tracking.tags import flatten, standard_tags, stringify, to_plain, truncate

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

FALLBACK_PARAM_LIMIT = 500  # MLflow < 2.? refused values longer than this; newer versions allow 6000
CONFIG_ARTIFACT = "config.json"
TAG_INCOMPLETE = "tracking_incomplete"
FIX_UNAVAILABLE = ("check that the tracking server is up and reachable, or that no process holds the SQLite "
                   "store locked (see MLFLOW_TRACKING_URI / tracking.uri); OCCREID_TRACKING=0 skips tracking")


@dataclass
class TrackingConfig:
    """The ``tracking`` params section: ``uri`` (None → see :func:`tracking_uri`) and an on/off switch."""

    uri: str | None = None
    enabled: bool = True


def as_float(value: Any) -> float | None:
    """A metric value as float: numbers, bools, numpy scalars and one-element tensors; None otherwise."""
    if isinstance(value, numbers.Real):
        return float(value)
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "size", 1) in (1, (), None):
        try:
            out = item()
        except (ValueError, RuntimeError):
            return None
        return float(out) if isinstance(out, numbers.Real) else None
    return None


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """One short line for a store error: MLflow's "API request to URL failed with exception <urllib3 soup>"
    becomes "API request to URL failed: [Errno 111] Connection refused"; SQLAlchemy's statement and
    background link are dropped."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = re.sub(r" ?\[SQL: .*$| ?\(Background on this error at: \S+\)", "", text)  # SQLAlchemy's appendix
    request = re.match(r"(API request to \S+) failed", text)
    errno = re.findall(r"\[Errno -?\d+\][^\"')(]*", text)
    if request and errno:
        text = f"{request.group(1)} failed: {errno[-1].strip()}"
    elif request and "timed out" in text.lower():
        text = f"{request.group(1)} failed: timed out"
    return truncate(f"{type(exc).__name__}: {text}", limit)


class RunLogger:
    """Writes to one MLflow run. Every write is retried on "database is locked" and batched.

    The first write the store refuses for good (unreachable, locked past ``timeout``) logs one warning and
    turns the logger offline: later writes are counted in ``lost`` and skipped. ``error`` says why.
    """

    enabled = True

    def __init__(self, client: "MlflowClient", run_id: str, experiment_id: str, *, uri: str | None = None,
                 timeout: float | None = None, label: str = "run"):
        from mlflow.utils import validation

        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.uri = uri
        self.timeout = store_timeout() if timeout is None else timeout
        self.label = label
        self.error: str | None = None
        self.lost = 0
        self.param_limit = int(getattr(validation, "MAX_PARAM_VAL_LENGTH", FALLBACK_PARAM_LIMIT))
        self.tag_limit = int(getattr(validation, "MAX_TAG_VAL_LENGTH", 5000))
        self._batch = int(getattr(validation, "MAX_METRICS_PER_BATCH", 1000))
        self._batch_params = int(getattr(validation, "MAX_PARAMS_TAGS_PER_BATCH", 100))
        self._params: dict[str, str] = {}

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a (nested) mapping flattened with dots; values stringified and cut to MLflow's limit.

        Re-logging a key with the same value is skipped; a different value is an error (MLflow params are
        immutable — log it as a metric or a tag instead).
        """
        from mlflow.entities import Param

        new: dict[str, str] = {}
        for key, value in flatten(params).items():
            text = truncate(stringify(value), self.param_limit)
            old = self._params.get(key, new.get(key))
            if old is not None and old != text:
                raise ValueError(f"param '{key}' already logged as {old!r}, cannot change it to {text!r}")
            if old is None:
                new[key] = text
        for chunk in _chunks([Param(k, v) for k, v in new.items()], self._batch_params):
            self._write(self.client.log_batch, self.run_id, params=chunk)
        self._params.update(new)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric values at ``step`` (default 0) in one batch; a non-numeric value is a TypeError."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        rows = []
        for key, value in flatten(metrics).items():
            number = as_float(value)
            if number is None:
                raise TypeError(f"metric '{key}' = {value!r} is not a number")
            rows.append(Metric(key, number, stamp, int(step or 0)))
        for chunk in _chunks(rows, self._batch):
            self._write(self.client.log_batch, self.run_id, metrics=chunk)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags (values stringified and cut to MLflow's limit); later values replace earlier ones."""
        from mlflow.entities import RunTag

        rows = [RunTag(str(k), truncate(stringify(v), self.tag_limit)) for k, v in tags.items()]
        for chunk in _chunks(rows, self._batch_params):
            self._write(self.client.log_batch, self.run_id, tags=chunk)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or a folder into the run's artifacts (under ``artifact_path`` when given)."""
        path = Path(path)
        if not path.exists():
            raise OccreidError("artifact to log does not exist", path=path,
                               fix="log it after the stage has written it")
        fn = self.client.log_artifacts if path.is_dir() else self.client.log_artifact
        self._write(fn, self.run_id, str(path), artifact_path)

    def log_dict(self, obj: Any, name: str, artifact_path: str | None = None) -> None:
        """Write ``obj`` as JSON named ``name`` and log it as an artifact."""
        plain = json.loads(json.dumps(to_plain(obj), default=str))
        if self.offline:
            self.lost += 1
            return
        with tempfile.TemporaryDirectory(prefix="occreid-artifact-") as tmp:
            target = Path(tmp) / name
            write_json(target, plain)
            self.log_artifact(target, artifact_path)

    @property
    def offline(self) -> bool:
        """True once the store refused a write for good (see ``error``)."""
        return self.error is not None

    def _write(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Call a store method, retrying a locked store; on a lasting failure go offline (one warning)."""
        if self.offline:
            self.lost += 1
            return
        try:
            retry_locked(fn, *args, timeout=self.timeout, **kwargs)
        except OccreidError:
            raise
        except Exception as exc:  # noqa: BLE001 (the store failing must not end the training job)
            self.error = describe_error(exc)
            self.lost += 1
            log.warning("MLflow store %s stopped accepting writes to %s %s (%s); the rest of the run is not "
                        "tracked, its outputs are still written. Fix: %s", self.uri, self.label, self.run_id,
                        self.error, FIX_UNAVAILABLE)
            log.debug("tracking error", exc_info=True)

    def close(self, status: str) -> None:
        """End the run with ``status``. After lost writes, one last bounded try tags it ``tracking_incomplete``
        (the store may be back); if that fails too the run is left as the store last saw it."""
        if self.offline:
            lost, error = self.lost, self.error
            try:
                retry_locked(self.client.set_tag, self.run_id, TAG_INCOMPLETE,
                             truncate(f"{lost} writes lost: {error}", self.tag_limit), timeout=self.timeout)
                retry_locked(self.client.set_terminated, self.run_id, status, timeout=self.timeout)
            except Exception:  # noqa: BLE001
                log.debug("could not end run %s after losing writes", self.run_id, exc_info=True)
            log.info("%s %s: %d tracking writes were not recorded (%s)", self.label, self.run_id, lost, error)
            return
        self._write(self.client.set_terminated, self.run_id, status)


class NullRunLogger(RunLogger):
    """The logger when tracking is off, or when the store could not open the run (then ``error`` says why):
    same interface, records nothing, never imports MLflow."""

    enabled = False

    def __init__(self, error: str | None = None) -> None:
        self.client = None  # type: ignore[assignment]
        self.run_id = None  # type: ignore[assignment]
        self.experiment_id = None  # type: ignore[assignment]
        self.uri = None
        self.error = error
        self.lost = 0

    def log_params(self, params: Mapping[str, Any]) -> None:
        flatten(params)  # still reject what a real run would reject

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        for key, value in flatten(metrics).items():
            if as_float(value) is None:
                raise TypeError(f"metric '{key}' = {value!r} is not a number")

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        return None

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def log_dict(self, obj: Any, name: str, artifact_path: str | None = None) -> None:
        return None

    def close(self, status: str) -> None:
        return None


@contextlib.contextmanager
def start_run(
    experiment_name: str,
    run_name: str,
    tags: Mapping[str, Any] | None = None,
    uri: str | None = None,
    *,
    config: Any = None,
    stage: str | None = None,
    dataset: str | None = None,
    method: str | None = None,
    enabled: bool | None = None,
    repo: str | Path | None = None,
    system_metrics: bool | None = None,
) -> Iterator[RunLogger]:
    """Open a run in MLflow experiment ``experiment_name`` and yield its :class:`RunLogger`.

    ``uri`` is a resolved store URI (None → :func:`tracking_uri`): the project's SQLite file or a tracking
    server. The run gets the standard tags (git commit and dirty flag of ``repo`` — default the project
    root —, params hash of ``config``, ``stage``, ``experiment`` = ``experiment_name``, ``dataset``,
    ``method``), then ``tags`` (which win). A given ``config`` (mapping or dataclass) is also logged as
    flattened params and as ``config.json``. ``system_metrics`` (None: on for ``stage="train"``) samples
    CPU/GPU/memory curves while the block runs (see :mod:`occreid.tracking.system_metrics`).
    The run ends FINISHED, or FAILED (KILLED on Ctrl-C) when the block raises; the error propagates.
    ``enabled=False`` (default: :func:`tracking_enabled`) yields a :class:`NullRunLogger`; so does a store
    that cannot open the run (one warning; the block still runs).
    """
    if not (tracking_enabled() if enabled is None else enabled):
        yield NullRunLogger()
        return
    uri = tracking_uri() if uri is None else uri
    bound_http_retries(uri)
    timeout = store_timeout()
    label = f"{run_name} run of '{experiment_name}'"
    run_tags = standard_tags(repo=repo or project_root(), config=config, stage=stage,
                             experiment=experiment_name, dataset=dataset, method=method)
    run_tags.update({str(k): stringify(v) for k, v in (tags or {}).items()})
    try:
        if is_server(uri):
            probe_server(uri)  # seconds, where MLflow's retried requests would take their whole budget
        client, experiment_id = open_experiment(uri, experiment_name, timeout=timeout)
        run = retry_locked(client.create_run, experiment_id, run_name=run_name, timeout=timeout)
    except OccreidError:
        raise
    except Exception as exc:  # noqa: BLE001 (an unavailable store must not stop the stage)
        error = describe_error(exc)
        log.warning("MLflow store %s cannot be written (%s): the %s goes on without tracking, its outputs are "
                    "still written. Fix: %s", uri, error, label, FIX_UNAVAILABLE)
        log.debug("tracking error", exc_info=True)
        logger: RunLogger = NullRunLogger(error)
    else:
        logger = RunLogger(client, run.info.run_id, experiment_id, uri=uri, timeout=timeout, label=label)
        log.info("MLflow run '%s' (%s) in experiment '%s' at %s", run_name, logger.run_id, experiment_name, uri)
    if not logger.enabled:
        yield logger
        return
    from mlflow.entities import RunStatus

    status = RunStatus.to_string(RunStatus.FAILED)
    sample = system_metrics_wanted(stage == "train" if system_metrics is None else system_metrics)
    try:
        logger.set_tags(run_tags)
        if config is not None:
            logger.log_params(config)
            logger.log_dict(config, CONFIG_ARTIFACT)
        with monitor_system(logger.run_id, uri, enabled=sample and not logger.offline):
            yield logger
        status = RunStatus.to_string(RunStatus.FINISHED)
    except KeyboardInterrupt:
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    finally:
        logger.close(status)
