"""The ``occluders`` stage in the DAG: a per-dataset stage (one library per training dataset that some experiment's
method needs it on), configured like the other per-dataset stages (the shared section, or the dataset's own
``dataset_stages.<dataset>.occluders``); the train stage fills the method's ``occluders`` input with its dataset's
library; the stage itself on the demo params."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from occreid.errors import OccreidError
from occreid.occluders import OccluderLibrary, OccludersConfig
from stages import common
from stages import registry as reg
from stages import render_dvc
from stages.params import from_dict, read_yaml
from stages.train import METHOD_INPUTS, with_inputs, without_inputs

ROOT = Path(__file__).resolve().parents[1]
DEMO = read_yaml(ROOT / "params.yaml")


def params_with(experiments: dict, methods=("vit", "roa"), **extra) -> dict:
    return {"datasets": {"synthocc": {}, "market1501": {}, "dukemtmc": {}}, "methods": {m: {} for m in methods},
            "experiments": experiments, **extra}


@pytest.fixture
def roa_method(monkeypatch):
    """The registry with a throw-away method 'roa' that needs the occluder library, 'roa_clip' that also
    needs CLIP prompts (the real one, dpeformer, is declared in METHOD_NEEDS too)."""
    monkeypatch.setattr(reg, "METHOD_NEEDS", {**reg.METHOD_NEEDS, "roa": ("occluders",),
                                              "roa_clip": ("prompts", "occluders")})


def test_one_library_per_training_dataset_that_a_method_needs_it_on(roa_method):
    plan = reg.build_plan(params_with({
        "v": {"dataset": "synthocc", "method": "vit"},
        "r": {"dataset": "synthocc", "method": "roa"},
        "r_again": {"dataset": "synthocc", "method": "roa"},
        "r_market": {"dataset": "market1501", "test_dataset": "dukemtmc", "method": "roa_clip"},
        "v_duke": {"dataset": "dukemtmc", "method": "vit"},  # no method pastes on dukemtmc: no library for it
    }, methods=("vit", "roa", "roa_clip")))
    assert [j.id for j in plan.jobs_of("occluders")] == ["occluders@market1501", "occluders@synthocc"]
    job = plan.job("occluders", "synthocc")
    assert job.deps == () and job.outs == ("data/occluders/synthocc",) and job.params == ("occluders",)
    assert job.cmd == "python -m stages.occluders --dataset synthocc" and job.stage.resources.gpus == 1
    edges = plan.edges()
    assert {v for u, v in edges if u == "occluders@synthocc"} == {"train@r", "train@r_again"}
    assert {v for u, v in edges if u == "occluders@market1501"} == {"train@r_market"}  # its training dataset's
    assert plan.job("train", "r").deps == ("data/occluders/synthocc", "data/prepared/synthocc")
    assert plan.job("train", "r_market").deps == ("data/occluders/market1501", "data/prepared/market1501",
                                                  "data/prompts/market1501")
    assert plan.job("train", "v").deps == ("data/prepared/synthocc",)
    ids = [j.id for j in plan.jobs]
    assert ids.index("occluders@synthocc") < ids.index("train@r")  # a topological order


def test_without_a_method_needing_it_there_is_no_occluders_job(roa_method):
    plan = reg.build_plan(params_with({"v": {"dataset": "synthocc", "method": "vit"}}))
    assert plan.jobs_of("occluders") == [] and "occluders" not in render_dvc.render(plan)["stages"]
    assert reg.needs("dpeformer") == ("occluders",)


def test_a_datasets_own_section_configures_its_library_alone(roa_method):
    """dataset_stages.market1501.occluders on the code's defaults (nothing of the shared section), tracked at that
    key; synthocc keeps the shared section."""
    shared = {"backend": "classical", "image_max_side": 200, "filters": {"max_per_image": 3}}
    params = params_with({"r": {"dataset": "synthocc", "method": "roa"},
                          "r_market": {"dataset": "market1501", "method": "roa"}},
                         occluders=shared, dataset_stages={"market1501": {"occluders": {"max_images": 100}}})
    plan = reg.build_plan(params)
    market, demo = plan.job("occluders", "market1501"), plan.job("occluders", "synthocc")
    assert market.params == ("dataset_stages.market1501.occluders",) and demo.params == ("occluders",)
    assert common.StageParams(params, market).dataset_section(OccludersConfig) == OccludersConfig(max_images=100)
    assert common.StageParams(params, demo).dataset_section(OccludersConfig) == from_dict(OccludersConfig, shared)
    with pytest.raises(OccreidError, match="reads params key 'occluders'"):  # the gate: not the shared section
        common.StageParams(params, market).get("occluders")


def test_dvc_yaml_renders_one_item_per_library_and_fills_the_need_slot(roa_method):
    plan = reg.build_plan(params_with({
        "v": {"dataset": "synthocc", "method": "vit"},
        "r": {"dataset": "synthocc", "method": "roa"},
        "r_market": {"dataset": "market1501", "method": "roa"},
    }, dataset_stages={"market1501": {"occluders": {"max_images": 100}}}))
    doc = render_dvc.render(plan)
    assert list(doc["stages"]) == ["prepare_data", "occluders", "train", "evaluate", "tables"]
    assert doc["stages"]["occluders"] == {
        "foreach": {"market1501": {"dataset": "market1501", "config": "dataset_stages.market1501.occluders"},
                    "synthocc": {"dataset": "synthocc", "config": "occluders"}},
        "do": {"cmd": "python -m stages.occluders --dataset ${item.dataset}",
               "deps": ["stages/occluders.py", "occreid/occluders"], "params": ["${item.config}"],
               "outs": ["data/occluders/${item.dataset}"]}}
    train = doc["stages"]["train"]
    assert train["foreach"]["r"]["need1"] == "data/occluders/synthocc"
    assert train["foreach"]["r_market"]["need1"] == "data/occluders/market1501"
    assert train["foreach"]["v"]["need1"] == "data/prepared/synthocc"  # a spare slot


@pytest.mark.parametrize("stage", ["evaluate", "tables"])
def test_a_method_can_need_only_a_per_dataset_stage(monkeypatch, stage):
    monkeypatch.setattr(reg, "METHOD_NEEDS", {"bad": (stage,)})
    with pytest.raises(KeyError, match=f"names '{stage}', which is not a per-dataset stage"):
        reg.needs("bad")


@dataclasses.dataclass
class RoaConfig:
    lr: float = 0.1
    occluders: str | None = None


def test_train_fills_the_occluders_input_with_its_datasets_library_and_model_pt_forgets_it():
    assert METHOD_INPUTS["occluders"] == "data/occluders/{dataset}"
    filled = with_inputs(RoaConfig(), "market1501")
    assert filled == RoaConfig(occluders="data/occluders/market1501")
    assert without_inputs(filled) == RoaConfig()


def test_a_hand_set_library_path_is_refused():
    spec = common.ExperimentSpec(dataset="synthocc", method="vit")
    with pytest.raises(OccreidError, match="sets methods.vit.occluders = 'my/lib'") as e:
        common.check_method_inputs({}, "x", spec, RoaConfig(occluders="my/lib"), "params.yaml")
    assert "leave it null" in e.value.fix


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*.*")}


def test_the_stage_builds_the_demo_library(tmp_path, monkeypatch):
    """The real stage on the project's params (the demo's classical backend over scikit-image's photographs):
    synthocc's library inside the DAG, and by hand that of a dataset no experiment pastes on (the same section,
    so the same bytes)."""
    from stages import occluders as stage

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    assert "occluders@synthocc" in [j.id for j in reg.build_plan(DEMO).jobs]  # the demo's dpeformer rows need it
    stage.main(["--dataset", "synthocc"])
    folder = tmp_path / "data" / "occluders" / "synthocc"
    lib = OccluderLibrary.load(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    demo = DEMO["occluders"]
    assert manifest["build"]["backend"] == demo["backend"] and len(manifest["build"]["sources"]) == 8
    assert 8 <= len(lib) <= 8 * demo["filters"]["max_per_image"]
    assert all(max(lib.size(i)) <= demo["filters"]["object_max_side"] for i in range(len(lib)))
    with Image.open(folder / "contact_sheet.png") as sheet:
        assert sheet.width > 8 * demo["sheet_cell"]

    assert "occluders@dukemtmc" not in [j.id for j in reg.build_plan(DEMO).jobs]
    stage.main(["--dataset", "dukemtmc"])  # outside the DAG: the job it would be
    assert _files(tmp_path / "data" / "occluders" / "dukemtmc") == _files(folder)
    with pytest.raises(OccreidError, match="dataset 'dukemtmcc' has no entry under 'datasets'") as e:
        stage.main(["--dataset", "dukemtmcc"])
    assert "dukemtmc" in e.value.fix


def test_the_stage_reads_only_its_datasets_section(tmp_path, monkeypatch):
    from stages import occluders as stage

    params = copy.deepcopy(DEMO)
    params["dataset_stages"] = {"dukemtmc": {"occluders": {"source": str(tmp_path / "missing")}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OccreidError, match="occluder source folder not found"):  # its own section, not the demo's
        stage.main(["--dataset", "dukemtmc"])
    params["occluders"]["source"] = str(tmp_path / "missing")
    params["dataset_stages"] = {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(OccreidError, match="occluder source folder not found"):
        stage.main(["--dataset", "synthocc"])
    params["dataset_stages"] = {"dukemtmc": {"occluders": {"filters": {"min_aera": 0.1}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(OccreidError, match="unknown params key 'dataset_stages.dukemtmc.occluders.filters.min_aera'"):
        stage.main(["--dataset", "synthocc"])  # the whole file is validated first


def test_where_lists_one_contact_sheet_per_library(tmp_path):
    from occreid.cli import locations

    params = copy.deepcopy(DEMO)
    params["experiments"] = {k: v for k, v in params["experiments"].items() if v["method"] != "dpeformer"}
    params["tables"]["tables"] = []
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    assert not any("occluders" in s for s in locations(tmp_path, path)["sheets"])  # no method pastes: no library
    params["experiments"]["roa_demo"] = {"dataset": "synthocc", "method": "dpeformer"}
    params["experiments"]["roa_market"] = {"dataset": "market1501", "method": "dpeformer"}
    path.write_text(yaml.safe_dump(params))
    sheets = [s for s in locations(tmp_path, path)["sheets"] if "occluders" in s]
    assert sheets == [f"data/occluders/{d}/contact_sheet.png   (not yet built)" for d in ("market1501", "synthocc")]
    (tmp_path / "data/occluders/synthocc").mkdir(parents=True)
    (tmp_path / "data/occluders/synthocc/contact_sheet.png").write_bytes(b"png")
    assert "data/occluders/synthocc/contact_sheet.png" in locations(tmp_path, path)["sheets"]
