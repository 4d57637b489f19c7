"""MLflow tracking for the train and evaluate stages, safe for parallel jobs on one SQLite store.

Typical use in a stage::

    from occreid.tracking import (TrackingConfig, MlflowCallback, start_run, tracking_enabled,
                                  tracking_uri)

    tcfg = from_dict(TrackingConfig, params.get("tracking"), key="tracking")
    with start_run(experiment, "train", uri=tracking_uri(tcfg.uri), enabled=tracking_enabled(tcfg.enabled),
                   config=resolved_cfg, stage="train", dataset=ds, method=m) as run:
        history = fit(method, splits, train_cfg, out_dir, callbacks=[MlflowCallback(run)])
        run.log_artifact(out_dir / "history.json")

MLflow itself is imported only when a run is really tracked.
"""

from __future__ import annotations

from occreid.tracking.callback import Callback, MlflowCallback
from occreid.tracking.mlflow_store import (
    artifact_location,
    normalize_uri,
    open_experiment,
    project_root,
    retry_locked,
    tracking_enabled,
    tracking_uri,
)
from occreid.tracking.run import NullRunLogger, RunLogger, TrackingConfig, start_run
from occreid.tracking.tags import flatten, params_hash, standard_tags, unflatten

__all__ = [
    "Callback",
    "MlflowCallback",
    "NullRunLogger",
    "RunLogger",
    "TrackingConfig",
    "artifact_location",
    "flatten",
    "normalize_uri",
    "open_experiment",
    "params_hash",
    "project_root",
    "retry_locked",
    "standard_tags",
    "start_run",
    "tracking_enabled",
    "tracking_uri",
    "unflatten",
]
