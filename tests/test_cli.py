"""The ``occreid`` command: dag, params check, where, and the stage aliases."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from occreid.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path, monkeypatch):
    text = (ROOT / "params.yaml").read_text().replace("\nprofile: fast\n", "\nprofile: full\n")  # every experiment
    (tmp_path / "params.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/some/mlflow.db")
    return tmp_path


def test_dag_write_then_check_then_stale(project, capsys):
    assert main(["dag", "--check"]) == 1
    assert "dvc.yaml: does not exist" in capsys.readouterr().err
    assert main(["dag", "--write"]) == 0
    assert main(["dag", "--check"]) == 0
    assert capsys.readouterr().out.splitlines() == ["wrote dvc.yaml", "dvc.yaml is up to date"]
    text = (project / "params.yaml").read_text().replace("vit: {dataset: synthocc", "vit2: {dataset: synthocc")
    (project / "params.yaml").write_text(text)
    assert main(["dag", "--check"]) == 1
    err = capsys.readouterr().err
    assert "dvc.yaml: is stale" in err and "+  train" not in err and "vit2" in err


def test_dag_lists_jobs_with_their_upstream(project, capsys):
    assert main(["dag"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        "prepare_data@synthocc",
        "prompts@synthocc  <- prepare_data@synthocc",
        "saliency@synthocc  <- prepare_data@synthocc",
        "spt_sets@synthocc-alpha1-0p5  <- prepare_data@synthocc, saliency@synthocc",
    ]
    assert "train@vit  <- prepare_data@synthocc" in lines
    assert "train@dpmpp  <- prepare_data@synthocc, prompts@synthocc, spt_sets@synthocc-default" in lines
    assert "train@dpmpp_alpha1_0p5  <- prepare_data@synthocc, prompts@synthocc, spt_sets@synthocc-alpha1-0p5" in lines
    assert "evaluate@vit  <- prepare_data@synthocc, train@vit" in lines
    assert lines[-1].startswith("tables  <- evaluate@clipreid, evaluate@clipreid_seed1, ")
    assert len(lines) == demo_job_count()[1]


def demo_job_count() -> tuple[int, int]:
    """(experiments, jobs) of the demo params.yaml, counted from the file: 3 per-dataset jobs (prepare_data,
    prompts, saliency), the default partner table + one per distinct ``spt`` override, the occluder library
    of each dataset a dpeformer row trains on, train + evaluate per experiment, tables."""
    import yaml

    experiments = yaml.safe_load(open("params.yaml"))["experiments"].values()
    n_spt = 1 + len({str(e["overrides"]["spt"]) for e in experiments if (e.get("overrides") or {}).get("spt")})
    n_occluders = len({e["dataset"] for e in experiments if e["method"] == "dpeformer"})
    return len(experiments), 3 + n_spt + n_occluders + 2 * len(experiments) + 1


def test_params_check_ok_and_error_exit_2(project, capsys):
    assert main(["params", "check"]) == 0
    n_exp, n_jobs = demo_job_count()
    assert capsys.readouterr().out.strip() == f"params.yaml: OK ({n_exp} experiment(s), {n_jobs} job(s))"
    text = (project / "params.yaml").read_text().replace("  epochs:", "  epochz:")
    (project / "params.yaml").write_text(text)
    assert main(["params", "check"]) == 2
    err = capsys.readouterr().err
    assert "error: params.yaml: unknown params key 'train.epochz'" in err and "did you mean 'epochs'" in err


def test_where_names_tables_metrics_models_and_the_mlflow_store(project, capsys):
    (project / "reports" / "eval" / "vit").mkdir(parents=True)
    (project / "reports" / "eval" / "vit" / "metrics.json").write_text("{}")
    assert main(["where", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "reports/eval/vit/metrics.json" in info["metrics"]  # built: no "(not yet built)"
    assert info["metrics"][0] == "reports/eval/clipreid/metrics.json   (not yet built)" and len(info["metrics"]) == len(
        __import__("yaml").safe_load(open("params.yaml"))["experiments"])
    assert "data/train/dpmpp/model.pt   (not yet built)" in info["models"]
    assert info["sheets"][:3] == ["data/prepared/synthocc/contact_sheet.png   (not yet built)",
                                  "data/saliency/synthocc/overlay.png   (not yet built)",
                                  "data/spt/synthocc/alpha1-0p5/transfer_sheet.png   (not yet built)"]
    assert "data/spt/synthocc/default/transfer_sheet.png   (not yet built)" in info["sheets"]
    assert {k: v for k, v in info.items() if k not in ("metrics", "models", "sheets")} == {
        "tables": ["reports/tables/index.md   (not yet built)"],
        "mlflow": {"uri": "sqlite:////tmp/some/mlflow.db",
                   "ui": "mlflow ui --backend-store-uri sqlite:////tmp/some/mlflow.db"},
    }
    assert main(["where"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tables:   reports/tables/index.md") and "MLflow:   sqlite:////tmp/some/mlflow.db" in out


def test_stage_alias_runs_the_stage_and_exits_2_on_a_user_error(project):
    proc = subprocess.run([sys.executable, "-m", "occreid", "train", "--experiment", "nope"], cwd=project,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no job 'train@nope'" in proc.stderr and "Traceback" not in proc.stderr
