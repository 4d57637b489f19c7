"""The papers' presets are self-contained: every experiment says ``inherit: defaults`` (it resolves from its own
overrides and the code's defaults) and the per-dataset stages it trains on read ``dataset_stages.<dataset>`` (not
the shared prompts / saliency / spt / occluders sections), so applying a preset to any params.yaml gives the same run; and the
presets carry the reference configs' values key by key (a table written from ../shared/reference/method-facts.md)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from occreid.config import merge, read_yaml
from stages.common import SECTIONS, StageParams, resolve_sections, schema, spt_section, validate
from stages.registry import build_plan

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "workflow" / "presets").glob("*.yaml"))
SECTIONS_OF_EXPERIMENT = ("train", "methods", "evaluate")
PERTURBED = ("seed", "model", "train", "methods", "evaluate", "prompts", "saliency", "spt", "occluders")


def _perturb(value):
    """Every number, flag and free choice changed (lists kept: sizes and means must keep their shape)."""
    if isinstance(value, dict):
        return {k: _perturb(v) for k, v in value.items()}
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value * 0.5 + 0.05, 6)
    return {"before": "after", "after": "before", "bicubic": "bilinear", "bilinear": "bicubic",
            "classical": "attention"}.get(value, value) if isinstance(value, str) else value


def _perturbed_params() -> dict:
    """The demo's params.yaml with every shared knob changed, and per-dataset backbones that contradict the
    presets' (the old route by which a shared section reached a paper dataset)."""
    params = read_yaml(ROOT / "params.yaml")
    out = copy.deepcopy(params)
    for key in PERTURBED:
        out[key] = _perturb(params[key])
    out["train"]["transforms"]["test_interpolation"] = "bicubic"
    out["model"]["stride"] = 5
    out["saliency"]["grid"] = [4, 2]
    # kept valid: 'freeze' needs anchor_init (turned off above); one X per context vector
    out["methods"]["dpmpp"]["anchor_mode"] = "loss"
    out["prompts"]["template"] = "A photo of a X X X X X person."
    out["methods"]["dpeformer"]["blending"]["heads"] = 1  # sub-parts of 17 channels split into whole heads
    out["occluders"]["backend"] = "sam"  # the demo's classical library → SAM (no 'attention' mask backend)
    out["seed"] = 17  # not a seed of the demo's replicates
    tiny = {"name": "clip_tiny_p8", "pretrained": None, "img_size": [64, 32], "stride": 6}
    for section in ("prompts", "saliency"):
        out[section]["dataset_backbones"] = {d: tiny for d in ("occluded_duke", "market1501", "dukemtmc")}
    return out


def stage_configs(params: dict, experiment: str) -> dict:
    """Job id → the resolved settings of every per-dataset job upstream of the experiment's training (what those
    stages read: their section for the dataset, the partner-table variant merged, the backbone picked)."""
    plan = build_plan(params)
    out, todo = {}, list(plan.job("train", experiment).deps)
    while todo:
        job = plan.producer(todo.pop())
        todo += job.deps
        if not job.stage.config:
            continue
        sp = StageParams(params, job)
        cfg = spt_section(sp) if job.stage.variants else sp.dataset_section(schema(SECTIONS[job.stage.config]))
        doc = dataclasses.asdict(cfg)
        if hasattr(cfg, "backbone_of"):  # only the backbone the job runs matters
            doc.update(backbone=dataclasses.asdict(cfg.backbone_of(job.ctx["dataset"])), dataset_backbones=None)
        out[job.id] = {"section": job.stage.config, "key": job.ctx["config"], **doc}
    return out


def resolved(params: dict, preset: dict, name: str) -> dict:
    """Everything experiment ``name`` of ``preset`` runs with, once the preset is merged into ``params``."""
    merged = merge(params, preset)
    out = {k: dataclasses.asdict(v) for k, v in resolve_sections(merged, name, SECTIONS_OF_EXPERIMENT).items()}
    jobs = stage_configs(merged, name)
    out["stages"] = jobs
    for job in jobs.values():  # "prompts", "saliency", "spt", "occluders" for the reference table below
        out[job["section"]] = job
    return out


def _experiments(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["experiments"]


def test_every_preset_experiment_inherits_nothing():
    for path in PRESETS:
        for name, entry in _experiments(path).items():
            assert entry.get("inherit") == "defaults", f"{path.name}: {name}"


def test_the_perturbation_reaches_every_demo_row_and_stage():
    """Guard of the test below: the perturbed params change what a demo experiment (inheriting from params.yaml)
    and its per-dataset stages run with, so an identical result below is not for want of a change."""
    demo, perturbed = read_yaml(ROOT / "params.yaml"), _perturbed_params()
    a, b = resolved(demo, {}, "dpmpp"), resolved(perturbed, {}, "dpmpp")
    assert a["methods"]["neck_feat"] != b["methods"]["neck_feat"] and a["train"]["epochs"] != b["train"]["epochs"]
    assert a["evaluate"] != b["evaluate"]
    assert set(a["stages"]) == {"prompts@synthocc", "saliency@synthocc", "spt_sets@synthocc-default"}
    for job in a["stages"]:
        assert a["stages"][job] != b["stages"][job], job
    assert (a["saliency"]["backend"], b["saliency"]["backend"]) == ("classical", "attention")
    assert a["saliency"]["grid"] != b["saliency"]["grid"] and a["spt"]["alpha1"] != b["spt"]["alpha1"]
    a, b = resolved(demo, {}, "dpeformer"), resolved(perturbed, {}, "dpeformer")  # the occluder library
    assert set(a["stages"]) == {"occluders@synthocc"} and a["stages"] != b["stages"]
    assert (a["occluders"]["backend"], b["occluders"]["backend"]) == ("classical", "sam")
    assert a["occluders"]["filters"]["min_area"] != b["occluders"]["filters"]["min_area"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_resolves_the_same_against_any_params(path):
    preset = yaml.safe_load(path.read_text())
    demo, perturbed = read_yaml(ROOT / "params.yaml"), _perturbed_params()
    validate(merge(perturbed, preset))  # the preset is valid on a params.yaml with every knob changed
    for name, entry in preset["experiments"].items():
        a, b = resolved(demo, preset, name), resolved(perturbed, preset, name)
        assert a == b, name
        for job in a["stages"].values():  # read from the preset's dataset_stages, never a shared section
            assert job["key"].startswith(f"dataset_stages.{entry['dataset']}."), (name, job)


def test_dpmpp_occluded_duke_states_neck_feat_before_whatever_params_say():
    preset = yaml.safe_load((ROOT / "workflow" / "presets" / "dpmpp_occluded_duke.yaml").read_text())
    for params in (read_yaml(ROOT / "params.yaml"), _perturbed_params()):
        assert params["methods"]["dpmpp"]["neck_feat"] in ("after", "before")
        assert resolved(params, preset, "dpmpp_occluded_duke")["methods"]["neck_feat"] == "before"


def test_applying_a_preset_changes_no_job_of_the_demo():
    """Every job the demo had tracks the same params keys with the same values after any preset is applied: the
    presets add their own jobs and leave the demo's alone (DVC re-runs none of them)."""
    demo = read_yaml(ROOT / "params.yaml")
    before = {j.id: (j.params, [_value(demo, k) for k in j.params]) for j in build_plan(demo).jobs if j.id != "tables"}
    for path in PRESETS:
        merged = merge(demo, yaml.safe_load(path.read_text()))
        after = {j.id: (j.params, [_value(merged, k) for k in j.params]) for j in build_plan(merged).jobs}
        assert {k: after[k] for k in before} == before, path.name


def _value(params: dict, dotted: str):
    for part in dotted.split("."):
        params = params[part]
    return params


# The reference configs (method-facts.md): DPM configs/*/dpm.yml (§1.4-1.7), CLIP-ReID vit_clipreid.yml with
# SIE+OLP (§3.1-3.3), SPT configs/OCC_Duke/vit_base.yml + loss/make_loss_pt.py (§2.2). Keys: dotted paths into the
# resolved {train, methods, evaluate, prompts, saliency, spt}.
DPM_COMMON = {
    "methods.neck_feat": "before", "methods.backbone.name": "vit_base_patch16_224",
    "methods.backbone.img_size": [256, 128], "methods.backbone.sie": True, "methods.backbone.sie_coef": 3.0,
    "methods.backbone.sie_mode": "all", "methods.backbone.drop_path": 0.1,
    "methods.w_cls": 0.5, "methods.w_mask": 0.5, "methods.w_triplet": 1.0, "methods.arc_scale": 30.0,
    "methods.triplet_margin": None, "methods.cls_loss": "softmax", "methods.mask_loss": "arcface",
    "methods.two_step": True, "methods.hem_reduction": "sum",
    "train.optimizer.name": "sgd", "train.optimizer.lr": 0.008, "train.optimizer.momentum": 0.9,
    "train.optimizer.weight_decay": 1e-4, "train.optimizer.bias_lr_factor": 2.0,
    "train.optimizer.weight_decay_bias": 1e-4, "train.scheduler.name": "cosine", "train.scheduler.warmup_epochs": 5,
    "train.scheduler.warmup_factor": 0.01, "train.scheduler.min_lr_factor": 0.002,
    "train.ids_per_batch": 16, "train.images_per_id": 4, "train.seed": 1234,
    "train.transforms.size": [256, 128], "train.transforms.flip_p": 0.5, "train.transforms.pad": 10,
    "train.transforms.random_erasing_p": 0.5, "train.transforms.erasing_mode": "pixel",
    "train.transforms.mean": [0.5, 0.5, 0.5], "train.transforms.std": [0.5, 0.5, 0.5],
    "train.transforms.interpolation": "bicubic", "train.transforms.test_interpolation": "bilinear",
    "evaluate.metric": "masked_cosine", "evaluate.flip": False, "evaluate.rerank": False,
    "evaluate.protocol": "market", "evaluate.normalize": True,
}
CLIP_STAGE1 = {  # CLIP-ReID stage 1 (§3.2), on the SIE+OLP image encoder (stride 12)
    "prompts.epochs": 120, "prompts.lr": 3.5e-4, "prompts.weight_decay": 1e-4, "prompts.batch_size": 64,
    "prompts.warmup_epochs": 5, "prompts.warmup_lr": 1e-5, "prompts.min_lr": 1e-6, "prompts.n_ctx": 4,
    "prompts.template": "A photo of a X X X X person.", "prompts.temperature": 1.0, "prompts.normalize": False,
    "prompts.interpolation": "bilinear", "prompts.amp": True, "prompts.backbone.name": "clip_vit_b16",
    "prompts.backbone.pretrained": "default", "prompts.backbone.img_size": [256, 128], "prompts.backbone.stride": 12,
}
CLIP_STAGE2 = {  # CLIP-ReID stage 2 (§3.3): schedule, batch, input
    "train.epochs": 60, "train.ids_per_batch": 16, "train.images_per_id": 4, "train.scheduler.name": "multistep",
    "train.scheduler.warmup_epochs": 10, "train.scheduler.warmup_factor": 0.1, "train.scheduler.milestones": [30, 50],
    "train.scheduler.gamma": 0.1, "train.transforms.size": [256, 128], "train.transforms.flip_p": 0.5,
    "train.transforms.pad": 10, "train.transforms.mean": [0.5, 0.5, 0.5], "train.transforms.std": [0.5, 0.5, 0.5],
    "train.transforms.interpolation": "bicubic", "train.transforms.test_interpolation": "bilinear",
    "methods.neck_feat": "before", "methods.backbone.name": "clip_vit_b16", "methods.backbone.pretrained": "default",
    "methods.backbone.img_size": [256, 128], "methods.backbone.stride": 12, "methods.backbone.sie": True,
    "methods.backbone.sie_coef": 1.0, "methods.backbone.sie_mode": "cls", "evaluate.normalize": True,
    "evaluate.rerank": False,
}
CLIPREID = {
    **CLIP_STAGE1, **CLIP_STAGE2, "methods.optimizer.name": "adam", "methods.optimizer.lr": 5e-6,
    "methods.optimizer.weight_decay": 1e-4, "methods.optimizer.bias_lr_factor": 2.0, "methods.id_loss_weight": 0.25,
    "methods.triplet_loss_weight": 1.0, "methods.i2t_loss_weight": 1.0, "methods.triplet_margin": 0.3,
    "methods.label_smoothing": 0.1, "train.transforms.random_erasing_p": 0.5, "evaluate.metric": "euclidean",
}
# DPM++ (no code): CLIP-ReID's stages on the CLIP backbone, DPM's masked metric and losses, SPT's saliency head and
# partner threshold; random erasing off (SPT replaces it: our reading, docs/METHOD.md part 3).
DPMPP = {
    **CLIP_STAGE1, **CLIP_STAGE2, "train.optimizer.name": "adam", "train.optimizer.lr": 5e-6,
    "train.optimizer.weight_decay": 1e-4, "train.optimizer.bias_lr_factor": 2.0, "train.seed": 1234,
    "train.transforms.random_erasing_p": 0.0, "methods.backbone.taps": [2, 4, 10, 12],
    "methods.w_cls": 0.5, "methods.w_mask": 0.5, "methods.w_triplet": 1.0, "methods.arc_scale": 30.0,
    "methods.triplet_margin": None, "methods.cls_loss": "softmax", "methods.mask_loss": "arcface",
    "methods.two_step": True, "methods.hem_reduction": "sum", "methods.anchor_epochs": 10,
    "evaluate.metric": "masked_cosine", "evaluate.protocol": "market",
    "saliency.backend": "sps", "saliency.backbone.name": "clip_vit_b16", "saliency.backbone.stride": 12,
    "saliency.backbone.taps": [2, 4, 10, 12], "saliency.grid": None, "saliency.mean": [0.5, 0.5, 0.5],
    "saliency.sps.epochs": 120, "saliency.sps.ids_per_batch": 16, "saliency.sps.images_per_id": 4,
    "saliency.sps.warmup_epochs": 5, "saliency.sps.optimizer.name": "sgd", "saliency.sps.optimizer.lr": 0.008,
    "saliency.sps.optimizer.weight_decay": 1e-4, "saliency.sps.optimizer.bias_lr_factor": 2.0,
    "saliency.sps.id_weight": 1.0, "saliency.sps.salient_id_weight": 1.0, "saliency.sps.triplet_weight": 1.0,
    "saliency.sps.usage_weight": 50.0, "saliency.sps.usage_target": 0.3, "saliency.sps.rest_weight": 0.1,
    "spt.threshold": 0.5, "spt.alpha1": 0.7,
}
# DPEFormer: the paper's text (Sec. III, Algorithm 1, Sec. IV-B); where it is silent the presets take the released
# code's values, which docs/DPEFORMER.md lists (not repeated here).
DPEFORMER_COMMON = {
    "methods.backbone.name": "vit_base_patch16_224", "methods.backbone.img_size": [256, 128],
    "methods.backbone.stride": 16, "methods.backbone.sie": False, "methods.parts": 4, "methods.dpsm": True,
    "methods.selection.proxy": "patch", "methods.selection.selection": "dynamic", "methods.selection.k_min": 48,
    "methods.selection.split_rule": "paper", "methods.fbm": True, "methods.blending.style": "paper",
    "methods.blending.subpart_dim": 16, "methods.blending.heads": 1, "methods.global_token": "cls",
    "methods.memory_bank": True, "methods.memory.momentum": 0.2, "methods.memory.aug_weight": 0.3,
    "methods.memory.aug_updates": False, "methods.memory.after_fbm": False, "methods.memory.weight": 1.0,
    "methods.id_weights.parts": 1.0, "methods.id_weights.pooled": 1.0, "methods.id_weights.global_feature": 1.0,
    "methods.id_weights.final": 1.0, "methods.neck_feat": "before", "methods.embed_feature": "final",
    "methods.augment.mode": "sam", "methods.augment.p": 1.0, "methods.augment.paste.area": [0.5, 0.75],
    "methods.augment.paste.tall_ratio": 2.0, "methods.augment.paste.positions": "paper",
    "methods.augment.paste.flip_p": 0.5, "methods.augment.paste.shape": "mask",
    "occluders.backend": "sam", "occluders.max_images": 100,  # SAM masks of the first 100 SA-1B images (Sec. IV-B)
    "train.optimizer.name": "adam", "train.optimizer.lr": 1e-4, "train.optimizer.weight_decay": 1e-4,
    "train.scheduler.name": "cosine", "train.epochs": 120, "train.ids_per_batch": 16, "train.images_per_id": 4,
    "train.transforms.size": [256, 128],
}
REFERENCE = {
    "dpeformer_occluded_duke": DPEFORMER_COMMON,
    "dpeformer_occluded_reid": DPEFORMER_COMMON,
    "dpeformer_market1501": DPEFORMER_COMMON,
    "dpeformer_dukemtmc": DPEFORMER_COMMON,
    "dpm_occluded_duke": {**DPM_COMMON, "methods.backbone.stride": 11, "train.epochs": 150, "methods.arc_margin": 0.5,
                          "methods.w_hem": 0.1, "train.transforms.color_jitter": None},
    "dpm_dukemtmc": {**DPM_COMMON, "methods.backbone.stride": 12, "train.epochs": 150, "methods.arc_margin": 0.3,
                     "methods.w_hem": 0.1, "train.transforms.color_jitter": None},
    "dpm_occluded_reid": {**DPM_COMMON, "methods.backbone.stride": 12, "train.epochs": 50, "methods.arc_margin": 0.3,
                          "methods.w_hem": 0.01, "train.transforms.color_jitter": [0.3, 0.3, 0.2, 0.2]},
    "clipreid_occluded_duke": CLIPREID,
    "clipreid_market1501": CLIPREID,
    # DPM's per-dataset choices carried over: margin 0.5 on Occluded-Duke, 0.3 on the holistic sets; Occluded-REID
    # (trained on Market-1501) HEM weight 0.01 and colour jitter (DPM issue #5).
    "dpmpp_occluded_duke": {**DPMPP, "methods.arc_margin": 0.5, "methods.w_hem": 0.1,
                            "train.transforms.color_jitter": None},
    "dpmpp_market1501": {**DPMPP, "methods.arc_margin": 0.3, "methods.w_hem": 0.1, "train.transforms.color_jitter": None},
    "dpmpp_dukemtmc": {**DPMPP, "methods.arc_margin": 0.3, "methods.w_hem": 0.1, "train.transforms.color_jitter": None},
    "dpmpp_occluded_reid": {**DPMPP, "methods.arc_margin": 0.3, "methods.w_hem": 0.01,
                            "train.transforms.color_jitter": [0.3, 0.3, 0.2, 0.2]},
}


def _at(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def test_reference_table_covers_every_single_experiment_preset():
    singles = {p.stem for p in PRESETS if len(_experiments(p)) == 1}
    assert set(REFERENCE) == singles


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_preset_matches_the_reference_config_key_by_key(name):
    preset = yaml.safe_load((ROOT / "workflow" / "presets" / f"{name}.yaml").read_text())
    got = resolved(_perturbed_params(), preset, name)
    wrong = {k: (_at(got, k), v) for k, v in REFERENCE[name].items() if _at(got, k) != v}
    assert not wrong, f"{name}: (ours, reference) {wrong}"
