"""End to end: the real stages on a tiny demo, with DVC and with Snakemake, in throw-away copies.

``dvc repro`` runs the whole DAG; a second ``dvc repro`` runs nothing; changing an evaluation-only param
re-runs evaluate and tables only; ``snakemake -c2`` in a fresh copy produces the same data and metrics.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from dag_fixtures import project_copy, run
from stages.params import read_yaml

pytestmark = pytest.mark.slow
from dag_fixtures import TINY_EXPERIMENTS, TINY_SPT_VARIANTS, tiny_needs_occluders

ALL_JOBS = sorted(["prepare_data@synthocc", "prompts@synthocc", "saliency@synthocc", "tables"]
                  + [f"spt_sets@synthocc-{v}" for v in TINY_SPT_VARIANTS]
                  + [f"{s}@{e}" for s in ("train", "evaluate") for e in TINY_EXPERIMENTS]
                  + (["occluders@synthocc"] if tiny_needs_occluders() else []))


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def files(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (Snakemake's directory marker aside)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".snakemake_timestamp"}


def results(project: Path, experiment: str = "vit") -> dict:
    metrics = json.loads((project / f"reports/eval/{experiment}/metrics.json").read_text())
    train = json.loads((project / f"data/train/{experiment}/train_metrics.json").read_text())
    return {"subsets": metrics["subsets"], "cmc": metrics["cmc"],
            "train": {k: v for k, v in train.items() if k not in ("seconds", "images_per_s")}}


def in_dependency_order(order: list[str], project: Path) -> bool:
    """Every job ran after the jobs it depends on."""
    from stages.registry import build_plan

    pos = {j: i for i, j in enumerate(order)}
    return all(pos[u] < pos[v] for u, v in build_plan(read_yaml(project / "params.yaml")).edges())


def test_demo_with_dvc_then_snakemake_gives_the_same_results(tmp_path):
    dvc = project_copy(tmp_path / "dvc")
    run(["dvc", "init", "--no-scm", "-q"], dvc)
    first = run(["dvc", "repro"], dvc)
    assert sorted(ran(first.stdout)) == ALL_JOBS and in_dependency_order(ran(first.stdout), dvc)
    assert (dvc / "reports/tables/index.md").is_file() and (dvc / "reports/eval/vit/ranks.npz").is_file()
    assert set(yaml.safe_load((dvc / "dvc.lock").read_text())["stages"]) == set(ALL_JOBS)
    expected = results(dvc)
    assert 0.0 <= expected["subsets"]["all"]["mAP"] <= 1.0 and expected["train"]["epochs"] == 1
    for experiment in TINY_EXPERIMENTS:  # every method trained and was evaluated on occluded/whole-body queries
        assert set(results(dvc, experiment)["subsets"]) == {"all", "occluded", "whole_body"}, experiment
    import torch  # model.pt of a CLIP method does not point at the prompts / partner folders any more

    saved = json.loads(torch.load(dvc / "data/train/dpmpp/model.pt", weights_only=True)["method_config"])
    assert saved["text_features"] is None and saved["spt_partners"] is None
    saved = json.loads(torch.load(dvc / "data/train/dpeformer/model.pt", weights_only=True)["method_config"])
    assert saved["occluders"] is None and (dvc / "data/occluders/synthocc/manifest.json").is_file()
    run_config = json.loads(torch.load(dvc / "data/train/dpmpp_alpha1_0p9/model.pt", weights_only=True)["config"])
    assert run_config["spt"]["variant"] == "alpha1-0p9" and run_config["spt"]["alpha1"] == 0.9
    main_table = (dvc / "reports/tables/main.md").read_text()
    assert all(label in main_table for label in ("CLIP-ReID", "DPM++", "ViT baseline", "DPEFormer"))
    # the alpha1 sweep: each row's partner table is built with its value, and the plot has all three points
    for variant, alpha1 in (("default", 0.7), ("alpha1-0p5", 0.5), ("alpha1-0p9", 0.9)):
        assert json.loads((dvc / f"data/spt/synthocc/{variant}/spt.json").read_text())["config"]["alpha1"] == alpha1
    assert (dvc / "reports/tables/sweep_dpmpp_alpha1.png").stat().st_size > 5000
    assert "alpha1 = 0.9" in (dvc / "reports/tables/dpmpp_alpha1.md").read_text()

    start = time.perf_counter()
    again = run(["dvc", "repro"], dvc)
    assert ran(again.stdout) == [] and time.perf_counter() - start < 30

    params = read_yaml(dvc / "params.yaml")
    params["evaluate"]["max_rank"] = 5  # evaluation-only: a shorter CMC curve
    (dvc / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert sorted(ran(run(["dvc", "repro"], dvc).stdout)) == sorted(
        [f"evaluate@{e}" for e in TINY_EXPERIMENTS] + ["tables"])
    shorter = results(dvc)
    assert shorter["train"] == expected["train"] and shorter["cmc"]["all"] == expected["cmc"]["all"][:5]

    smk = project_copy(tmp_path / "smk")
    run(["snakemake", "-c2"], smk)
    assert files(smk / "data/prepared/synthocc") == files(dvc / "data/prepared/synthocc")
    if tiny_needs_occluders():  # the ROA library: the same bytes from both engines
        assert "contact_sheet.png" in files(dvc / "data/occluders/synthocc")
        assert files(smk / "data/occluders/synthocc") == files(dvc / "data/occluders/synthocc")
    assert results(smk) == expected
    for experiment in ("clipreid", "dpmpp", "dpmpp_alpha1_0p9"):  # the CLIP methods read prompts / partner tables
        assert results(smk, experiment)["train"] == results(dvc, experiment)["train"], experiment
    assert sorted(p.name for p in (smk / "reports/tables").iterdir() if p.name != ".snakemake_timestamp") == \
        sorted(p.name for p in (dvc / "reports/tables").iterdir())
