"""The mechanism that makes presets self-contained (stages/registry.py "Per-dataset sections", "What an experiment
inherits"): a dataset's own ``dataset_stages.<dataset>.<section>`` configures its per-dataset jobs from the code's
defaults, tracked at that key; an ``inherit: defaults`` experiment tracks only its own entry and may not run on a
shared section; a ``weights:`` experiment needs none of its method's per-dataset stages."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from occreid.augment import SptConfig
from occreid.errors import OccreidError
from occreid.prompts import PromptsConfig
from occreid.saliency import SaliencyConfig
from stages import common, prompts, saliency, spt_sets
from stages.params import read_yaml
from stages.registry import build_plan

ROOT = Path(__file__).resolve().parents[1]
DEMO = read_yaml(ROOT / "params.yaml")
CLIP = {"name": "clip_mini_p8", "pretrained": None, "img_size": [64, 32], "stride": None, "sie": True,
        "sie_coef": 1.0, "sie_mode": "cls", "drop_path": None, "taps": None}  # the demo dpmpp rows' backbone


def with_market(**stages) -> dict:
    """The demo plus a dpmpp experiment on market1501 (inherit: defaults, the demo's tiny CLIP backbone) and the
    given ``dataset_stages.market1501`` sections."""
    params = copy.deepcopy(DEMO)
    params["dataset_stages"] = {"market1501": stages}
    params["experiments"]["pp_market"] = {
        "dataset": "market1501", "method": "dpmpp", "inherit": "defaults",
        "overrides": {"methods": {"dpmpp": {"backbone": CLIP}}, "train": {"transforms": {"size": [64, 32]}}}}
    return params


OWN = {"prompts": {"backbone": CLIP, "epochs": 3}, "saliency": {"backbone": CLIP, "grid": [8, 4]},
       "spt": {"alpha1": 0.6}}


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_a_dataset_with_its_own_settings_reads_them_on_the_code_defaults(tmp_path):
    params = with_market(**OWN)
    path = write(tmp_path, params)
    cfg, model = prompts.load_params("market1501", path)
    assert cfg.epochs == 3 and cfg.batch_size == PromptsConfig().batch_size != DEMO["prompts"]["batch_size"]
    assert cfg.interpolation == PromptsConfig().interpolation != DEMO["prompts"]["interpolation"]
    assert model.name == "clip_mini_p8"
    sal, _ = saliency.load_params("market1501", path)
    assert sal.grid == [8, 4] and sal.backend == SaliencyConfig().backend
    spt = spt_sets.load_params("market1501", path=path)
    assert spt == SptConfig(alpha1=0.6)
    # the demo's dataset still reads the shared sections
    demo_cfg, _ = prompts.load_params("synthocc", path)
    assert demo_cfg.epochs == DEMO["prompts"]["epochs"] and demo_cfg.interpolation == DEMO["prompts"]["interpolation"]


def test_each_job_tracks_exactly_the_key_it_reads():
    plan = build_plan(with_market(**OWN))
    assert plan.job("prompts", "market1501").params == ("dataset_stages.market1501.prompts",)
    assert plan.job("saliency", "market1501").params == ("dataset_stages.market1501.saliency",)
    assert plan.job("spt_sets", "market1501-default").params == ("dataset_stages.market1501.spt",)
    assert plan.job("prompts", "synthocc").params == ("prompts",)
    # inherit: defaults reads only its entry: nothing of the shared model / train / methods / evaluate
    assert plan.job("train", "pp_market").params == ("experiments.pp_market",)
    assert plan.job("evaluate", "pp_market").params == ("experiments.pp_market",)
    assert plan.job("train", "dpmpp").params == ("seed", "model", "train", "methods.dpmpp", "experiments.dpmpp")


def test_a_sweep_row_is_a_variant_of_its_datasets_own_spt():
    params = with_market(**OWN)
    for value in (6, 7):  # 0.6: the dataset's own value (shared table); 0.7: the shared section's, but not its
        params["experiments"][f"pp_a{value}"] = copy.deepcopy(params["experiments"]["pp_market"])
        params["experiments"][f"pp_a{value}"]["overrides"]["spt"] = {"alpha1": value / 10}
    common.validate(params)
    plan = build_plan(params)
    assert plan.experiments["pp_a6"].variant("spt") == "default"
    assert plan.experiments["pp_a7"].variant("spt") == "alpha1-0p7"
    job = plan.job("spt_sets", "market1501-alpha1-0p7")
    assert job.params == ("dataset_stages.market1501.spt", "experiments.pp_a7.overrides.spt")
    assert common.spt_section(common.StageParams(params, job)) == SptConfig(alpha1=0.7)


def _weights(method, **entry):
    def change(p):
        p["experiments"]["imported"] = {"dataset": "synthocc", "method": method, "weights": "w.pth", **entry}
    return change


ERRORS = [
    (lambda p: p.update(dataset_stages={"market": {}}), r"'dataset_stages.market' names a dataset with no entry"),
    (lambda p: p.update(dataset_stages={"market1501": {"promts": {}}}), r"unknown params key 'dataset_stages.market1501.promts'"),
    (lambda p: p.update(dataset_stages={"market1501": {"occluders": {"backend": "sam2"}}}),
     r"dataset_stages.market1501.occluders.backend"),
    (lambda p: p.update(dataset_stages={"market1501": {"prompts": {"backbone": CLIP, "epoch": 2}}}),
     r"dataset_stages.market1501.prompts.*epoch"),
    (lambda p: p.update(dataset_stages={"market1501": {"prompts": {"epochs": 2}}}),
     r"'dataset_stages.market1501.prompts' names no backbone"),
    (lambda p: p.update(dataset_stages={"market1501": {"saliency": {"backbone": CLIP,
                                                                   "dataset_backbones": {"market1501": CLIP}}}}),
     r"dataset_backbones' is set: a dataset's own settings name one backbone"),
    (_weights("dpmpp"), r"experiment 'imported' sets weights, but method 'dpmpp' has no adapter"),
]


@pytest.mark.parametrize("change, message", ERRORS)
def test_bad_dataset_stages_or_weights_are_clear_errors(change, message):
    params = copy.deepcopy(DEMO)
    change(params)
    with pytest.raises(OccreidError, match=message):
        common.validate(params)


def test_an_experiment_inheriting_nothing_may_not_run_on_a_shared_section():
    params = with_market(prompts=OWN["prompts"])  # saliency and spt of market1501 would be the demo's
    with pytest.raises(OccreidError, match=r"(?s)'pp_market' inherits nothing.*saliency@market1501, spt_sets@market1501-"
                                           r"default would run with the shared 'saliency', 'spt' section.*state "
                                           r"dataset_stages.market1501.saliency and dataset_stages.market1501.spt"):
        common.validate(params)
    common.validate(with_market(**OWN))
    params = with_market(**OWN)
    params["experiments"]["pp_market"]["inherit"] = "params"  # its author's choice: the shared sections
    params["experiments"]["pp_market"]["overrides"]["methods"]["dpmpp"]["backbone"] = CLIP
    params["dataset_stages"] = {}
    common.validate(params)


def test_a_dpeformer_experiment_inheriting_nothing_needs_its_datasets_own_occluder_library():
    """The occluder library is a per-dataset input like the others: without dataset_stages.market1501.occluders an
    inherit: defaults dpeformer row would paste from a library built by the demo's shared section."""
    params = copy.deepcopy(DEMO)
    params["experiments"]["roa_market"] = {"dataset": "market1501", "method": "dpeformer", "inherit": "defaults"}
    with pytest.raises(OccreidError, match=r"(?s)'roa_market' inherits nothing.*occluders@market1501 would run with "
                                           r"the shared 'occluders' section.*state dataset_stages.market1501.occluders"):
        common.validate(params)
    params["dataset_stages"] = {"market1501": {"occluders": {"backend": "sam", "max_images": 100}}}
    common.validate(params)
    plan = build_plan(params)
    assert plan.job("occluders", "market1501").params == ("dataset_stages.market1501.occluders",)
    assert plan.job("occluders", "synthocc").params == ("occluders",)  # the demo's rows: the shared section
    assert plan.job("train", "roa_market").deps == ("data/occluders/market1501", "data/prepared/market1501")


@pytest.mark.parametrize("method", ["clipreid", "dpm"])
def test_an_imported_model_needs_no_per_dataset_stage(method):
    params = copy.deepcopy(DEMO)
    _weights(method, overrides={"methods": {method: {"backbone": CLIP}}} if method == "clipreid" else {})(params)
    common.validate(params)
    plan = build_plan(params)
    assert plan.job("train", "imported").deps == ("data/prepared/synthocc",)
    trained = plan.job("train", "clipreid").deps  # the same method, trained: its stage-1 prompts first
    assert "data/prompts/synthocc" in trained


def test_rendered_dvc_items_carry_the_keys_each_experiment_tracks():
    from stages import render_dvc

    doc = render_dvc.render(build_plan(with_market(**OWN)))
    train, prompts_stage = doc["stages"]["train"], doc["stages"]["prompts"]
    assert train["foreach"]["pp_market"]["train_params"] == "experiments.pp_market"
    assert train["foreach"]["dpmpp"]["train_params"] == "train"
    assert train["do"]["params"] == ["${item.seed_params}", "${item.model_params}", "${item.train_params}",
                                     "${item.method_params}", "experiments.${key}"]
    assert prompts_stage["foreach"]["market1501"] == {"dataset": "market1501",
                                                      "config": "dataset_stages.market1501.prompts"}
