"""Tracking: flattening, params hash, store URI resolution, retries and their bounds, git tags, real runs, a
store that stops answering, system metrics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from occreid.errors import OccreidError
from occreid.tracking import (
    MlflowCallback,
    NullRunLogger,
    RunLogger,
    flatten,
    params_hash,
    retry_locked,
    start_run,
    tracking_enabled,
    tracking_uri,
    unflatten,
)
from occreid.tracking.mlflow_store import (
    HTTP_RETRY_DEFAULTS,
    QuietMlflowRetries,
    artifact_location,
    bound_http_retries,
    browse_hint,
    is_locked_error,
    normalize_uri,
    probe_server,
    project_root,
    store_lock,
    store_timeout,
)
from occreid.tracking.system_metrics import system_metrics_wanted
from occreid.tracking.tags import git_state, stringify, truncate


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "OCCREID_TRACKING", "OCCREID_PROJECT_ROOT"):
        monkeypatch.delenv(name, raising=False)


# --- flatten / hash ------------------------------------------------------------------------------------

def test_flatten_known_answer():
    cfg = {"optim": {"lr": 3e-4, "betas": [0.9, 0.999]}, "model": {"name": "vit", "sie": {}}, "seed": 1}
    assert flatten(cfg) == {"optim.lr": 3e-4, "optim.betas": [0.9, 0.999], "model.name": "vit",
                            "model.sie": {}, "seed": 1}


keys = st.text(alphabet="abcxyz_0123", min_size=1, max_size=5)
leaves = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans(), st.none(),
                   st.lists(st.integers(), max_size=3))
trees = st.recursive(leaves, lambda inner: st.dictionaries(keys, inner, max_size=4), max_leaves=20)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # shared, loaded CI cores
@given(st.dictionaries(keys, trees, max_size=5))
def test_flatten_round_trip(tree):
    flat = flatten(tree)
    assert all(not isinstance(v, dict) or v == {} for v in flat.values())
    assert unflatten(flat) == tree


@dataclasses.dataclass
class _Optim:
    lr: float = 0.1
    path: Path = Path("data/x")


@dataclasses.dataclass
class _Cfg:
    optim: _Optim = dataclasses.field(default_factory=_Optim)
    epochs: int = 2


def test_params_hash_is_sha256_of_canonical_json_and_order_independent():
    a = {"b": [1, 2], "a": {"y": 1, "x": "s"}}
    b = {"a": {"x": "s", "y": 1}, "b": [1, 2]}
    expected = hashlib.sha256(b'{"a":{"x":"s","y":1},"b":[1,2]}').hexdigest()
    assert params_hash(a) == params_hash(b) == expected
    assert params_hash({**a, "b": [2, 1]}) != expected
    # a dataclass config hashes like its plain-dict form
    assert params_hash(_Cfg()) == params_hash({"epochs": 2, "optim": {"lr": 0.1, "path": "data/x"}})


def test_stringify_and_truncate():
    assert stringify(0.001) == "0.001"
    assert stringify([1, "a"]) == '[1, "a"]'
    assert stringify({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    assert truncate("short", 10) == "short"
    long_a, long_b = "x" * 600 + "a", "x" * 600 + "b"
    ta, tb = truncate(long_a, 500), truncate(long_b, 500)
    assert len(ta) == len(tb) == 500 and ta != tb and ta.startswith("x" * 400)


# --- URI and switches ------------------------------------------------------------------------------------

def test_tracking_uri_precedence(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    sub = tmp_path / "work" / "job"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)  # a job started in a sub-folder still finds the project's store
    root = tmp_path.resolve()
    assert project_root() == root
    assert tracking_uri(None) == f"sqlite:///{root}/mlflow.db"
    assert tracking_uri("sqlite:///runs/track.db") == f"sqlite:///{root}/runs/track.db"
    assert tracking_uri("http://mlflow:5000") == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/env.db")
    assert tracking_uri("http://mlflow:5000") == "sqlite:////abs/env.db"
    monkeypatch.setenv("OCCREID_PROJECT_ROOT", str(tmp_path / "other"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(None) == f"sqlite:///{root}/other/mlflow.db"


def test_sqlite_uri_errors_and_artifact_location(tmp_path):
    with pytest.raises(OccreidError, match="in-memory"):
        tracking_uri("sqlite:///:memory:")
    db = tmp_path / "mlflow.db"
    expected = (tmp_path / "mlartifacts" / "dpm_occ_duke").as_uri()
    assert artifact_location(f"sqlite:///{db}", "dpm++ occ/duke") == expected
    assert artifact_location("http://host:5000", "x") is None


def test_tracking_enabled_switch(monkeypatch):
    assert tracking_enabled() is True and tracking_enabled(False) is False
    monkeypatch.setenv("OCCREID_TRACKING", "0")
    assert tracking_enabled(True) is False
    monkeypatch.setenv("OCCREID_TRACKING", "on")
    assert tracking_enabled(False) is True
    monkeypatch.setenv("OCCREID_TRACKING", "maybe")
    with pytest.raises(OccreidError, match="OCCREID_TRACKING"):
        tracking_enabled()


def test_disabled_run_is_a_null_logger_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OCCREID_TRACKING", "0")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with start_run("e", "r", uri=uri, config={"a": 1}) as run:
        assert isinstance(run, NullRunLogger) and run.run_id is None
        run.log_metrics({"loss": 1.0}, step=0)
        with pytest.raises(TypeError, match="loss"):
            run.log_metrics({"loss": "high"})
    assert list(tmp_path.iterdir()) == []


# --- retries ---------------------------------------------------------------------------------------------

def test_retry_locked_retries_only_locked_errors():
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "ok"

    assert retry_locked(flaky, base_delay=0.1, sleep=sleeps.append, rng=lambda: 0.5) == "ok"
    assert len(calls) == 3 and sleeps == [pytest.approx(0.1), pytest.approx(0.2)]

    def broken():
        calls.append(1)
        raise ValueError("no such table")

    calls.clear()
    with pytest.raises(ValueError):
        retry_locked(broken, sleep=sleeps.append)
    assert len(calls) == 1

    def always_locked():
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError):
        retry_locked(always_locked, attempts=4, sleep=lambda s: None)
    assert len(calls) == 4


def test_locked_error_is_found_inside_wrapping_exceptions():
    try:
        try:
            raise sqlite3.OperationalError("database is locked")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("TEMPORARILY_UNAVAILABLE") from inner
    except RuntimeError as outer:
        assert is_locked_error(outer)
    assert not is_locked_error(RuntimeError("database disk image is malformed"))
    # a tracking server on SQLite reports its locked database as HTTP 500, which MLflow retries, then gives up on
    busy = ("API request to http://h:5000/api/2.0/mlflow/runs/log-batch failed with exception HTTPConnectionPool("
            "host='h', port=5000): Max retries exceeded with url: /api/2.0/mlflow/runs/log-batch (Caused by "
            "ResponseError('too many 500 error responses'))")
    assert is_locked_error(RuntimeError(busy)) and is_locked_error(RuntimeError(busy.replace("500", "503")))
    assert not is_locked_error(RuntimeError(busy.replace("500", "404")))


# --- git tags --------------------------------------------------------------------------------------------

def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def test_git_state_in_a_temporary_repository(tmp_path):
    assert git_state(tmp_path) == ("unknown", "unknown")
    _git(tmp_path, "init", "-q")
    assert git_state(tmp_path) == ("unknown", "unknown")  # no commit yet
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    head = _git(tmp_path, "rev-parse", "HEAD")
    assert git_state(tmp_path) == (head, "false")
    (tmp_path / "untracked.txt").write_text("ignored by the flag\n")
    assert git_state(tmp_path) == (head, "false")
    (tmp_path / "a.py").write_text("x = 2\n")
    assert git_state(tmp_path) == (head, "true")


# --- a real run ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    """One SQLite store for the module's runs (creating the schema takes seconds)."""
    folder = tmp_path_factory.mktemp("store")
    return f"sqlite:///{folder}/mlflow.db", folder


def test_run_logs_params_metrics_tags_and_artifacts(tmp_path, store):
    from mlflow.tracking import MlflowClient

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "f").write_text("1")
    _git(repo, "add", "f")
    _git(repo, "commit", "-q", "-m", "c")
    head = _git(repo, "rev-parse", "HEAD")
    uri, folder = store
    config = {"optim": {"lr": 0.5}, "note": "n" * 7000}
    with start_run("exp", "train", {"extra": 7}, uri, config=config, stage="train", dataset="synthocc",
                   method="dpm", repo=repo) as run:
        cb = MlflowCallback(run)
        cb.on_train_start({"epochs": 3, "P": 4})
        for epoch in range(3):
            cb.on_epoch_end(epoch, {"loss": 3.0 - epoch, "lr_groups": [0.1, 0.2], "acc": {"id": epoch / 4}})
        history = [{"loss": 3.0}, {"loss": 2.0}, {"loss": 1.0}]
        cb.on_train_end(history)
        (tmp_path / "model.txt").write_text("weights")
        run.log_artifact(tmp_path / "model.txt")
        with pytest.raises(OccreidError, match="does not exist"):
            run.log_artifact(tmp_path / "missing.pt")
    client = MlflowClient(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "train"
    params = got.data.params
    assert params["optim.lr"] == "0.5" and params["fit.epochs"] == "3" and params["fit.P"] == "4"
    assert len(params["note"]) <= 6000 and params["note"].startswith("nnn") and "sha256" in params["note"]
    tags = got.data.tags
    assert tags["git_commit"] == head and tags["git_dirty"] == "false"
    assert tags["params_hash"] == params_hash(config)
    assert (tags["stage"], tags["experiment"], tags["dataset"], tags["method"], tags["extra"]) == (
        "train", "exp", "synthocc", "dpm", "7")
    assert [(m.step, m.value) for m in client.get_metric_history(run.run_id, "train/loss")] == [
        (0, 3.0), (1, 2.0), (2, 1.0)]
    assert [m.value for m in client.get_metric_history(run.run_id, "train/acc/id")] == [0.0, 0.25, 0.5]
    assert cb.skipped == {"lr_groups"}
    art = Path(got.info.artifact_uri.removeprefix("file://"))
    assert art.is_relative_to(folder / "mlartifacts" / "exp")
    assert json.loads((art / "history.json").read_text()) == history
    assert json.loads((art / "config.json").read_text()) == config
    assert (art / "model.txt").read_text() == "weights"


def test_failed_block_marks_the_run_failed(tmp_path, store):
    from mlflow.tracking import MlflowClient

    uri, _ = store
    with pytest.raises(ZeroDivisionError):
        with start_run("exp", "boom", uri=uri, repo=tmp_path) as run:
            run.log_metrics({"x": 1}, step=0)
            1 / 0
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FAILED"
    with start_run("exp", "again", uri=uri, repo=tmp_path) as run:
        run.log_params({"a": 1})
        run.log_params({"a": 1})  # same value again: fine
        with pytest.raises(ValueError, match="already logged"):
            run.log_params({"a": 2})


# --- bounded waits ---------------------------------------------------------------------------------------

class FakeClock:
    """time.monotonic / time.sleep stand-ins: sleeping advances the clock."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_retry_locked_gives_up_once_the_timeout_would_pass():
    clock, calls = FakeClock(), []

    def always_locked():
        calls.append(clock.now)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        retry_locked(always_locked, base_delay=1.0, timeout=5.0, sleep=clock.sleep, rng=lambda: 0.5, clock=clock)
    # delays 1, 2, then 4 would end at 7 s > 5 s: three calls, at 0, 1 and 3 s
    assert calls == [0.0, 1.0, 3.0] and clock.sleeps == [1.0, 2.0]


def test_store_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv("OCCREID_TRACKING_TIMEOUT", raising=False)
    assert store_timeout() == 60.0
    monkeypatch.setenv("OCCREID_TRACKING_TIMEOUT", "2.5")
    assert store_timeout() == 2.5
    for bad in ("0", "-3", "soon"):
        monkeypatch.setenv("OCCREID_TRACKING_TIMEOUT", bad)
        with pytest.raises(OccreidError, match="OCCREID_TRACKING_TIMEOUT"):
            store_timeout()


def test_store_lock_waits_at_most_its_timeout(tmp_path):
    import fcntl

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with open(f"{tmp_path}/mlflow.db.lock", "a+b") as other:  # another holder (a second open file description)
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        with pytest.raises(TimeoutError, match="held by another process"):
            with store_lock(uri, timeout=0.2):
                pass
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    with store_lock(uri, timeout=0.2):  # free again
        pass


@pytest.fixture
def http_env():
    """Restore MLflow's HTTP variables, which bound_http_retries sets for the whole process."""
    saved = {k: os.environ.pop(k, None) for k in HTTP_RETRY_DEFAULTS}
    yield
    for key, value in saved.items():
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value


def test_http_retries_are_bounded_unless_the_user_chose(http_env):
    assert bound_http_retries("sqlite:////tmp/x.db") == {}
    assert not any(os.environ.get(k) for k in HTTP_RETRY_DEFAULTS)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "300"  # the user's choice is kept
    added = bound_http_retries("https://mlflow.example.org")
    assert added == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300"
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES

    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 3  # the name MLflow really reads
    assert bound_http_retries("http://127.0.0.1:5000") == {}  # set once
    quiet = [f for f in logging.getLogger("urllib3.connectionpool").filters if isinstance(f, QuietMlflowRetries)]
    assert len(quiet) == 1

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("urllib3.connectionpool", logging.WARNING, "f", 1, msg, None, None)

    assert not quiet[0].filter(record("Retrying (Retry(total=2)) after ...: /api/2.0/mlflow/runs/log-batch"))
    assert quiet[0].filter(record("Retrying (Retry(total=2)) after ...: /simple/torch/"))
    assert quiet[0].filter(record("Connection pool is full, discarding connection: host"))


def test_browse_hint_names_the_server_or_mlflow_ui():
    assert browse_hint("http://mlflow.lab:5000") == "open http://mlflow.lab:5000 in a browser"
    assert browse_hint("sqlite:////p/mlflow.db") == "mlflow ui --backend-store-uri sqlite:////p/mlflow.db"


def test_file_store_uris_are_refused_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    for uri in ("./mlruns", "file:mlruns", f"file://{tmp_path}/mlruns"):
        with pytest.raises(OccreidError, match="MLFLOW_ALLOW_FILE_STORE=true"):
            normalize_uri(uri, root=tmp_path)
    for uri in ("databricks", "http://host:5000", "postgresql://u@h/db"):
        assert normalize_uri(uri, root=tmp_path) == uri
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    expected = (tmp_path / "mlruns").resolve().as_uri()
    assert normalize_uri("./mlruns", root=tmp_path) == normalize_uri("file:mlruns", root=tmp_path) == expected
    assert normalize_uri(f"file://{tmp_path}/mlruns", root="/elsewhere") == expected


# --- a store that stops answering ------------------------------------------------------------------------

REFUSED = ("API request to http://127.0.0.1:9/api/2.0/mlflow/runs/log-batch failed with exception "
           "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /api/2.0/mlflow/runs/"
           "log-batch (Caused by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9): Failed to "
           "establish a new connection: [Errno 111] Connection refused\"))")


class DyingClient:
    """An MlflowClient stand-in whose store accepts ``ok_writes`` batches, then refuses every call."""

    def __init__(self, ok_writes: int, back_at_close: bool):
        self.ok_writes, self.back_at_close = ok_writes, back_at_close
        self.batches, self.calls_after, self.closing = [], 0, []

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        if len(self.batches) >= self.ok_writes:
            self.calls_after += 1
            from mlflow.exceptions import MlflowException

            raise MlflowException(REFUSED)
        self.batches.append((list(metrics), list(params), list(tags)))

    def log_artifact(self, *args):
        self.log_batch(None)

    def set_tag(self, run_id, key, value):
        if not self.back_at_close:
            raise ConnectionError("still down")
        self.closing.append(("tag", key, value))

    def set_terminated(self, run_id, status):
        self.closing.append(("end", status))


@pytest.mark.parametrize("back_at_close", [True, False])
def test_a_store_failing_mid_run_warns_once_and_the_run_goes_on(tmp_path, caplog, back_at_close):
    client = DyingClient(ok_writes=2, back_at_close=back_at_close)
    run = RunLogger(client, "r1", "0", uri="http://127.0.0.1:9", timeout=1.0, label="train run of 'e'")
    caplog.set_level(logging.INFO, logger="occreid.tracking")
    for epoch in range(5):
        run.log_metrics({"loss": 1.0 / (epoch + 1)}, step=epoch)
    run.log_params({"a": 1})
    run.set_tags({"t": "x"})
    run.log_dict({"k": 1}, "history.json")
    (tmp_path / "f.txt").write_text("x")
    run.log_artifact(tmp_path / "f.txt")
    with pytest.raises(TypeError, match="loss"):  # usage errors still raise when offline
        run.log_metrics({"loss": "high"})
    with pytest.raises(OccreidError, match="does not exist"):
        run.log_artifact(tmp_path / "missing.pt")
    assert [b[0][0].value for b in client.batches] == [1.0, 0.5]  # the two accepted epochs
    assert client.calls_after == 1  # the store was asked once more, then left alone
    assert run.offline and run.lost == 3 + 4
    assert run.error == ("MlflowException: API request to http://127.0.0.1:9/api/2.0/mlflow/runs/log-batch "
                         "failed: [Errno 111] Connection refused")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stopped accepting writes to train run of 'e' r1" in warnings[0].getMessage()
    assert "Connection refused" in warnings[0].getMessage() and warnings[0].exc_info is None
    run.close("FINISHED")  # never raises
    if back_at_close:
        assert client.closing == [("tag", "tracking_incomplete", f"7 writes lost: {run.error}"), ("end", "FINISHED")]
    else:
        assert client.closing == []
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_probe_server_tells_refused_from_answering(tmp_path):
    import http.server
    import threading

    from tracking_server import free_port

    port = free_port()
    with pytest.raises(ConnectionError, match=rf"no tracking server answers at http://127.0.0.1:{port}: "
                                              r"\[Errno 111\] Connection refused"):
        probe_server(f"http://127.0.0.1:{port}")
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=httpd.handle_request, daemon=True).start()
    try:
        probe_server(f"http://127.0.0.1:{httpd.server_address[1]}")  # any answer counts: no exception
    finally:
        httpd.server_close()


def test_unreachable_server_yields_a_null_logger_with_the_reason(tmp_path, caplog, http_env):
    from tracking_server import free_port

    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # refused at once
    uri = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO, logger="occreid.tracking")
    ran = []
    with start_run("exp", "train", uri=uri, config={"a": 1}, stage="train", repo=tmp_path) as run:
        run.log_metrics({"loss": 1.0}, step=1)
        ran.append(1)
    assert ran and isinstance(run, NullRunLogger) and run.run_id is None
    assert "Connection refused" in run.error
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert uri in warning and "train run of 'exp' goes on without tracking" in warning


# --- system metrics --------------------------------------------------------------------------------------

def test_system_metrics_switch(monkeypatch):
    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    assert system_metrics_wanted(True) is True and system_metrics_wanted(False) is False
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    assert system_metrics_wanted(True) is False
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    assert system_metrics_wanted(False) is True
    monkeypatch.setattr("occreid.tracking.system_metrics.psutil_available", lambda: False)
    assert system_metrics_wanted(True) is False


def test_train_runs_sample_system_metrics(tmp_path, store, monkeypatch):
    import psutil
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", raising=False)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    uri, _ = store
    runs = {}
    for stage in ("train", "evaluate"):
        with start_run("sysmetrics", stage, uri=uri, stage=stage, repo=tmp_path) as run:
            time.sleep(0.8)
        runs[stage] = run.run_id
    client = MlflowClient(uri)
    cpu = client.get_metric_history(runs["train"], "system/cpu_utilization_percentage")
    memory = client.get_metric_history(runs["train"], "system/system_memory_usage_megabytes")
    assert len(cpu) >= 2 and sorted(m.step for m in cpu) == list(range(len(cpu)))
    assert all(0.0 <= m.value <= 100.0 for m in cpu)
    total_mb = psutil.virtual_memory().total / 1e6
    assert all(0.0 < m.value <= total_mb for m in memory)
    assert client.get_run(runs["train"]).info.status == "FINISHED"
    assert not [k for k in client.get_run(runs["evaluate"]).data.metrics if k.startswith("system/")]

    # a run shorter than one sampling interval still gets one step (MLflow alone would log none), at once
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "60")
    start = time.monotonic()
    with start_run("sysmetrics", "short", uri=uri, stage="train", repo=tmp_path) as run:
        pass
    assert time.monotonic() - start < 30  # stopping the monitor does not wait for its interval
    assert [m.step for m in client.get_metric_history(run.run_id, "system/cpu_utilization_percentage")] == [0]
