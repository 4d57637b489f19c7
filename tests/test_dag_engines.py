"""DVC and Snakemake see the same DAG as stages/registry.py, and both re-run exactly what a params change touches.

Runs the real dvc.yaml (rendered) and Snakefile in a temporary copy of the project whose stage modules are
stubs that write their declared outputs (fresh content every run) and append their job id to runs.log, so
the engines' behaviour is tested in seconds without training anything.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages import registry as reg
from stages import render_dvc
from stages.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STUB = '''"""Stub stage for tests: write the job's declared outputs, log the job id."""
import argparse, os, sys, uuid
from pathlib import Path
from stages.params import read_yaml
from stages.registry import build_plan

def main(stage):
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset"); parser.add_argument("--experiment"); parser.add_argument("--variant")
    args = parser.parse_args()
    key = "-".join(filter(None, (args.dataset, args.variant))) or args.experiment
    job = build_plan(read_yaml("params.yaml")).job(stage, key)
    missing = [d for d in job.deps if not Path(d).exists()]
    if missing:
        sys.exit(f"{job.id}: inputs missing: {missing}")
    for out, path in zip(job.stage.outs, job.outs):
        path = Path(path)
        if out.directory:
            path.mkdir(parents=True, exist_ok=True)
            (path / "content.txt").write_text(uuid.uuid4().hex)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("epoch,loss\\n1,0.5\\n" if path.suffix == ".csv" else '{"nonce": "%s"}' % uuid.uuid4().hex)
    with open("runs.log", "a") as log:
        log.write(job.id + "\\n")
'''


def env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OCCREID_TRACKING": "0"}


def run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def stub_repo(dest: Path, experiments: dict | None = None) -> Path:
    """A copy of the project's DAG files with stub stages; ``experiments`` replaces the demo's."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("stages", "occreid"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("Snakefile", "params.yaml", ".dvcignore", "environment.yml"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "workflow", dest / "workflow", ignore=ignore)
    for stage in reg.ORDER:
        (dest / "stages" / f"{stage}.py").write_text(f"from stages._stub import main\nmain({stage!r})\n")
    (dest / "stages" / "_stub.py").write_text(STUB)
    if experiments is not None:
        text = (dest / "params.yaml").read_text()
        head = text[: text.index("\nexperiments:")]
        # every given experiment runs (the demo's profiles name the demo's rows)
        head = re.sub(r"(?m)^profile: .*$", "profile: null", head)
        (dest / "params.yaml").write_text(head + "\n" + yaml.safe_dump({"experiments": experiments}))
    render_dvc.write(dest)
    return dest


def edit_params(repo: Path, change) -> None:
    """Apply ``change(params_dict)`` to the copy's params.yaml (comments are lost; it is a throw-away copy)."""
    params = read_yaml(repo / "params.yaml")
    change(params)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def runs(repo: Path) -> list[str]:
    log = repo / "runs.log"
    return log.read_text().split() if log.exists() else []


def dvc_graph(repo: Path) -> tuple[set[str], set[tuple[str, str]]]:
    dot = run([str(BIN / "dvc"), "dag", "--dot"], repo).stdout
    nodes = set(re.findall(r'^"([^"]+)";$', dot, re.M))
    edges = set(re.findall(r'^"([^"]+)" -> "([^"]+)";$', dot, re.M))
    return nodes, edges


def snakemake_graph(repo: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """Jobs of a forced dry run (rule@wildcard) and the edges their input/output files imply."""
    out = run([str(BIN / "snakemake"), "-n", "-F", "-c1"], repo).stdout
    jobs = []
    for block in re.split(r"\n(?=\[.*\]\nrule |rule )", out):
        m = re.search(r"^rule (\w+):", block, re.M)
        if not m or m.group(1) == "all":
            continue
        field = lambda name: (re.search(rf"^\s+{name}: (.*)$", block, re.M) or [None, ""])[1]
        wild = field("wildcards")  # "dataset=synthocc, spt_variant=default": the job key joins the values
        job_id = m.group(1) + (f"@{'-'.join(kv.split('=', 1)[1] for kv in wild.split(', '))}" if wild else "")
        jobs.append((job_id, set(filter(None, field("input").split(", "))), set(field("output").split(", "))))
    produced = {path: jid for jid, _, outs in jobs for path in outs}
    edges = {(produced[path], jid) for jid, ins, _ in jobs for path in ins if path in produced}
    return {jid for jid, _, _ in jobs}, edges


TWO_DATASETS = {
    "vit": {"dataset": "synthocc", "method": "vit", "overrides": {}},
    "vit_market": {"dataset": "market1501", "method": "vit", "overrides": {"train": {"epochs": 1}}},
}


@pytest.fixture
def dvc_repo(tmp_path):
    repo = stub_repo(tmp_path / "repo", TWO_DATASETS)
    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], repo)
    return repo


def test_dvc_and_snakemake_build_the_registry_graph(dvc_repo):
    plan = reg.build_plan(read_yaml(dvc_repo / "params.yaml"))
    jobs = {j.id for j in plan.jobs}
    assert jobs == {"prepare_data@synthocc", "prepare_data@market1501", "train@vit", "train@vit_market",
                    "evaluate@vit", "evaluate@vit_market", "tables"}
    assert dvc_graph(dvc_repo) == (jobs, plan.edges())
    assert snakemake_graph(dvc_repo) == (jobs, plan.edges())


# The CLIP methods' per-dataset stages, a cross-dataset test (Occluded-REID with a Market-1501 model) and an
# alpha1 sweep row with its own partner table (two rows at the same value share it).
WITH_NEEDS = {
    "vit": {"dataset": "synthocc", "method": "vit"},
    "clip": {"dataset": "market1501", "method": "clipreid"},
    "pp_occ": {"dataset": "market1501", "test_dataset": "occluded_reid", "method": "dpmpp"},
    "pp_a1": {"dataset": "market1501", "method": "dpmpp", "overrides": {"spt": {"alpha1": 0.5}}},
    "pp_a1_again": {"dataset": "market1501", "method": "dpmpp",
                    "overrides": {"spt": {"alpha1": 0.5}, "train": {"epochs": 2}}},
}


def test_dvc_and_snakemake_agree_on_method_needs_and_test_datasets(tmp_path):
    repo = stub_repo(tmp_path / "repo", WITH_NEEDS)
    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], repo)
    plan = reg.build_plan(read_yaml(repo / "params.yaml"))
    jobs = {j.id for j in plan.jobs}
    assert {j for j in jobs if "@" in j and j.split("@")[0] in ("prepare_data", "prompts", "saliency", "spt_sets")} \
        == {"prepare_data@synthocc", "prepare_data@market1501", "prepare_data@occluded_reid", "prompts@market1501",
            "saliency@market1501", "spt_sets@market1501-default", "spt_sets@market1501-alpha1-0p5"}
    assert ("spt_sets@market1501-alpha1-0p5", "train@pp_a1_again") in plan.edges()
    assert ("prepare_data@occluded_reid", "evaluate@pp_occ") in plan.edges()
    assert ("prepare_data@market1501", "evaluate@pp_occ") not in plan.edges()
    assert dvc_graph(repo) == (jobs, plan.edges())
    assert snakemake_graph(repo) == (jobs, plan.edges())


def test_dvc_and_snakemake_agree_on_one_occluder_library_per_training_dataset(tmp_path):
    """DPEFormer's libraries: one per dataset a dpeformer row trains on (market1501's from its own
    dataset_stages section, tracked at that key), none for a dataset only vit trains on."""
    rows = {**TWO_DATASETS, "roa": {"dataset": "synthocc", "method": "dpeformer"},
            "roa_market": {"dataset": "market1501", "test_dataset": "occluded_reid", "method": "dpeformer"}}
    repo = stub_repo(tmp_path / "repo", rows)
    edit_params(repo, lambda p: p.update(dataset_stages={"market1501": {"occluders": {"max_images": 100}}}))
    render_dvc.write(repo)
    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], repo)
    plan = reg.build_plan(read_yaml(repo / "params.yaml"))
    jobs = {j.id for j in plan.jobs}
    assert {j for j in jobs if j.startswith("occluders")} == {"occluders@synthocc", "occluders@market1501"}
    assert {("occluders@synthocc", "train@roa"), ("occluders@market1501", "train@roa_market")} <= plan.edges()
    assert not {("occluders@synthocc", "train@vit"), ("occluders@market1501", "train@roa")} & plan.edges()
    assert plan.job("occluders", "market1501").params == ("dataset_stages.market1501.occluders",)
    assert dvc_graph(repo) == (jobs, plan.edges())
    assert snakemake_graph(repo) == (jobs, plan.edges())


def test_snakemake_lint_is_clean(dvc_repo):
    proc = run([str(BIN / "snakemake"), "--lint"], dvc_repo)
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_dvc_reruns_exactly_the_stages_whose_params_changed(dvc_repo):
    dvc = str(BIN / "dvc")
    run([dvc, "repro", "-q"], dvc_repo)
    assert sorted(runs(dvc_repo)) == sorted(j.id for j in reg.build_plan(read_yaml(dvc_repo / "params.yaml")).jobs)
    lock = yaml.safe_load((dvc_repo / "dvc.lock").read_text())["stages"]
    assert set(lock["evaluate@vit"]["params"]["params.yaml"]) == {"evaluate", "experiments.vit"}
    assert set(lock["prepare_data@market1501"]["params"]["params.yaml"]) == {"datasets.market1501", "prepare_data"}

    (dvc_repo / "runs.log").unlink()
    run([dvc, "repro", "-q"], dvc_repo)
    assert runs(dvc_repo) == []  # nothing changed, nothing runs

    edit_params(dvc_repo, lambda p: p["evaluate"].update(save_topk=7))
    run([dvc, "repro", "-q"], dvc_repo)
    assert sorted(runs(dvc_repo)) == ["evaluate@vit", "evaluate@vit_market", "tables"]

    (dvc_repo / "runs.log").unlink()
    edit_params(dvc_repo, lambda p: p["experiments"]["vit_market"]["overrides"]["train"].update(epochs=2))
    run([dvc, "repro", "-q"], dvc_repo)
    assert sorted(runs(dvc_repo)) == ["evaluate@vit_market", "tables", "train@vit_market"]


@pytest.mark.slow
def test_snakemake_reruns_exactly_the_stages_whose_params_changed(tmp_path):
    repo = stub_repo(tmp_path / "repo", TWO_DATASETS)
    smk = str(BIN / "snakemake")
    run([smk, "-c2"], repo)
    assert len(runs(repo)) == 7
    assert run([smk, "-n", "-c1"], repo).stdout.count("rule ") == 0  # up to date

    edit_params(repo, lambda p: p["evaluate"].update(save_topk=7))
    (repo / "runs.log").unlink()
    run([smk, "-c2"], repo)
    assert sorted(runs(repo)) == ["evaluate@vit", "evaluate@vit_market", "tables"]

    # Mixed use: `dvc commit -f` records Snakemake's results; DVC then has nothing to re-run.
    dvc = str(BIN / "dvc")
    run([dvc, "init", "--no-scm", "-q"], repo)
    run([dvc, "commit", "-f", "-q"], repo)
    assert "up to date" in run([dvc, "status"], repo).stdout
