"""workflow/presets/dpmpp_*.yaml: each deep-merges into params.yaml and resolves to valid configs, the settings they
share agree across presets, and the ablation preset is generated from the method's ablation rows (and is fresh)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from occreid.augment.config import SptConfig
from occreid.config import from_dict, merge, read_yaml
from occreid.methods.dpmpp import ABLATIONS, VARIANTS, DPMPPConfig, sweep_overrides
from occreid.presets import render_ablation_preset
from stages.common import StageParams, resolve_sections, spt_section
from stages.registry import build_plan

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "workflow" / "presets").glob("dpmpp_*.yaml"))
DATASET_PRESETS = {"occluded_duke", "occluded_reid", "market1501", "dukemtmc"}


def load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def resolved(preset: dict) -> dict[str, dict]:
    """Every experiment of ``preset`` merged into the project's params.yaml and resolved like the train stage."""
    params = merge(read_yaml(ROOT / "params.yaml"), preset)
    return {name: resolve_sections(params, name, ("methods", "train", "evaluate"))
            for name in preset["experiments"]}


# What a DPM++ preset may set differently from the Occluded-Duke one: DPM's per-dataset choices.
PER_DATASET = {"dataset", "test_dataset", "arc_margin", "w_hem", "color_jitter"}


def _without(tree, keys):
    if isinstance(tree, dict):
        return {k: _without(v, keys) for k, v in tree.items() if k not in keys}
    return tree


def test_one_preset_per_dataset_and_shared_settings_agree():
    names = {p.stem for p in PRESETS}
    assert {f"dpmpp_{d}" for d in DATASET_PRESETS} <= names
    # every preset that trains on a dataset (CLIP-ReID's too) states the same per-dataset stage settings for it
    stages: dict[str, dict] = {}
    for path in sorted((ROOT / "workflow" / "presets").glob("*.yaml")):
        for dataset, sections in (load(path).get("dataset_stages") or {}).items():
            for section, value in sections.items():
                assert stages.setdefault((dataset, section), value) == value, (path.name, dataset, section)
    for d in ("occluded_duke", "market1501", "dukemtmc"):
        assert {"prompts", "saliency", "spt"} <= {s for ds, s in stages if ds == d}  # DPEFormer's: occluders
        from_dict(SptConfig, stages[(d, "spt")], key="spt")  # a valid spt section
        for section in ("prompts", "saliency", "spt"):  # one recipe, whatever the dataset
            assert stages[(d, section)] == stages[("occluded_duke", section)], (d, section)
    # the experiments differ only in DPM's per-dataset choices
    main = load(ROOT / "workflow" / "presets" / "dpmpp_occluded_duke.yaml")["experiments"]["dpmpp_occluded_duke"]
    for d in DATASET_PRESETS:
        (entry,) = load(ROOT / "workflow" / "presets" / f"dpmpp_{d}.yaml")["experiments"].values()
        assert _without(entry, PER_DATASET) == _without(main, PER_DATASET), d


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_experiments_resolve(path):
    preset = load(path)
    for name, sections in resolved(preset).items():
        method, train, evaluate = sections["methods"], sections["train"], sections["evaluate"]
        assert isinstance(method, DPMPPConfig) and preset["experiments"][name]["method"] == "dpmpp"
        assert method.backbone.name == "clip_vit_b16"  # not the demo's `model` (vit_tiny)
        assert list(train.transforms.size) == list(method.backbone.img_size)
        assert method.anchor_epochs == train.scheduler.warmup_epochs
        assert method.text_features is None and method.spt_partners is None  # the train stage fills them
        assert evaluate.metric == "masked_cosine"


def test_occluded_reid_trains_on_market_and_names_its_test_set():
    spec = load(ROOT / "workflow" / "presets" / "dpmpp_occluded_reid.yaml")["experiments"]["dpmpp_occluded_reid"]
    assert spec["dataset"] == "market1501" and spec["test_dataset"] == "occluded_reid"
    assert spec["overrides"]["methods"]["dpmpp"]["w_hem"] == 0.01


def test_ablation_preset_rows_are_the_methods_rows():
    preset = load(ROOT / "workflow" / "presets" / "dpmpp_occluded_duke_ablations.yaml")
    main = resolved(load(ROOT / "workflow" / "presets" / "dpmpp_occluded_duke.yaml"))["dpmpp_occluded_duke"]
    rows = {**{k: v for k, v in {**ABLATIONS, **VARIANTS}.items() if k != "full"},
            **{k: v["methods"]["dpmpp"] for k, v in sweep_overrides("alpha").items()}}
    spt_rows = {**sweep_overrides("alpha1"), **sweep_overrides("alpha2")}  # Fig. 5: partner-table thresholds
    got = resolved(preset)
    assert set(got) == {f"dpmpp_occluded_duke_{k}" for k in [*rows, *spt_rows]}
    base = dataclasses.asdict(main["methods"])
    for row, over in rows.items():
        sections = got[f"dpmpp_occluded_duke_{row}"]
        assert sections["train"] == main["train"]
        assert sections["methods"] == from_dict(DPMPPConfig, merge(base, over)), row
    params = merge(read_yaml(ROOT / "params.yaml"), preset)
    plan = build_plan(params)
    for row, over in spt_rows.items():
        name = f"dpmpp_occluded_duke_{row}"
        assert got[name]["methods"] == main["methods"] and got[name]["train"] == main["train"]
        assert preset["experiments"][name]["overrides"]["spt"] == over["spt"]
        # its partner table is built with exactly the swept value, the rest of the dataset's own spt settings
        variant = plan.experiments[name].variant("spt")
        job = plan.job("spt_sets", f"occluded_duke-{variant}")
        assert f"data/spt/occluded_duke/{variant}" in plan.job("train", name).deps
        cfg = spt_section(StageParams(params, job))
        assert cfg == from_dict(SptConfig, merge(preset["dataset_stages"]["occluded_duke"]["spt"], over["spt"]))
    # the default values share the default table; every other value has its own
    variants = {plan.experiments[f"dpmpp_occluded_duke_{row}"].variant("spt") for row in spt_rows}
    assert variants == {"default", "alpha1-0p5", "alpha1-0p6", "alpha1-0p8", "alpha1-0p9",
                        "alpha2-0p3", "alpha2-0p4", "alpha2-0p6", "alpha2-0p7"}


def test_ablation_preset_is_generated_from_the_main_preset_and_the_rows():
    """`python scripts/render_ablation_preset.py` wrote the file from what it is now (else: re-run it)."""
    path = ROOT / "workflow" / "presets" / "dpmpp_occluded_duke_ablations.yaml"
    assert path.read_text(encoding="utf-8") == render_ablation_preset(ROOT / "workflow" / "presets")
    main = load(ROOT / "workflow" / "presets" / "dpmpp_occluded_duke.yaml")
    preset = load(path)
    assert preset["dataset_stages"] == main["dataset_stages"] and preset["datasets"] == main["datasets"]
