"""Tracking: flattening, params hash, store URI resolution, retries, git tags and one real run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from occreid.errors import OccreidError
from occreid.tracking import (
    MlflowCallback,
    NullRunLogger,
    flatten,
    params_hash,
    retry_locked,
    start_run,
    tracking_enabled,
    tracking_uri,
    unflatten,
)
from occreid.tracking.mlflow_store import artifact_location, is_locked_error, project_root
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
