"""A two-process train job on a real single-node SLURM, stopped with SIGTERM as SLURM warns a job before its
time limit (``--signal=TERM@...`` and ``scancel --signal=TERM`` signal every process of the job's steps):
the training processes checkpoint mid-epoch and exit, the SLURM job fails, Snakemake's retry resubmits it,
the new job resumes, and the model equals an uninterrupted two-process run bit for bit.

Brings the cluster up like tests/test_slurm_executor.py (same fixture); skips where SLURM cannot be installed.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from dag_fixtures import project_copy, run, tiny, tool_env
from test_preemption import assert_same_outputs
from test_slurm_executor import cluster  # noqa: F401  (the module-scoped cluster fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
RULE = "rule_train_wildcards_ddp"


def two_process_params(params: dict) -> dict:
    params = tiny(params)
    params["datasets"]["synthocc"]["generator"]["images_per_id"] = 10
    params["train"].update(epochs=3, checkpoint_period=1, log_period=1)  # epoch 3: slack for a late signal
    ddp = {"dataset": "synthocc", "method": "vit", "overrides": {"train": {"distributed": {"gpus": 2}}}}
    params["experiments"] = {"ddp": ddp, "ddp_twin": ddp}
    params["tables"]["tables"] = []
    return params


def jobs_of(project, comment: str) -> list[tuple[str, str]]:
    """(job id, state) of the SLURM jobs Snakemake submitted for a rule instance, oldest first."""
    lines = run(["squeue", "--states=all", "--noheader", "--format=%i|%k|%T"], project).stdout.split()
    return sorted((i, s) for i, k, s in (line.split("|") for line in lines) if k == comment)


def test_sigterm_to_a_two_process_slurm_job_is_retried_and_resumes_to_the_same_model(cluster, tmp_path):  # noqa: F811
    project = project_copy(tmp_path / "project", two_process_params)
    env = {**tool_env(project), "OCCREID_TRACKING": "0"}
    snakemake = subprocess.Popen(
        ["timeout", "-s", "INT", "900", "snakemake", "--profile", "workflow/profiles/slurm-test", "--retries", "1",
         "data/train/ddp/model.pt"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    log = project / "logs" / "train" / "ddp.log"
    signalled = None
    deadline = time.monotonic() + 600
    while signalled is None and time.monotonic() < deadline and snakemake.poll() is None:
        if log.is_file() and "epoch 2 iter 1/" in log.read_text(errors="replace"):
            running = [i for i, state in jobs_of(project, RULE) if state == "RUNNING"]
            if running:
                signalled = running[0]
                run(["scancel", "--signal=TERM", signalled], project)  # every process of the job's steps
        time.sleep(0.2)
    out, _ = snakemake.communicate(timeout=900)
    assert signalled is not None, f"the train job was never seen mid-epoch 2:\n{out[-4000:]}"
    assert snakemake.returncode == 0, f"snakemake failed:\n{out[-5000:]}"

    jobs = jobs_of(project, RULE)
    assert [s for _, s in jobs] == ["FAILED", "COMPLETED"] and jobs[0][0] == signalled, jobs
    first, second = (project / "logs" / "slurm" / "rule_train" / "ddp" / f"{i}.log" for i, _ in jobs)
    assert "stopped by SIGTERM" in first.read_text(errors="replace")
    assert "resuming epoch" in second.read_text(errors="replace")  # mid-epoch, where the first job stopped

    run(["python", "-m", "stages.train", "--experiment", "ddp_twin"], project, env=env)  # uninterrupted, local
    assert_same_outputs(project, "ddp_twin", "ddp")
