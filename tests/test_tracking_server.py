"""A shared MLflow tracking server: 8 processes log to it at once and nothing is lost.

A real ``mlflow server`` (SQLite backend, served artifact folder) runs on a loopback port. Six driver
processes (tests/tracking_driver.py: the stages' tracking calls with known values) and the real
``python -m stages.train`` and ``python -m stages.evaluate`` log to it at the same time (the drivers start
together and keep their runs open until both stages have exited, which the runs' times confirm); afterwards
every run, every epoch's metric value and every artifact is counted through ``MlflowClient``. The real
stages' values are checked against the files they wrote (history.csv, metrics.json): two routes, one answer.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import tracking_driver as driver
from dag_fixtures import ROOT, tiny
from stages.params import read_yaml
from tracking_server import mlflow_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # a server and 8 processes at once

DRIVERS = [("train", job) for job in (1, 2, 3)] + [("evaluate", job) for job in (4, 5, 6)]
SHARED = "shared"
TRAIN_EPOCHS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny synthocc, prepared, with experiment ``vit`` trained (tracking off) and ``vit2`` to train."""
    from stages import prepare_data, train

    root = tmp_path_factory.mktemp("project")
    params = tiny(read_yaml(ROOT / "params.yaml"))
    params["experiments"] = {"vit": params["experiments"]["vit"],
                             "vit2": {"dataset": "synthocc", "method": "vit",
                                      "overrides": {"train": {"epochs": TRAIN_EPOCHS}}}}
    params["tables"]["tables"] = []
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("OCCREID_TRACKING", "0")
        prepare_data.main(["--dataset", "synthocc"])
        train.train("vit", "params.yaml")
    return root


def _env(project: Path, uri: str) -> dict:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "OCCREID_TRACKING": "1", "OCCREID_PROJECT_ROOT": str(project),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "CUDA_VISIBLE_DEVICES": "",
            "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.5", "OMP_NUM_THREADS": "1"}


def _launch(project: Path, uri: str, tmp: Path, procs: dict[str, subprocess.Popen]) -> None:
    """Start the 8 processes into ``procs`` (output to files: pipes nobody reads could fill up and block
    them); the drivers wait at a start signal given once all of them are ready."""
    env, go, stop = _env(project, uri), tmp / "go", tmp / "stop"
    commands = {f"{kind}{job}": [sys.executable, str(ROOT / "tests" / "tracking_driver.py"), "--kind", kind,
                                 "--job", str(job), "--experiment", SHARED, "--out", str(tmp / f"job{job}"),
                                 "--go", str(go), "--stop", str(stop)] for kind, job in DRIVERS}
    for stage, experiment in (("train", "vit2"), ("evaluate", "vit")):
        commands[stage] = [sys.executable, "-m", f"stages.{stage}", "--experiment", experiment]
    for name, cmd in commands.items():
        with open(tmp / f"{name}.out", "w") as out, open(tmp / f"{name}.err", "w") as err:
            procs[name] = subprocess.Popen(cmd, cwd=project, env=env, stdout=out, stderr=err, text=True)
    deadline = time.monotonic() + 120
    while not all((tmp / f"job{job}" / "ready").exists() for _, job in DRIVERS):
        assert time.monotonic() < deadline, "drivers not ready after 120 s"
        assert all(p.poll() in (None, 0) for p in procs.values()), {n: p.poll() for n, p in procs.items()}
        time.sleep(0.05)
    go.write_text("")


def _finish(procs: dict[str, subprocess.Popen], tmp: Path) -> None:
    """Wait for the stages, then let the drivers end their runs; every process must succeed without a
    tracking warning."""
    for name in ("train", "evaluate"):
        procs[name].wait(timeout=240)
    (tmp / "stop").write_text("")
    for name, proc in procs.items():
        proc.wait(timeout=240)
        err = (tmp / f"{name}.err").read_text()
        assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{err[-4000:]}"
        assert "without tracking" not in err and "stopped accepting writes" not in err, f"{name}:\n{err[-3000:]}"


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def _artifacts(client, run_id: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id)}


def _artifact_text(client, run_id: str, path: str, dst: Path) -> str:
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dst))).read_text()


def test_eight_concurrent_processes_lose_no_run_metric_or_artifact(server, project, tmp_path):
    from mlflow.tracking import MlflowClient

    procs: dict[str, subprocess.Popen] = {}
    try:
        _launch(project, server.uri, tmp_path, procs)
        _finish(procs, tmp_path)
    finally:  # nothing left running after a failure
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    client = MlflowClient(server.uri)
    experiments = {e.name: e.experiment_id for e in client.search_experiments() if e.name != "Default"}
    assert sorted(experiments) == sorted([SHARED, "vit", "vit2"])
    runs = client.search_runs(list(experiments.values()), max_results=100)
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)
    drivers = [r for r in runs if r.info.experiment_id == experiments[SHARED]]
    for stage_run in (r for r in runs if r.info.experiment_id != experiments[SHARED]):
        for other in drivers:  # each stage's run was open while all six driver runs were
            assert stage_run.info.start_time < other.info.end_time
            assert other.info.start_time < stage_run.info.end_time

    # the drivers: every epoch of every train run, every evaluate metric, every artifact
    assert sorted((r.info.run_name, int(r.data.tags["job"])) for r in drivers) == sorted(DRIVERS)
    for run in drivers:
        rid, job = run.info.run_id, int(run.data.tags["job"])
        if run.info.run_name == "train":
            for key in ("loss", "acc", "lr"):
                assert _history(client, rid, f"train/{key}") == [
                    (e, driver.epoch_metrics(job, e)[key]) for e in range(1, driver.EPOCHS + 1)]
            assert run.data.params == {"experiment": SHARED, "job": str(job), "train.epochs": str(driver.EPOCHS),
                                       "train.lr": str(0.001 * job)}
            assert run.data.metrics["final/epochs"] == driver.EPOCHS and run.data.tags["epochs_done"] == "5"
            assert _artifacts(client, rid) == {"config.json", "history.json", "history.csv"}
            history = json.loads(_artifact_text(client, rid, "history.json", tmp_path / rid))
            assert history == [driver.epoch_metrics(job, e) for e in range(1, driver.EPOCHS + 1)]
            assert json.loads(_artifact_text(client, rid, "config.json", tmp_path / rid)) == driver.train_config(job)
        else:
            assert {k: v for k, v in run.data.metrics.items()} == driver.eval_metrics(job)
            assert _artifacts(client, rid) == {"config.json", "metrics.json"}
            assert json.loads(_artifact_text(client, rid, "metrics.json", tmp_path / rid)) == driver.eval_metrics(job)

    # the real train stage: MLflow's curves are the history.csv it wrote; system metrics were sampled
    (train_run,) = [r for r in runs if r.info.experiment_id == experiments["vit2"]]
    rid = train_run.info.run_id
    with open(project / "data/train/vit2/history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, TRAIN_EPOCHS + 1))
    assert _history(client, rid, "train/loss") == [(int(r["epoch"]), float(r["loss"])) for r in rows]
    final = json.loads((project / "data/train/vit2/train_metrics.json").read_text())
    assert train_run.data.metrics["final/epochs"] == final["epochs"] == TRAIN_EPOCHS
    assert train_run.data.tags["stage"] == "train" and train_run.data.params["train.epochs"] == str(TRAIN_EPOCHS)
    assert _artifacts(client, rid) == {"config.json", "history.json", "history.csv"}
    assert _artifact_text(client, rid, "history.csv", tmp_path / rid) == (
        project / "data/train/vit2/history.csv").read_text()
    cpu = client.get_metric_history(rid, "system/cpu_utilization_percentage")
    memory = client.get_metric_history(rid, "system/system_memory_usage_megabytes")
    assert cpu and memory and all(0.0 <= m.value <= 100.0 for m in cpu) and all(m.value > 0 for m in memory)

    # the real evaluate stage: its metrics are metrics.json's
    (eval_run,) = [r for r in runs if r.info.experiment_id == experiments["vit"]]
    doc = json.loads((project / "reports/eval/vit/metrics.json").read_text())
    assert eval_run.data.metrics["all/mAP"] == doc["subsets"]["all"]["mAP"]
    assert eval_run.data.metrics["all/R1"] == doc["subsets"]["all"]["R1"]
    assert not any(k.startswith("system/") for k in eval_run.data.metrics)  # only train runs sample them
    assert json.loads(_artifact_text(client, eval_run.info.run_id, "metrics.json", tmp_path / "eval")) == doc

    # the artifacts went through the server into its artifact folder (not into a client-side path)
    stored = sorted(p.name for p in server.artifacts.rglob("*") if p.is_file())
    assert stored.count("config.json") == 8 and stored.count("history.csv") == 4
    assert stored.count("metrics.json") == 4 and stored.count("history.json") == 4
