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
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
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
    assert capsys.readouterr().out.splitlines() == [
        "prepare_data@synthocc",
        "train@vit  <- prepare_data@synthocc",
        "evaluate@vit  <- prepare_data@synthocc, train@vit",
        "tables  <- evaluate@vit",
    ]


def test_params_check_ok_and_error_exit_2(project, capsys):
    assert main(["params", "check"]) == 0
    assert capsys.readouterr().out.strip() == "params.yaml: OK (1 experiment(s), 4 job(s))"
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
    assert info == {
        "tables": ["reports/tables/index.md   (not yet built)"],
        "metrics": ["reports/eval/vit/metrics.json"],
        "models": ["data/train/vit/model.pt   (not yet built)"],
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
