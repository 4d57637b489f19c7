"""The ``occluders`` stage in the DAG: a no-fan-out stage a method may need, built once and only on demand;
the train stage fills the method's ``occluders`` input; the stage itself on the demo params."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from occreid.errors import OccreidError
from occreid.occluders import OccluderLibrary
from stages import common
from stages import registry as reg
from stages import render_dvc
from stages.params import read_yaml
from stages.train import METHOD_INPUTS, with_inputs, without_inputs

ROOT = Path(__file__).resolve().parents[1]


def params_with(experiments: dict, methods=("vit", "roa")) -> dict:
    return {"datasets": {"synthocc": {}, "market1501": {}}, "methods": {m: {} for m in methods},
            "experiments": experiments}


@pytest.fixture
def roa_method(monkeypatch):
    """The registry with a throw-away method 'roa' that needs the occluder library, 'roa_clip' that also
    needs CLIP prompts (the real one, dpeformer, is declared in METHOD_NEEDS too)."""
    monkeypatch.setattr(reg, "METHOD_NEEDS", {**reg.METHOD_NEEDS, "roa": ("occluders",),
                                              "roa_clip": ("prompts", "occluders")})


def test_the_library_is_built_once_for_the_experiments_that_need_it(roa_method):
    plan = reg.build_plan(params_with({
        "v": {"dataset": "synthocc", "method": "vit"},
        "r": {"dataset": "synthocc", "method": "roa"},
        "r_market": {"dataset": "market1501", "method": "roa_clip"},
    }, methods=("vit", "roa", "roa_clip")))
    assert [j.id for j in plan.jobs_of("occluders")] == ["occluders"]
    job = plan.job("occluders")
    assert job.deps == () and job.outs == ("data/occluders",) and job.params == ("occluders",)
    assert job.cmd == "python -m stages.occluders" and job.stage.resources.gpus == 1
    edges = plan.edges()
    assert {v for u, v in edges if u == "occluders"} == {"train@r", "train@r_market"}
    assert plan.job("train", "r").deps == ("data/occluders", "data/prepared/synthocc")
    assert plan.job("train", "r_market").deps == ("data/occluders", "data/prepared/market1501",
                                                  "data/prompts/market1501")
    assert plan.job("train", "v").deps == ("data/prepared/synthocc",)
    ids = [j.id for j in plan.jobs]
    assert ids.index("occluders") < ids.index("train@r")  # a topological order


def test_without_a_method_needing_it_there_is_no_occluders_job(roa_method):
    plan = reg.build_plan(params_with({"v": {"dataset": "synthocc", "method": "vit"}}))
    assert plan.jobs_of("occluders") == [] and "occluders" not in render_dvc.render(plan)["stages"]
    assert reg.on_demand(reg.STAGES.get("occluders")) and not reg.on_demand(reg.STAGES.get("tables"))
    assert reg.needs("dpeformer") == ("occluders",)


def test_dvc_yaml_renders_the_stage_once_and_fills_the_need_slot(roa_method):
    plan = reg.build_plan(params_with({
        "v": {"dataset": "synthocc", "method": "vit"},
        "r": {"dataset": "synthocc", "method": "roa"},
    }))
    doc = render_dvc.render(plan)
    assert list(doc["stages"]) == ["prepare_data", "occluders", "train", "evaluate", "tables"]
    assert doc["stages"]["occluders"] == {"cmd": "python -m stages.occluders",
                                          "deps": ["stages/occluders.py", "occreid/occluders"],
                                          "params": ["occluders"], "outs": ["data/occluders"]}
    train = doc["stages"]["train"]
    assert train["foreach"]["r"]["need1"] == "data/occluders"
    assert train["foreach"]["v"]["need1"] == "data/prepared/synthocc"  # a spare slot


def test_a_method_cannot_need_a_per_experiment_stage(monkeypatch):
    monkeypatch.setattr(reg, "METHOD_NEEDS", {"bad": ("evaluate",)})
    with pytest.raises(KeyError, match="not a per-dataset or no-fan-out stage"):
        reg.needs("bad")


@dataclasses.dataclass
class RoaConfig:
    lr: float = 0.1
    occluders: str | None = None


def test_train_fills_the_occluders_input_and_model_pt_forgets_it():
    assert METHOD_INPUTS["occluders"] == "data/occluders"
    filled = with_inputs(RoaConfig(), "market1501")
    assert filled == RoaConfig(occluders="data/occluders")
    assert without_inputs(filled) == RoaConfig()


def test_a_hand_set_library_path_is_refused():
    spec = common.ExperimentSpec(dataset="synthocc", method="vit")
    with pytest.raises(OccreidError, match="sets methods.vit.occluders = 'my/lib'") as e:
        common.check_method_inputs({}, "x", spec, RoaConfig(occluders="my/lib"), "params.yaml")
    assert "leave it null" in e.value.fix


def test_the_stage_builds_the_demo_library(tmp_path, monkeypatch):
    """The real stage on the project's params (the demo's classical backend over scikit-image's photographs):
    inside the DAG when a method needs it, and by hand outside it."""
    from stages import occluders as stage

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    stage.main([])
    lib = OccluderLibrary.load(tmp_path / "data" / "occluders")
    manifest = json.loads((tmp_path / "data" / "occluders" / "manifest.json").read_text())
    demo = read_yaml(ROOT / "params.yaml")["occluders"]
    assert manifest["build"]["backend"] == demo["backend"] and len(manifest["build"]["sources"]) == 8
    assert 8 <= len(lib) <= 8 * demo["filters"]["max_per_image"]
    assert all(max(lib.size(i)) <= demo["filters"]["object_max_side"] for i in range(len(lib)))
    with Image.open(tmp_path / "data" / "occluders" / "contact_sheet.png") as sheet:
        assert sheet.width > 8 * demo["sheet_cell"]

    monkeypatch.setattr(reg, "METHOD_NEEDS", {**reg.METHOD_NEEDS, "vit": ("occluders",)})
    assert "occluders" in [j.id for j in reg.build_plan(read_yaml("params.yaml")).jobs]
    stage.main(["--out", "data/again"])  # as a job of the DAG: the same library
    again = {p.relative_to(tmp_path / "data/again"): p.read_bytes() for p in (tmp_path / "data/again").rglob("*.*")}
    first = {p.relative_to(tmp_path / "data/occluders"): p.read_bytes()
             for p in (tmp_path / "data/occluders").rglob("*.*")}
    assert again == first


def test_the_stage_reads_only_its_section(tmp_path, monkeypatch):
    from stages import occluders as stage

    params = read_yaml(ROOT / "params.yaml")
    params["occluders"]["source"] = str(tmp_path / "missing")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OccreidError, match="occluder source folder not found"):
        stage.main([])
    params["occluders"]["filters"]["min_aera"] = 0.1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(OccreidError, match="unknown params key 'occluders.filters.min_aera'"):
        stage.main([])


def test_where_lists_the_contact_sheet_when_the_library_is_in_the_dag(tmp_path, monkeypatch):
    from occreid.cli import locations

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    sheet = "data/occluders/contact_sheet.png"
    needed = any("occluders" in reg.needs(e["method"]) for e in read_yaml(ROOT / "params.yaml")["experiments"].values())
    assert (f"{sheet}   (not yet built)" in locations(tmp_path, tmp_path / "params.yaml")["sheets"]) == needed
    monkeypatch.setattr(reg, "METHOD_NEEDS", {**reg.METHOD_NEEDS, "vit": ("occluders",)})
    assert f"{sheet}   (not yet built)" in locations(tmp_path, tmp_path / "params.yaml")["sheets"]
    (tmp_path / "data" / "occluders").mkdir(parents=True)
    (tmp_path / sheet).write_bytes(b"png")
    assert locations(tmp_path, tmp_path / "params.yaml")["sheets"][-1] == sheet
