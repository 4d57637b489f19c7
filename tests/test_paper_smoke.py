"""One preset at paper size through the real DAG (the rest: ``python benchmarks/paper_smoke.py``): DPM's
Occluded-Duke preset builds ViT-B/16 at 256×128 with stride 11, trains 2 iterations with its batch composition
(P cut to 2, K = 4) and evaluates, on a tiny synthocc rendered at 256×128."""

from __future__ import annotations

import pytest

from benchmarks.paper_smoke import ROOT, run_preset


@pytest.mark.slow  # a ViT-B/16 through dvc repro on the CPU: a minute or two
def test_dpm_occluded_duke_runs_at_paper_size(tmp_path):
    row = run_preset(ROOT / "workflow" / "presets" / "dpm_occluded_duke.yaml", tmp_path / "p")
    assert row["backbone"] == "vit_base_patch16_224 s11"
    assert row["iterations"] == 2  # 2 ids x 10 training images, K = 4 -> 2 chunks each -> 2 batches of P = 2
    assert 0.0 <= row["R1"] <= 1.0
    assert row["peak_mb"] > 500  # a ViT-B/16 really was built (its weights alone are ~350 MB)


def _pretrained(tree) -> list:
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == "pretrained"] + [x for v in tree.values() for x in _pretrained(v)]
    return []


@pytest.mark.parametrize("path", sorted((ROOT / "workflow" / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_becomes_a_valid_paper_size_smoke_run(path):
    """What the benchmark runs for each preset: its first experiment on synthocc with the same models (paper-size
    backbones, random weights), the preset's K, P = 2, and its dataset's stage settings moved to synthocc."""
    import yaml

    from benchmarks.paper_smoke import P, demo_params, smoke_preset
    from occreid.config import merge, read_yaml
    from stages.common import resolve_sections, validate
    from stages.registry import build_plan

    preset = yaml.safe_load(path.read_text())
    doc, name = smoke_preset(preset)
    assert name == next(iter(preset["experiments"]))
    params = merge(demo_params(read_yaml(ROOT / "params.yaml")), doc)
    validate(params)  # self-contained on synthocc too: its stages read dataset_stages.synthocc
    assert _pretrained(doc) and all(v is None for v in _pretrained(doc))  # random weights: nothing to download
    real = merge(read_yaml(ROOT / "params.yaml"), preset)
    ours, paper = (resolve_sections(p, name, ("methods", "train")) for p in (params, real))
    assert ours["methods"].backbone.img_size == paper["methods"].backbone.img_size == [256, 128]
    assert ours["methods"].backbone.stride == paper["methods"].backbone.stride
    assert (ours["train"].ids_per_batch, ours["train"].images_per_id) == (P, paper["train"].images_per_id)
    plan = build_plan(params)
    stages = [j for j in plan.jobs if j.stage.config]
    assert all(j.ctx["config"].startswith("dataset_stages.synthocc.") for j in stages)
    dataset = preset["experiments"][name]["dataset"]
    if "occluders" in (preset.get("dataset_stages") or {}).get(dataset, {}):  # DPEFormer: SAM ViT-H in the paper
        smoke, paper = params["dataset_stages"]["synthocc"]["occluders"], preset["dataset_stages"][dataset]["occluders"]
        assert (paper["backend"], paper["sam"]["model_type"]) == ("sam", "vit_h")
        assert (smoke["backend"], smoke["image_max_side"]) == ("classical", 256)  # weight-free: nothing to download
        assert [j.id for j in plan.jobs_of("occluders")] == ["occluders@synthocc"]
        assert {k: v for k, v in smoke.items() if k not in ("backend", "image_max_side")} == \
            {k: v for k, v in paper.items() if k not in ("backend", "image_max_side")}  # the rest as the paper's
    assert (params["datasets"]["synthocc"]["generator"]["height"], params["datasets"]["synthocc"]["generator"]["width"]) \
        == (256, 128)
