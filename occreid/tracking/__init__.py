"""MLflow tracking for the train and evaluate stages: the project's SQLite store (safe for parallel jobs) or
a shared tracking server (``MLFLOW_TRACKING_URI=http://host:5000``), through the same code.

Typical use in a stage::

    from occreid.tracking import (TrackingConfig, MlflowCallback, start_run, tracking_enabled,
                                  tracking_uri)

    tcfg = from_dict(TrackingConfig, params.get("tracking"), key="tracking")
    with start_run(experiment, "train", uri=tracking_uri(tcfg.uri), enabled=tracking_enabled(tcfg.enabled),
                   config=resolved_cfg, stage="train", dataset=ds, method=m) as run:
        history = fit(method, splits, train_cfg, out_dir, callbacks=[MlflowCallback(run)])
        run.log_artifact(out_dir / "history.json")

MLflow itself is imported only when a run is really tracked. A store that cannot be written costs one
warning, never the stage (:mod:`occreid.tracking.run`); train runs also sample CPU/GPU/memory curves
(:mod:`occreid.tracking.system_metrics`).
"""

from __future__ import annotations

from occreid.tracking.callback import Callback, MlflowCallback
from occreid.tracking.mlflow_store import (
    artifact_location,
    bound_http_retries,
    normalize_uri,
    open_experiment,
    project_root,
    retry_locked,
    store_timeout,
    tracking_enabled,
    tracking_uri,
)
from occreid.tracking.run import NullRunLogger, RunLogger, TrackingConfig, start_run
from occreid.tracking.system_metrics import system_metrics_wanted
from occreid.tracking.tags import flatten, params_hash, standard_tags, unflatten

__all__ = [
    "Callback",
    "MlflowCallback",
    "NullRunLogger",
    "RunLogger",
    "TrackingConfig",
    "artifact_location",
    "bound_http_retries",
    "flatten",
    "normalize_uri",
    "open_experiment",
    "params_hash",
    "project_root",
    "retry_locked",
    "standard_tags",
    "start_run",
    "store_timeout",
    "system_metrics_wanted",
    "tracking_enabled",
    "tracking_uri",
    "unflatten",
]
