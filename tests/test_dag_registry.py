"""The DAG declared in stages/registry.py: jobs, edges, params keys and fan-out, and dvc.yaml's rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from occreid.errors import OccreidError
from occreid.registry import Registry
from stages import registry as reg
from stages import render_dvc
from stages.common import OVERRIDABLE
from stages.params import read_yaml

ROOT = Path(__file__).resolve().parents[1]


def params_with(experiments: dict, datasets=("synthocc", "market1501"), methods=("vit",)) -> dict:
    return {"datasets": {d: {} for d in datasets}, "methods": {m: {} for m in methods}, "experiments": experiments}


DEMO_DPEFORMER = ["dpeformer", "dpeformer_baseline_roa", "dpeformer_cut_paste", "dpeformer_no_dpsm", "dpeformer_no_fbm",
                  "dpeformer_no_memory", "dpeformer_random_erasing"]
DEMO_EXPERIMENTS = sorted(DEMO_DPEFORMER + ["clipreid", "dpm", "dpm_t3_baseline", "dpm_t3_dpm", "dpm_t3_dpm_hr", "dpm_t4_baseline_a",
                           "dpm_t4_dpm_a_a", "dpm_t4_dpm_s_s", "dpmpp", "dpmpp_alpha1_0p5", "dpmpp_alpha1_0p9",
                           "dpmpp_alpha2_0p3", "dpmpp_alpha2_0p7", "dpmpp_dpm_on_clip", "dpmpp_no_anchor",
                           "dpmpp_no_mask_guided", "dpmpp_no_spt", "vit"]
                          + [f"{e}_seed{k}" for e in ("vit", "clipreid", "dpm", "dpmpp") for k in (1, 2)])
DEMO_SPT = [f"spt_sets@synthocc-{v}" for v in ("alpha1-0p5", "alpha1-0p9", "alpha2-0p3", "alpha2-0p7", "default")]


def test_demo_plan_jobs_edges_and_params_keys():
    plan = reg.build_plan({**read_yaml(ROOT / "params.yaml"), "profile": "full"})  # the whole demo
    assert [j.id for j in plan.jobs] == (
        ["prepare_data@synthocc", "prompts@synthocc", "saliency@synthocc", *DEMO_SPT, "occluders@synthocc"]
        + [f"train@{e}" for e in DEMO_EXPERIMENTS] + [f"evaluate@{e}" for e in DEMO_EXPERIMENTS] + ["tables"])
    edges = plan.edges()
    assert ("prompts@synthocc", "train@clipreid") in edges and ("spt_sets@synthocc-default", "train@dpmpp") in edges
    assert all(("saliency@synthocc", job) in edges for job in DEMO_SPT)
    # an alpha1 row trains on its own partner table, and only on it
    assert {u for u, v in edges if v == "train@dpmpp_alpha1_0p5"} == {
        "prepare_data@synthocc", "prompts@synthocc", "spt_sets@synthocc-alpha1-0p5"}
    # a method depends only on the per-dataset stages it needs
    assert {u for u, v in edges if v == "train@vit"} == {"prepare_data@synthocc"}
    assert {u for u, v in edges if v == "train@dpm"} == {"prepare_data@synthocc"}
    assert all({u for u, v in edges if v == f"train@{e}"} == {"prepare_data@synthocc", "occluders@synthocc"}
               for e in DEMO_DPEFORMER)  # one occluder library for every dpeformer row on synthocc
    assert {u for u, v in edges if v == "train@clipreid"} == {"prepare_data@synthocc", "prompts@synthocc"}
    assert {u for u, v in edges if v == "train@dpmpp_no_spt"} == {"prepare_data@synthocc", "prompts@synthocc",
                                                                   "spt_sets@synthocc-default"}
    assert {u for u, v in edges if v == "tables"} == {f"evaluate@{e}" for e in DEMO_EXPERIMENTS}
    params = {j.id: j.params for j in plan.jobs}
    assert params["prepare_data@synthocc"] == ("datasets.synthocc", "prepare_data")
    assert params["prompts@synthocc"] == ("prompts",) and params["spt_sets@synthocc-default"] == ("spt",)
    assert params["spt_sets@synthocc-alpha2-0p7"] == ("spt", "experiments.dpmpp_alpha2_0p7.overrides.spt")
    assert plan.job("spt_sets", "synthocc-alpha1-0p5").cmd == (
        "python -m stages.spt_sets --dataset synthocc --variant alpha1-0p5")
    assert plan.job("spt_sets", "synthocc-alpha1-0p5").outs == ("data/spt/synthocc/alpha1-0p5",)
    assert params["train@vit"] == ("seed", "model", "train", "methods.vit", "experiments.vit")
    assert params["train@dpmpp"] == ("seed", "model", "train", "methods.dpmpp", "experiments.dpmpp")
    assert params["evaluate@vit"] == ("evaluate", "experiments.vit")
    assert params["tables"] == ("tables", "experiments", *OVERRIDABLE)  # sweep rows at the default read the base
    assert plan.job("train", "vit").side_params == ("tracking",)
    assert plan.job("train", "vit").cmd == "python -m stages.train --experiment vit"
    assert plan.job("prompts", "synthocc").cmd == "python -m stages.prompts --dataset synthocc"
    assert [j.id for j in plan.sinks()] == ["tables"]


def test_test_dataset_is_prepared_and_evaluated_but_not_trained_on():
    plan = reg.build_plan(params_with({
        "occ": {"dataset": "market1501", "test_dataset": "occluded_reid", "method": "dpmpp"},
    }, datasets=("market1501", "occluded_reid"), methods=("dpmpp",)))
    assert [j.id for j in plan.jobs if j.stage.fanout == "dataset"] == [
        "prepare_data@market1501", "prepare_data@occluded_reid", "prompts@market1501", "saliency@market1501",
        "spt_sets@market1501-default"]  # prompts / partner tables of the training set only
    assert plan.job("evaluate", "occ").deps == ("data/prepared/occluded_reid", "data/train/occ/model.pt")
    assert plan.job("train", "occ").deps == ("data/prepared/market1501", "data/prompts/market1501",
                                             "data/spt/market1501/default")
    item = render_dvc.render(plan)["stages"]["evaluate"]["foreach"]["occ"]
    assert item["test_dataset"] == "occluded_reid" and item["dataset"] == "market1501"
    assert render_dvc.render(plan)["stages"]["evaluate"]["do"]["deps"][0] == "data/prepared/${item.test_dataset}"


def test_a_missing_test_dataset_entry_is_an_error_naming_the_key():
    with pytest.raises(OccreidError, match=r"'experiments.occ.test_dataset' = 'occluded_reid' has no entry"):
        reg.build_plan(params_with({"occ": {"dataset": "market1501", "test_dataset": "occluded_reid",
                                            "method": "vit"}}))


def test_only_datasets_used_by_experiments_are_prepared_and_tables_gathers_all():
    plan = reg.build_plan(params_with({
        "a": {"dataset": "market1501", "method": "vit"},
        "b": {"dataset": "market1501", "method": "vit", "overrides": {"train": {"epochs": 2}}},
    }))
    assert [j.id for j in plan.jobs_of("prepare_data")] == ["prepare_data@market1501"]
    assert plan.job("tables").deps == ("reports/eval/a/metrics.json", "reports/eval/b/metrics.json")
    assert plan.job("evaluate", "b").deps == ("data/prepared/market1501", "data/train/b/model.pt")


@pytest.fixture
def with_prompts_stage(monkeypatch):
    """The registry with a method 'clip' that needs only the prompts stage."""
    monkeypatch.setattr(reg, "METHOD_NEEDS", {"clip": ("prompts",)})


def test_a_method_depends_only_on_the_per_dataset_stages_it_needs(with_prompts_stage):
    plan = reg.build_plan(params_with({
        "v": {"dataset": "synthocc", "method": "vit"},
        "c": {"dataset": "market1501", "method": "clip"},
    }, methods=("vit", "clip")))
    assert [j.id for j in plan.jobs_of("prompts")] == ["prompts@market1501"]  # not for synthocc
    assert plan.job("train", "c").deps == ("data/prepared/market1501", "data/prompts/market1501")
    assert plan.job("train", "v").deps == ("data/prepared/synthocc",)
    assert ("prompts@market1501", "train@c") in plan.edges()
    assert ("prepare_data@market1501", "prompts@market1501") in plan.edges()
    assert not any(u.startswith("prompts") and v == "train@v" for u, v in plan.edges())


def test_rendered_foreach_pads_need_slots_with_the_prepared_folder(with_prompts_stage):
    plan = reg.build_plan(params_with({
        "v": {"dataset": "synthocc", "method": "vit"},
        "c": {"dataset": "market1501", "method": "clip"},
    }, methods=("vit", "clip")))
    train = render_dvc.render(plan)["stages"]["train"]
    inherited = {"seed_params": "seed", "model_params": "model", "train_params": "train"}
    assert train["foreach"] == {
        "c": {"dataset": "market1501", "test_dataset": "market1501", "method": "clip", **inherited,
              "method_params": "methods.clip", "need1": "data/prompts/market1501"},
        "v": {"dataset": "synthocc", "test_dataset": "synthocc", "method": "vit", **inherited,
              "method_params": "methods.vit", "need1": "data/prepared/synthocc"},
    }
    assert train["do"]["deps"][:2] == ["data/prepared/${item.dataset}", "${item.need1}"]
    assert "${item.method_params}" in train["do"]["params"]


def test_rendered_dvc_yaml_declares_outs_flags_metrics_and_plots():
    doc = render_dvc.render(reg.build_plan({**read_yaml(ROOT / "params.yaml"), "profile": "full"}))
    assert list(doc["stages"]) == ["prepare_data", "prompts", "saliency", "spt_sets", "occluders", "train", "evaluate",
                                   "tables"]
    assert doc["stages"]["prepare_data"]["foreach"] == ["synthocc"]
    assert doc["stages"]["prepare_data"]["do"]["params"] == ["datasets.${item}", "prepare_data"]
    outs = doc["stages"]["train"]["do"]["outs"]
    assert {"data/train/${key}/checkpoints": {"persist": True, "cache": False}} in outs
    assert "data/train/${key}/model.pt" in outs
    assert doc["metrics"] == ([f"data/train/{e}/train_metrics.json" for e in DEMO_EXPERIMENTS]
                              + [f"reports/eval/{e}/metrics.json" for e in DEMO_EXPERIMENTS])
    assert doc["plots"] == [{f"data/train/{e}/history.csv": {"x": "epoch", "y": "loss"}} for e in DEMO_EXPERIMENTS]
    assert doc["stages"]["tables"]["deps"][:len(DEMO_EXPERIMENTS)] == [
        f"reports/eval/{e}/metrics.json" for e in DEMO_EXPERIMENTS]
    # dpmpp needs two per-dataset outputs: vit's spare slots repeat its prepared folder
    train = doc["stages"]["train"]["foreach"]
    assert (train["dpmpp"]["need1"], train["dpmpp"]["need2"]) == ("data/prompts/synthocc", "data/spt/synthocc/default")
    assert train["dpmpp_alpha1_0p9"]["need2"] == "data/spt/synthocc/alpha1-0p9"
    spt = doc["stages"]["spt_sets"]
    assert spt["foreach"]["synthocc-default"] == {"dataset": "synthocc", "spt_variant": "default", "spt_params": "spt",
                                                  "config": "spt"}
    assert spt["foreach"]["synthocc-alpha1-0p5"]["spt_params"] == "experiments.dpmpp_alpha1_0p5.overrides.spt"
    assert spt["do"]["params"] == ["${item.config}", "${item.spt_params}"]
    assert doc["stages"]["prompts"]["foreach"] == {"synthocc": {"dataset": "synthocc", "config": "prompts"}}
    assert spt["do"]["outs"] == ["data/spt/${item.dataset}/${item.spt_variant}"]
    assert (train["vit"]["need1"], train["vit"]["need2"]) == ("data/prepared/synthocc", "data/prepared/synthocc")
    assert (train["dpeformer"]["need1"], train["dpeformer"]["need2"]) == ("data/occluders/synthocc",
                                                                          "data/prepared/synthocc")


@pytest.mark.parametrize("override, name", [
    (None, "default"),
    ({}, "default"),
    ({"alpha1": 0.7}, "default"),  # the base value written out: the default table is shared
    ({"alpha1": 0.6}, "alpha1-0p6"),
    ({"max_roll": 0, "alpha1": 0.6}, "alpha1-0p6_max_roll-0"),  # key order, whatever the YAML order
    ({"alpha1": 0.6, "alpha2": 0.5}, "alpha1-0p6"),  # alpha2 equals the base
    ({"seed": -3}, "seed-m3"),
    ({"alpha1": 1e-05}, "alpha1-1em05"),
    ({"prefer_other_ids": False}, "prefer_other_ids-false"),
])
def test_variant_names_say_what_the_override_changes(override, name):
    assert reg.variant_name(override, {"alpha1": 0.7, "alpha2": 0.5, "max_roll": 2}) == name


def test_unreadable_or_long_variant_names_become_a_stable_hash():
    a = reg.variant_name({"alpha1": [0.1, 0.2]}, {})
    assert a.startswith("h") and len(a) == 11 and reg.NAME_RE.match(a)
    assert a == reg.variant_name({"alpha1": [0.1, 0.2]}, {}) != reg.variant_name({"alpha1": [0.1, 0.3]}, {})
    long = reg.variant_name({f"key_{i}": i for i in range(8)}, {})
    assert long.startswith("h") and len(long) == 11


def test_experiments_with_the_same_spt_override_share_one_partner_table():
    plan = reg.build_plan(params_with({
        "a": {"dataset": "market1501", "method": "dpmpp", "overrides": {"spt": {"alpha1": 0.6}}},
        "b": {"dataset": "market1501", "method": "dpmpp",
              "overrides": {"spt": {"alpha1": 0.6}, "train": {"epochs": 3}}},
        "c": {"dataset": "market1501", "method": "dpmpp", "overrides": {"spt": {"alpha1": 0.7}}},  # = base
        "d": {"dataset": "synthocc", "method": "dpmpp", "overrides": {"spt": {"alpha1": 0.6}}},
    }, methods=("dpmpp",)) | {"spt": {"alpha1": 0.7}})
    assert [j.id for j in plan.jobs_of("spt_sets")] == [
        "spt_sets@market1501-alpha1-0p6", "spt_sets@market1501-default", "spt_sets@synthocc-alpha1-0p6"]
    # tracked at the first experiment (by name) that uses the variant
    assert plan.job("spt_sets", "market1501-alpha1-0p6").params == ("spt", "experiments.a.overrides.spt")
    assert plan.job("spt_sets", "synthocc-alpha1-0p6").params == ("spt", "experiments.d.overrides.spt")
    assert "data/spt/market1501/alpha1-0p6" in plan.job("train", "b").deps
    assert "data/spt/market1501/default" in plan.job("train", "c").deps
    assert [j.id for j in plan.jobs_of("saliency")] == ["saliency@market1501", "saliency@synthocc"]


def test_an_spt_override_of_a_method_without_partner_tables_makes_no_variant():
    plan = reg.build_plan(params_with({"v": {"dataset": "synthocc", "method": "vit",
                                             "overrides": {"spt": {"alpha1": 0.6}}}}))
    assert plan.experiments["v"].variants == {} and plan.jobs_of("spt_sets") == []


def test_committed_dvc_yaml_is_not_stale():
    assert (ROOT / "dvc.yaml").read_text() == render_dvc.render_text(ROOT / "params.yaml"), \
        "dvc.yaml is stale: run `occreid dag --write`"
    assert yaml.safe_load((ROOT / "dvc.yaml").read_text()) == render_dvc.render(
        reg.build_plan(read_yaml(ROOT / "params.yaml")))


def test_check_reports_a_stale_dvc_yaml_with_a_diff(tmp_path):
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    render_dvc.write(tmp_path)
    render_dvc.check(tmp_path)  # fresh: no error
    text = (tmp_path / "params.yaml").read_text().replace(
        "  vit: {dataset: synthocc, method: vit, overrides: {}}",
        "  vit: {dataset: synthocc, method: vit, overrides: {}}\n  vit2: {dataset: synthocc, method: vit}")
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(OccreidError, match=r"stale[\s\S]*\+.*vit2") as err:
        render_dvc.check(tmp_path)
    assert "occreid dag --write" in err.value.fix


@pytest.mark.parametrize("experiments, message", [
    ({}, "non-empty mapping"),
    ({"a.b": {"dataset": "synthocc", "method": "vit"}}, "may use only letters"),
    ({"a": {"dataset": "nope", "method": "vit"}}, "'experiments.a.dataset' = 'nope' has no entry"),
    ({"a": {"dataset": "synthocc", "method": "dpm"}}, "has no section under 'methods'"),
    ({"a": {"dataset": "synthocc"}}, "with 'dataset' and 'method'"),
    ({"a": {"dataset": "synthocc", "method": "vit", "override": {}}}, "unknown params key 'experiments.a.override'"),
    ({"a": {"dataset": "synthocc", "method": "vit", "overrides": []}}, "'experiments.a.overrides' must be a mapping"),
    ({"a": {"dataset": "synthocc", "method": "vit", "overrides": {"spt": 0.5}}},
     "'experiments.a.overrides.spt' must be a mapping"),
])
def test_bad_experiments_are_errors_naming_the_key(experiments, message):
    with pytest.raises(OccreidError, match=message):
        reg.build_plan(params_with(experiments))


def test_every_code_dependency_exists_and_commands_run_stage_modules():
    for name in reg.ORDER:
        stage = reg.STAGES.get(name)
        assert stage.cmd.startswith(f"python -m stages.{name}")
        for path in stage.code:
            assert (ROOT / path).exists(), f"stage {name}: code dependency {path} does not exist"
        assert stage.resources.cpus >= 1 and stage.resources.mem_mb > 0 and stage.resources.runtime > 0
