"""The demo DAG through Snakemake's SLURM executor on a real single-node SLURM cluster.

Installs Debian's SLURM packages when missing (scripts/slurm/install.sh), brings a loopback-only cluster up
in a temporary folder (scripts/slurm/up.sh), runs the tiny demo with the slurm-test profile (squeue polling:
there is no accounting daemon), checks the outputs and that every job ran as a COMPLETED SLURM job, and
stops the daemons it started (scripts/slurm/down.sh). Skips where SLURM cannot be installed (not root, no
apt, no mirror).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from dag_fixtures import ROOT, project_copy, run, tool_env

pytestmark = pytest.mark.slurm
SCRIPTS = ROOT / "scripts" / "slurm"
EXPECTED_JOBS = {"rule_prepare_data_wildcards_synthocc", "rule_train_wildcards_vit", "rule_evaluate_wildcards_vit",
                 "rule_tables"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: installs SLURM packages and starts munged/slurmctld/slurmd")
    install = subprocess.run([str(SCRIPTS / "install.sh")], capture_output=True, text=True, timeout=1200)
    if install.returncode == 3:
        pytest.skip(f"SLURM cannot be installed here: {install.stderr.strip().splitlines()[-1]}")
    assert install.returncode == 0, install.stderr
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "OCCREID_SLURM_DIR": str(state)}
    try:
        up = subprocess.run([str(SCRIPTS / "up.sh")], env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, f"up.sh failed:\n{up.stderr}"
        yield state
    finally:
        down = subprocess.run([str(SCRIPTS / "down.sh")], env=env, capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert not list(state.glob("*.pid")), "down.sh left pid files behind"


def test_demo_dag_runs_as_slurm_jobs(cluster, tmp_path):
    project = project_copy(tmp_path / "project")
    env = tool_env(project)
    proc = subprocess.run(["timeout", "-s", "INT", "900", "snakemake", "--profile", "workflow/profiles/slurm-test"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=960)
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"

    metrics = json.loads((project / "reports/eval/vit/metrics.json").read_text())
    assert metrics["experiment"] == "vit" and 0.0 <= metrics["subsets"]["all"]["mAP"] <= 1.0
    assert (project / "data/train/vit/model.pt").stat().st_size > 0
    assert (project / "reports/tables/index.md").is_file()

    # Every rule ran as its own SLURM job, which finished COMPLETED (squeue keeps them for MinJobAge=300 s).
    queue = run(["squeue", "--states=all", "--noheader", "--format=%k|%T|%i"], project).stdout.split()
    states = {line.split("|")[0]: line.split("|")[1] for line in queue}
    assert EXPECTED_JOBS <= set(states), f"SLURM saw {states}"
    assert {states[j] for j in EXPECTED_JOBS} == {"COMPLETED"}
    # ... and its SLURM log shows the stage's command running inside the allocation.
    train_logs = list((project / "logs/slurm/rule_train/vit").glob("*.log"))
    assert len(train_logs) == 1 and "python -m stages.train --experiment vit" in train_logs[0].read_text()
    assert "submitted with SLURM jobid" in proc.stdout + proc.stderr
