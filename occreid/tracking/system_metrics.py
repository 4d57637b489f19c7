"""CPU, memory, disk, network and (with pynvml) GPU curves for a run, sampled by MLflow's own monitor.

Why MLflow's ``SystemMetricsMonitor`` and not ``mlflow.start_run(log_system_metrics=True)``: our runs are
opened through an explicit ``MlflowClient`` (no fluent active run), and the monitor takes a run id and a
tracking URI directly. It samples in a daemon thread and logs ``system/cpu_utilization_percentage``,
``system/system_memory_usage_megabytes``, ``system/gpu_0_utilization_percentage`` (when pynvml finds an
NVIDIA GPU) ... every ``$MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (MLflow's default: 10).

Train runs log them by default; ``$MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` (MLflow's switch), when set, turns
them on (true) or off (false) for every run of a command. psutil is required (it is a dependency of DVC and
Snakemake, so it is normally there); GPU curves need ``pynvml`` (``pip install -e .[gpu]``: nvidia-ml-py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from typing import Any, Iterator

log = logging.getLogger(__name__)

ENV_SWITCH = "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING"
ENV_INTERVAL = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"
PREFIX = "system/"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def psutil_available() -> bool:
    return importlib.util.find_spec("psutil") is not None


def system_metrics_wanted(default: bool) -> bool:
    """``$MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING`` when set to a switch value, else ``default``; never without
    psutil (MLflow's monitor cannot sample without it)."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    wanted = True if value in _TRUE else False if value in _FALSE else default
    if wanted and not psutil_available():
        log.info("system metrics not logged: psutil is not installed")
        return False
    return wanted


@contextlib.contextmanager
def monitor_system(run_id: str, uri: str, enabled: bool = True) -> Iterator[Any]:
    """Sample system metrics into run ``run_id`` of ``uri`` while the block runs; yields the monitor (None
    when off). The monitor is stopped and its last samples logged (:func:`log_last_window`) before the
    block's caller ends the run (MLflow's monitor also stops by itself once the run is no longer RUNNING).
    A failure to start is logged, never raised: these curves are a convenience, not a result."""
    if not enabled:
        yield None
        return
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, tracking_uri=uri)
        monitor.start()
    except Exception as exc:  # noqa: BLE001 (any failure here must not stop a training job)
        log.warning("system metrics not logged for run %s: %s: %s", run_id, type(exc).__name__, exc)
        yield None
        return
    try:
        yield monitor
    finally:
        monitor.finish()
        log_last_window(monitor)


def log_last_window(monitor: Any) -> None:
    """Log the samples taken since the monitor's last logged step (one taken now if there are none).

    MLflow's monitor drops them when the run ends, so a run shorter than one sampling interval would get no
    system metrics at all; with this every monitored run gets at least one step, the last one up to its end.
    """
    try:
        last = monitor.aggregate_metrics()
        if not last:
            monitor.collect_metrics()
            last = monitor.aggregate_metrics()
        monitor.publish_metrics(last)
        monitor.mlflow_logger.flush()
    except Exception as exc:  # noqa: BLE001
        log.debug("last system metrics not logged: %s", exc)
