"""Test helpers for the pipeline part: a throw-away copy of the project with a TINY demo config.

The end-to-end tests (DVC, Snakemake, SLURM) run the real stages on a synthocc of a few identities and one
epoch, in a copy under ``tmp_path``, so they never touch the project's data/, reports/ or mlflow.db.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from stages import render_dvc
from stages.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPY = ("stages", "occreid", "workflow", "Snakefile", "params.yaml", ".dvcignore", "environment.yml", "pyproject.toml")


# One per method, so every stage runs, plus the alpha1 sweep rows: their own partner tables (spt_sets variants)
# and the sweep plot. No ablation rows.
TINY_EXPERIMENTS = ("vit", "clipreid", "dpm", "dpeformer", "dpmpp", "dpmpp_alpha1_0p5", "dpmpp_alpha1_0p9")
TINY_SPT_VARIANTS = ("default", "alpha1-0p5", "alpha1-0p9")


def tiny(params: dict) -> dict:
    """The demo shrunk to seconds: 8 + 8 identities, 64x32 images, one epoch of a few batches, one experiment
    per method (the ablation rows and their tables left out), two prompt-learning epochs."""
    gen = params["datasets"]["synthocc"]["generator"]
    gen.update(num_train_ids=8, num_test_ids=8, images_per_id=6, queries_per_id=1, num_cameras=3, height=64,
               width=32, contact_sheet_ids=2, contact_sheet_gallery=2)
    params["model"]["img_size"] = [64, 32]
    train = params["train"]
    train.update(epochs=1, ids_per_batch=4, images_per_id=2, log_period=1)
    train["transforms"]["size"] = [64, 32]
    train["transforms"]["pad"] = 2
    params["evaluate"]["max_rank"] = 10
    params["experiments"] = {k: v for k, v in params["experiments"].items() if k in TINY_EXPERIMENTS}
    params["profile"] = None  # all of these (the profiles' lists name the demo's other rows)
    tables = params["tables"]["tables"]
    params["tables"]["tables"] = [t for t in tables if set(t.get("rows") or []) <= set(TINY_EXPERIMENTS)]
    params["prompts"].update(epochs=2, warmup_epochs=1)
    params["saliency"]["overlay_images"] = 2
    params["spt"]["sheet_samples"] = 2
    params["occluders"].update(max_images=3, sheet_objects=8)  # synthocc's ROA library (when a tiny row needs it)
    return params


def tiny_needs_occluders() -> bool:
    """Whether some tiny experiment's method trains with the occluder library (so the DAG builds it)."""
    from stages.registry import needs

    experiments = read_yaml(ROOT / "params.yaml")["experiments"]
    return any("occluders" in needs(experiments[e]["method"]) for e in TINY_EXPERIMENTS if e in experiments)


def project_copy(dest: Path, change=tiny) -> Path:
    """Copy the project's pipeline files to ``dest``, apply ``change`` to params.yaml, re-render dvc.yaml.
    ``change=None``: params.yaml as committed (comments kept), what a clean clone has."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy(src, dest / name)
    if change is not None:
        params = change(read_yaml(ROOT / "params.yaml"))
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    render_dvc.write(dest)
    return dest


def tool_env(project: Path) -> dict:
    """Environment for the engines: this Python's tools first on PATH, MLflow in the copy, no GPU."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}", "CUDA_VISIBLE_DEVICES": "",
            "OCCREID_PROJECT_ROOT": str(project), "PYTHONPATH": str(project)}


def run(cmd: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env or tool_env(cwd), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc
