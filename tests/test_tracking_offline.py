"""Training finishes and writes its outputs when the tracking store cannot be written: one warning, no crash.

Two real failures, each with the real ``python -m stages.train``: a tracking server URI where nobody listens
(MLflow's own HTTP retries would keep each request going for about four minutes; the bounded defaults make it
seconds, and the subprocess timeout is what fails the test if that regresses), and a SQLite store that
another process holds locked for the whole run.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dag_fixtures import ROOT, tiny
from occreid.tracking.mlflow_store import HTTP_RETRY_DEFAULTS
from stages.params import read_yaml
from tracking_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]  # two real train stages, one waiting on a lock
OUTPUTS = ("model.pt", "history.csv", "train_metrics.json")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny synthocc, prepared, with one experiment ``vit`` of one epoch."""
    from stages import prepare_data

    root = tmp_path_factory.mktemp("offline")
    params = tiny(read_yaml(ROOT / "params.yaml"))
    params["experiments"] = {"vit": params["experiments"]["vit"]}
    params["tables"]["tables"] = []
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        prepare_data.main(["--dataset", "synthocc"])
    return root


def train_stage(project: Path, uri: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``python -m stages.train --experiment vit`` against ``uri`` after removing its old outputs."""
    shutil.rmtree(project / "data/train/vit", ignore_errors=True)  # checkpoints too: train from scratch
    full = {k: v for k, v in os.environ.items() if k not in HTTP_RETRY_DEFAULTS}  # occreid's bounds apply
    full.update(MLFLOW_TRACKING_URI=uri, OCCREID_TRACKING="1", OCCREID_PROJECT_ROOT=str(project),
                PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", **env)
    return subprocess.run([sys.executable, "-m", "stages.train", "--experiment", "vit"], cwd=project, env=full,
                          capture_output=True, text=True, timeout=150)


def assert_finished_with_one_warning(proc: subprocess.CompletedProcess, project: Path, uri: str,
                                     reason: str) -> None:
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in OUTPUTS:
        assert (project / "data/train/vit" / name).stat().st_size > 0, name
    warnings = [line for line in proc.stderr.splitlines() if "goes on without tracking" in line]
    assert len(warnings) == 1, proc.stderr[-4000:]
    assert uri in warnings[0] and reason in warnings[0] and "Fix:" in warnings[0]
    assert "Traceback" not in proc.stderr and "stopped accepting writes" not in proc.stderr
    assert "Retrying" not in proc.stderr  # urllib3's line per HTTP retry is folded into the one warning
    assert "train vit done" in proc.stderr  # the stage's own last line


def test_unreachable_server_costs_a_warning_not_the_training(project):
    uri = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    proc = train_stage(project, uri)
    assert_finished_with_one_warning(proc, project, uri, "Connection refused")


def test_locked_sqlite_store_costs_a_warning_not_the_training(project, tmp_path):
    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    MlflowClient(uri).search_experiments()  # the schema exists; now another process holds the file locked
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        proc = train_stage(project, uri, OCCREID_TRACKING_TIMEOUT="1")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_finished_with_one_warning(proc, project, uri, "database is locked")
    client = MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []  # nothing half-made
