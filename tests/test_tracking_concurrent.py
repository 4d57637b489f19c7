"""Several processes log into one fresh SQLite store at the same moment: nothing lost, nothing doubled.

This is the situation of ``dvc repro -j 6`` or six SLURM jobs starting together: each process creates the
database (if nobody has yet), the experiment, a run, then writes metric steps. Processes are forked
(spawn where fork is unavailable) for speed: each still opens its own connections, and plain MLflow fails
this test (racing schema migrations: "duplicate column name").
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

PROCS = 5
STEPS = 20
EXPERIMENT = "concurrent"


def _value(job: int, step: int, key: str) -> float:
    return job * 1000.0 + step + (0.25 if key == "acc" else 0.5)


def _worker(uri: str, job: int, barrier, repo: str) -> None:
    import os

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["OCCREID_TRACKING"] = "1"
    import mlflow  # noqa: F401  (import before the barrier so that all processes start writing together)

    from occreid.tracking import start_run

    barrier.wait(timeout=300)
    config = {"job": job, "model": {"seed": job, "name": "vit_tiny"}}
    with start_run(EXPERIMENT, f"job{job}", uri=uri, config=config, stage="train", dataset="synthocc",
                   method="vit", repo=repo) as run:
        for step in range(STEPS):
            run.log_metrics({k: _value(job, step, k) for k in ("loss", "acc")}, step=step)


@pytest.mark.timeout(600)
def test_parallel_processes_lose_and_duplicate_nothing(tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    barrier = ctx.Barrier(PROCS)
    procs = [ctx.Process(target=_worker, args=(uri, job, barrier, str(tmp_path))) for job in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=500)
    assert [p.exitcode for p in procs] == [0] * PROCS

    client = MlflowClient(uri)
    experiments = [e for e in client.search_experiments() if e.name == EXPERIMENT]
    assert len(experiments) == 1
    assert experiments[0].artifact_location == (db.parent / "mlartifacts" / EXPERIMENT).as_uri()
    runs = client.search_runs([experiments[0].experiment_id], max_results=100)
    assert sorted(r.info.run_name for r in runs) == [f"job{j}" for j in range(PROCS)]
    for run in runs:
        job = int(run.info.run_name[3:])
        assert run.info.status == "FINISHED"
        assert run.data.params == {"job": str(job), "model.seed": str(job), "model.name": "vit_tiny"}
        assert run.data.tags["stage"] == "train"
        for key in ("loss", "acc"):
            history = client.get_metric_history(run.info.run_id, key)
            got = sorted((m.step, m.value) for m in history)
            assert got == [(s, _value(job, s, key)) for s in range(STEPS)]
