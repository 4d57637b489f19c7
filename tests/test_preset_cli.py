"""``occreid preset list|apply``: every preset in workflow/presets merges into the project's params.yaml, the
result passes the whole-file validation and renders a dvc.yaml with the preset's experiments; a preset the
validation refuses leaves params.yaml and dvc.yaml untouched."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from occreid.cli import main
from occreid.presets import list_presets
from stages import render_dvc
from stages.common import validate
from stages.params import read_yaml
from stages.registry import build_plan

ROOT = Path(__file__).resolve().parents[1]
PRESETS = list_presets(ROOT / "workflow" / "presets")


def project(tmp_path: Path) -> Path:
    """params.yaml, dvc.yaml and the presets folder: all ``preset apply`` reads and writes."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(ROOT / "workflow" / "presets", tmp_path / "workflow" / "presets")
    return tmp_path


def test_every_kind_of_preset_is_listed(capsys):
    assert main(["preset", "list", "--root", str(ROOT)]) == 0
    listed = capsys.readouterr().out.split()
    assert listed == PRESETS
    for name in ("dpm_occluded_duke", "dpm_occluded_reid", "dpm_dukemtmc", "clipreid_occluded_duke",
                 "clipreid_market1501", "dpmpp_occluded_duke", "dpmpp_occluded_reid"):
        assert name in listed


@pytest.mark.parametrize("name", PRESETS)
def test_applying_a_preset_validates_and_renders_its_experiments(tmp_path, name, capsys):
    root = project(tmp_path)
    demo = read_yaml(root / "params.yaml")["experiments"]
    preset = yaml.safe_load((root / "workflow" / "presets" / f"{name}.yaml").read_text())
    assert main(["preset", "apply", name, "--root", str(root)]) == 0
    assert f"applied preset {name}" in capsys.readouterr().out
    params = read_yaml(root / "params.yaml")
    validate(params, root / "params.yaml")
    render_dvc.check(root)  # dvc.yaml was re-rendered
    assert {k: params["experiments"][k] for k in demo} == demo  # the demo's experiments are unchanged
    plan = build_plan(params)
    for experiment, spec in preset["experiments"].items():
        assert params["experiments"][experiment] == spec
        test = spec.get("test_dataset", spec["dataset"])
        assert plan.job("evaluate", experiment).deps == (f"data/prepared/{test}", f"data/train/{experiment}/model.pt")
        if spec["method"] in ("clipreid", "dpmpp"):  # the CLIP methods' stage-1 prompts of the training set
            assert f"data/prompts/{spec['dataset']}" in plan.job("train", experiment).deps
    assert yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["train"]["foreach"].keys() >= \
        preset["experiments"].keys()


def test_all_presets_together_still_validate(tmp_path):
    """Presets that share a section set it identically, so they can all be applied to one params.yaml."""
    root = project(tmp_path)
    for name in PRESETS:
        assert main(["preset", "apply", name, "--root", str(root)]) == 0, name
    params = read_yaml(root / "params.yaml")
    validate(params, root / "params.yaml")
    assert params["experiments"]["dpm_occluded_reid"]["test_dataset"] == "occluded_reid"
    assert params["dataset_stages"]["occluded_duke"]["prompts"]["backbone"]["stride"] == 12
    assert params["prompts"] == read_yaml(ROOT / "params.yaml")["prompts"]  # the demo's shared section: untouched


def test_a_preset_the_validation_refuses_changes_nothing(tmp_path, capsys):
    root = project(tmp_path)
    bad = {"experiments": {"clip_duke": {"dataset": "dukemtmc", "method": "clipreid", "overrides": {"methods": {
        "clipreid": {"backbone": {"name": "clip_vit_b16", "pretrained": "default", "stride": 16}}}}}}}
    (root / "workflow" / "presets" / "bad.yaml").write_text(yaml.safe_dump(bad))
    before = {f: (root / f).read_text() for f in ("params.yaml", "dvc.yaml")}
    assert main(["preset", "apply", "bad", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "experiment 'clip_duke' (clipreid on dukemtmc) uses another backbone than the prompts stage" in err
    assert "prompts.dataset_backbones.dukemtmc" in err
    assert before == {f: (root / f).read_text() for f in before}
    assert main(["preset", "apply", "nope", "--root", str(root)]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_replicate_adds_seed_copies_that_validate_and_keep_the_comments(tmp_path, capsys):
    root = project(tmp_path)
    before = (root / "params.yaml").read_text()
    assert main(["replicate", "dpmpp", "--seeds", "3", "4", "--root", str(root)]) == 0  # the demo has 1 and 2
    assert "added dpmpp_seed3, dpmpp_seed4" in capsys.readouterr().out
    text = (root / "params.yaml").read_text()
    assert "# DPM++ (docs/METHOD.md): every DPM switch plus the four DPM++ parts" in text  # comments kept
    params = read_yaml(root / "params.yaml")
    validate(params, root / "params.yaml")
    render_dvc.check(root)
    original = params["experiments"]["dpmpp"]
    for seed in (3, 4):
        copy = params["experiments"][f"dpmpp_seed{seed}"]
        assert copy["replicate_of"] == "dpmpp" and copy["overrides"]["train"] == {"seed": seed}
        assert {k: v for k, v in copy["overrides"].items() if k != "train"} == original["overrides"]
    assert "train@dpmpp_seed4" in {j.id for j in build_plan(params).jobs}
    assert read_yaml(root / "params.yaml")["experiments"]["dpmpp"] == yaml.safe_load(before)["experiments"]["dpmpp"]
    # again with a seed that exists: refused, nothing written
    assert main(["replicate", "dpmpp", "--seeds", "4", "5", "--root", str(root)]) == 2
    assert "already has experiment(s) dpmpp_seed4" in capsys.readouterr().err
    assert main(["replicate", "dpmpp", "--seeds", "0", "--root", str(root)]) == 2  # the original's own seed
    assert "trains with seed 0, as 'dpmpp' does" in capsys.readouterr().err
    assert read_yaml(root / "params.yaml") == params
