"""Stage params access (stages/common.py): whole-file validation, the declared-keys gate, experiment resolution."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from occreid.errors import OccreidError
from stages import common
from stages.evaluate import query_subsets
from stages.params import read_yaml
from stages.train import history_csv, summary

ROOT = Path(__file__).resolve().parents[1]
DEMO = read_yaml(ROOT / "params.yaml")


def demo(**changes) -> dict:
    params = copy.deepcopy(DEMO)
    params.update(changes)
    return params


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_the_demo_params_are_valid():
    common.validate(DEMO)


def _replicate(**entry):
    """A replicate vit_s1 of the demo's vit with seed 7 (the demo's own vit replicates use seeds 1 and 2)."""
    return lambda p: p["experiments"].update(
        vit_s1={"dataset": "synthocc", "method": "vit", "replicate_of": "vit", "overrides": {"train": {"seed": 7}},
                **entry})


REPLICATE_ERRORS = [
    (_replicate(replicate_of="vitt"), r"'experiments.vit_s1.replicate_of' = 'vitt' is not another experiment"),
    (_replicate(overrides={}), r"seed replicate 'vit_s1' trains with seed 0, as 'vit' does"),
    (_replicate(overrides={"train": {"seed": 7, "epochs": 3}}), r"changes more than train.seed of 'vit'"),
    (_replicate(overrides={"train": {"seed": 2}}), r"seed replicate 'vit_s(1|eed2)' trains with seed 2, as 'vit_s(eed2|1)' does"),
    (_replicate(method="dpm"), r"seed replicate 'vit_s1' has method 'dpm', its original 'vit' 'vit'"),
    (lambda p: (_replicate()(p), p["experiments"].update(vit_s2={**p["experiments"]["vit_s1"], "replicate_of": "vit_s1",
                                                                  "overrides": {"train": {"seed": 8}}})),
     r"'vit_s1' is itself a replicate \(of 'vit'\)"),
]


@pytest.mark.parametrize("change, message", REPLICATE_ERRORS)
def test_a_seed_replicate_differs_from_its_original_in_the_seed_only(change, message):
    params = demo()
    _replicate()(params)
    common.validate(params)  # a proper replicate
    params = demo()
    change(params)
    with pytest.raises(OccreidError, match=message):
        common.validate(params, "params.yaml")


@pytest.mark.parametrize("change, message", [
    (lambda p: p.update(trian={}), r"unknown params key 'trian'[\s\S]*did you mean 'train'"),
    (lambda p: p["train"].update(epoch=3), r"unknown params key 'train.epoch'[\s\S]*did you mean 'epochs'"),
    (lambda p: p["train"]["optimizer"].update(lr="fast"), r"'train.optimizer.lr' must be float, got 'fast'"),
    (lambda p: p["evaluate"].update(metric="cosin"), r"'evaluate.metric' = 'cosin' is not allowed"),
    (lambda p: p["model"].update(img_sz=[1, 2]), r"unknown params key 'model.img_sz'"),
    (lambda p: p["methods"]["vit"].update(neck="x"), r"unknown params key 'methods.vit.neck'"),
    (lambda p: p["datasets"]["synthocc"]["generator"].update(num_ids=3),
     r"unknown params key 'datasets.synthocc.generator.num_ids'"),
    (lambda p: p["datasets"].update(market={}), r"unknown dataset 'market'"),
    (lambda p: p["methods"].update(vitt={}), r"unknown method 'vitt'"),
    (lambda p: p["train"].update(epochs=0), r"params.yaml: train.epochs must be >= 1"),
    (lambda p: p.update(seed=-1), r"'seed' must be a non-negative int"),
    (lambda p: p["prepare_data"].update(out_dir="elsewhere"), r"prepare_data.out_dir' = 'elsewhere'"),
    (lambda p: p["experiments"]["vit"].update(overrides={"train": {"epoch": 1}}),
     r"unknown params key 'experiments.vit.overrides.train.epoch'"),
    (lambda p: p["experiments"]["vit"].update(overrides={"tables": {}}),
     r"unknown params key 'experiments.vit.overrides.tables'"),
    (lambda p: p["experiments"]["vit"].update(overrides={"methods": {"dpm": {}}}),
     r"changes method\(s\) \['dpm'\], but the experiment runs 'vit'"),
    (lambda p: p["experiments"]["vit"].update(method="nope"), r"'experiments.vit.method' = 'nope' has no section"),
    (lambda p: p["experiments"]["vit"].update(overrides={"spt": {"alpha1": 0.5}}),
     r"'experiments.vit.overrides.spt' has no effect: method 'vit' trains without SPT partner tables"),
    (lambda p: p["experiments"]["dpmpp"]["overrides"].update(spt={"alpha1": 1.5}),
     r"spt.alpha1 must be in \[0, 1\], got 1.5"),
    (lambda p: p["experiments"]["dpmpp"]["overrides"].update(spt={"alpha": 0.5}),
     r"unknown params key 'experiments.dpmpp.overrides.spt.alpha'[\s\S]*did you mean 'alpha[12]'"),
])
def test_a_bad_key_or_value_anywhere_is_an_error_naming_it(change, message):
    params = demo()
    change(params)
    with pytest.raises(OccreidError, match=message) as err:
        common.validate(params, "params.yaml")
    assert err.value.path == "params.yaml"


def test_resolution_merges_model_seed_and_overrides_in_order():
    params = demo(seed=7)
    params["experiments"]["vit"]["overrides"] = {
        "model": {"sie": False},
        "methods": {"vit": {"label_smoothing": 0.1, "backbone": {"stride": 12}}},
        "evaluate": {"flip": True},
    }
    params["methods"]["vit"]["backbone"] = {"img_size": [256, 128]}
    got = common.resolve_sections(params, "vit", ("methods", "train", "evaluate"))
    backbone = got["methods"].backbone
    # name from the `model` section, img_size from the method's own backbone, stride/sie from the overrides
    assert (backbone.name, backbone.img_size, backbone.stride, backbone.sie) == (params["model"]["name"], [256, 128], 12, False)
    assert got["methods"].label_smoothing == 0.1
    assert got["train"].seed == 7  # top-level seed is the default
    assert got["evaluate"].flip is True and got["evaluate"].metric == "cosine"
    params["experiments"]["vit"]["overrides"]["train"] = {"seed": 3}
    assert common.resolve_sections(params, "vit", ("train",))["train"].seed == 3  # an explicit seed wins
    assert DEMO["experiments"]["vit"]["overrides"] == {}  # resolution copies, never mutates


def test_a_stage_reads_its_declared_keys_only(tmp_path):
    path = write(tmp_path, DEMO)
    p = common.load("evaluate", "vit", path, check=False)
    assert p.allowed == ("evaluate", "experiments.vit", "tracking")
    assert p.get("evaluate.metric") == "cosine"
    assert p.get("experiments.vit") == {"dataset": "synthocc", "method": "vit", "overrides": {}}
    for key in ("train", "train.epochs", "experiments", "evaluate_extra", "seed"):
        with pytest.raises(OccreidError, match=rf"stage 'evaluate@vit' reads params key '{key}', which it does not"):
            p.get(key)
    assert p.experiment("vit", ("evaluate",))["evaluate"].max_rank == 50
    with pytest.raises(OccreidError, match="reads params key 'seed'"):
        p.experiment("vit", ("train",))


def test_load_validates_the_file_first_and_names_a_missing_job(tmp_path):
    bad = demo()
    bad["train"]["epochz"] = 1
    with pytest.raises(OccreidError, match="unknown params key 'train.epochz'"):
        common.load("train", "vit", write(tmp_path, bad))
    with pytest.raises(OccreidError, match=r"no job 'train@vti'[\s\S]*did you mean 'train@vit'"):
        common.load("train", "vti", write(tmp_path, DEMO), check=False)


def test_run_prints_the_message_and_exits_2(capsys):
    def main(argv):
        raise OccreidError("broken", path="x.yaml", fix="mend it")

    with pytest.raises(SystemExit) as exit_:
        common.run(main, [])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "error: x.yaml: broken\n  fix: mend it"


def test_history_csv_and_train_summary():
    history = [{"epoch": 1, "loss": 2.0, "lr": 0.1, "seconds": 3.0, "note": "x"},
               {"epoch": 2, "loss": 1.5, "lr": 0.05, "seconds": 2.5, "extra": 9}]
    assert history_csv(history) == ("epoch,loss,lr,seconds,extra\n1,2.0,0.1,3.0,\n2,1.5,0.05,2.5,9.0\n")
    assert summary(history, 10.04) == {"loss": 1.5, "lr": 0.05, "extra": 9.0, "epochs": 2, "seconds": 10.0}


def test_query_subsets_follow_the_records():
    masks = query_subsets([True, False, True], ("all", "occluded", "whole_body"))
    assert {k: v.tolist() for k, v in masks.items()} == {
        "all": [True, True, True], "occluded": [True, False, True], "whole_body": [False, True, False]}
    assert list(query_subsets([True, None], ("all", "occluded"))) == ["all"]  # occlusion not known for all
    assert list(query_subsets([True, False], ("all", "whole_body"))) == ["all", "whole_body"]
    assert query_subsets([], ("all",))["all"].dtype == np.bool_


def unset_fields(cls, values: dict, key: str) -> list[str]:
    """Dotted names of the dataclass fields (recursively) that ``values`` does not set."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name not in values:
            out.append(f"{key}.{f.name}")
        elif dataclasses.is_dataclass(hints[f.name]) and isinstance(values[f.name], dict):
            out += unset_fields(hints[f.name], values[f.name], f"{key}.{f.name}")
    return out


def test_params_yaml_lists_every_knob():
    """The demo params.yaml documents every field of every section; the deliberate gaps are filled from
    elsewhere: ``train.seed`` from top-level ``seed``, the ViT methods' ``methods.<m>.backbone`` from ``model``
    (the CLIP methods name their CLIP backbone: ``model`` is the demo's ViT)."""
    from occreid.data.synthocc import SynthOccConfig

    unset = [k for name, ref in common.SECTIONS.items()
             for k in unset_fields(common.schema(ref), DEMO.get(name) or {}, name)]
    unset += [k for m in DEMO["methods"] for k in unset_fields(common.method_schema(m), DEMO["methods"][m], f"methods.{m}")]
    unset += unset_fields(SynthOccConfig, DEMO["datasets"]["synthocc"]["generator"], "datasets.synthocc.generator")
    assert unset == ["train.seed", "methods.vit.backbone", "methods.dpm.backbone", "methods.dpeformer.backbone"]
