"""A released checkpoint as an experiment (``weights: <file>``): the train stage imports it through the method's
adapter instead of training, and the evaluate stage scores it. Reference-format state dicts are made here from a
tiny DPM (our names → the released names with DataParallel's ``module.`` prefix)."""

from __future__ import annotations


import pytest
import torch
import yaml

from occreid.engine import load_model
from occreid.errors import OccreidError
from occreid.models.adapters.dpm import to_reference_names
from occreid.models.adapters.released import sha256_of
from stages import common
from tests.dag_fixtures import ROOT, tiny


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny synthocc, prepared once, and a params.yaml with a `dpm_released` experiment."""
    import os

    from stages import prepare_data

    root = tmp_path_factory.mktemp("released")
    params = tiny(common.read_yaml(ROOT / "params.yaml"))
    params["experiments"] = {"dpm": params["experiments"]["dpm"],
                             "dpm_released": {"dataset": "synthocc", "method": "dpm", "weights": "ref.pth"},
                             "clipreid_released": {"dataset": "synthocc", "method": "clipreid", "weights": "clip.pth"}}
    params["tables"]["tables"] = []
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    old = os.getcwd()
    os.chdir(root)
    try:
        prepare_data.main(["--dataset", "synthocc"])
    finally:
        os.chdir(old)
    return root


def _reference_checkpoint(root, path, drop=None):
    """The state dict a DPM of this experiment's shape has, saved under the released names."""
    from occreid.data.datasets import create_dataset
    from occreid.methods import create_method

    params = common.read_yaml(root / "params.yaml")
    cfg = common.resolve_sections(params, "dpm_released", ("methods",))["methods"]
    splits = create_dataset("synthocc", root / "data" / "prepared" / "synthocc", check_counts=False)
    torch.manual_seed(5)
    method = create_method("dpm", cfg, splits.num_train_pids, splits.num_cams)
    sd = {f"module.{k}": v for k, v in to_reference_names(method.state_dict()).items() if k != drop}
    if drop:
        sd = {k: v for k, v in sd.items() if not k.endswith(drop)}
    torch.save(sd, path)
    return method.state_dict()


def test_released_weights_are_imported_not_trained_and_evaluated(project, monkeypatch):
    from stages import evaluate, train

    monkeypatch.chdir(project)
    made = _reference_checkpoint(project, project / "ref.pth")
    out = train.train("dpm_released", "params.yaml")
    method, config = load_model(out / "model.pt")
    got = method.state_dict()
    assert set(got) == set(made) and all(torch.equal(got[k], made[k]) for k in made)  # exactly the file's tensors
    assert config["weights"] == {"file": "ref.pth", "sha256": sha256_of(project / "ref.pth")}
    assert (out / "train_metrics.json").is_file() and "epochs" in (out / "train_metrics.json").read_text()
    report = evaluate.evaluate("dpm_released", "params.yaml")
    metrics = yaml.safe_load((report / "metrics.json").read_text())
    assert 0.0 <= metrics["subsets"]["all"]["R1"] <= 1.0


def test_a_released_clipreid_needs_no_prompts_stage_its_checkpoint_holds_the_prompts(project, monkeypatch):
    """CLIP-ReID saves its prompt learner and text tower: the import recomputes the text features from them, so the
    train job of a `weights:` experiment does not depend on (or run) stage 1, and no data/prompts is read."""
    from occreid.data.datasets import create_dataset
    from occreid.methods import create_method
    from occreid.models.clip_backbone import load_clip
    from occreid.models.prompt_learner import ClipTextEncoder, PromptLearner
    from occreid.prompts import compute_text_features
    from stages import evaluate, train
    from stages.registry import build_plan
    from tests.test_clipreid import _as_clipreid

    monkeypatch.chdir(project)
    params = common.read_yaml(project / "params.yaml")
    assert build_plan(params).job("train", "clipreid_released").deps == ("data/prepared/synthocc",)
    cfg = common.resolve_sections(params, "clipreid_released", ("methods",))["methods"]
    splits = create_dataset("synthocc", project / "data" / "prepared" / "synthocc", check_counts=False)
    torch.manual_seed(7)
    source = create_method("clipreid", cfg, splits.num_train_pids, splits.num_cams)
    clip = load_clip(cfg.backbone.name, None, seed=11)  # a text tower unlike the one the import starts from
    learner = PromptLearner(splits.num_train_pids, clip.token_embedding, context_length=clip.context_length,
                            generator=torch.Generator().manual_seed(9))
    encoder = ClipTextEncoder(clip)
    torch.save(_as_clipreid(source, learner, encoder), project / "clip.pth")
    assert not (project / "data" / "prompts").exists()
    out = train.train("clipreid_released", "params.yaml")
    method, config = load_model(out / "model.pt")
    with torch.no_grad():
        want = compute_text_features(learner, encoder)
    assert torch.allclose(method.text_features, want, atol=1e-6) and bool(want.abs().sum() > 0)
    got, made = method.state_dict(), source.state_dict()
    assert all(torch.equal(got[k], made[k]) for k in made if k != "text_features")
    assert config["methods"]["clipreid"]["text_features"] is None
    metrics = yaml.safe_load((evaluate.evaluate("clipreid_released", "params.yaml") / "metrics.json").read_text())
    assert 0.0 <= metrics["subsets"]["all"]["mAP"] <= 1.0


def test_a_checkpoint_that_does_not_fit_names_the_missing_keys(project, monkeypatch):
    from stages import train

    monkeypatch.chdir(project)
    _reference_checkpoint(project, project / "ref.pth", drop="bottleneck.weight")
    with pytest.raises(OccreidError, match=r"missing in the checkpoint: neck\.bn\.weight"):
        train.train("dpm_released", "params.yaml")


def test_a_pinned_hash_refuses_another_file(project, monkeypatch, tmp_path):
    from stages import train

    monkeypatch.chdir(project)
    _reference_checkpoint(project, project / "ref.pth")
    params = common.read_yaml(project / "params.yaml")
    params["experiments"]["dpm_released"]["weights_sha256"] = "0" * 64
    path = tmp_path / "pinned.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(OccreidError, match="checkpoint sha256 is"):
        train.train("dpm_released", path)


PRESET = {
    "experiments": {"dpm_release_demo": {
        "dataset": "synthocc", "method": "dpm", "inherit": "defaults",
        "overrides": {"methods": {"dpm": {"backbone": {"name": "vit_tiny_p8", "pretrained": None, "img_size": [64, 32]}}},
                      "train": {"transforms": {"size": [64, 32], "test_interpolation": "bilinear"}},
                      "evaluate": {"metric": "masked_cosine", "max_rank": 10}}}},
}


@pytest.mark.slow  # dvc repro of prepare, import and evaluate: about a minute and a half
def test_evaluate_checkpoint_runs_the_dag_and_prints_ours_beside_the_paper(tmp_path):
    """The one-command route end to end: preset + weights → params.yaml, dvc repro evaluate@…, comparison."""
    from occreid.config import merge
    from occreid.data.datasets import create_dataset
    from occreid.methods import create_method
    from tests.dag_fixtures import project_copy, run, tool_env

    project = project_copy(tmp_path / "p")
    run(["dvc", "init", "--no-scm", "-q"], project)
    run(["dvc", "repro", "-q", "prepare_data@synthocc"], project)
    preset = tmp_path / "release_demo.yaml"
    preset.write_text(yaml.safe_dump(PRESET, sort_keys=False))
    merged = merge(common.read_yaml(project / "params.yaml"), PRESET)
    cfg = common.resolve_sections(merged, "dpm_release_demo", ("methods",))["methods"]
    splits = create_dataset("synthocc", project / "data" / "prepared" / "synthocc", check_counts=False)
    method = create_method("dpm", cfg, splits.num_train_pids, splits.num_cams)
    torch.save({f"module.{k}": v for k, v in to_reference_names(method.state_dict()).items()}, tmp_path / "w.pth")
    proc = run(["occreid", "evaluate-checkpoint", "--preset", str(preset), "--weights", str(tmp_path / "w.pth")],
               project)
    assert "| dpm_release_demo | dpm | synthocc |" in proc.stdout  # the comparison row (nothing published: dashes)
    assert (project / "reports" / "eval" / "dpm_release_demo" / "metrics.json").is_file()
    params = common.read_yaml(project / "params.yaml")
    assert params["experiments"]["dpm_release_demo"]["weights"] == str(tmp_path / "w.pth")
    assert "dpm_release_demo" in (project / "dvc.yaml").read_text()
    import subprocess

    bad = subprocess.run(["occreid", "evaluate-checkpoint", "--preset", str(preset), "--weights",
                          str(tmp_path / "none.pth")], cwd=project, env=tool_env(project), capture_output=True, text=True)
    assert bad.returncode == 2 and "checkpoint file not found" in bad.stderr and "none.pth" in bad.stderr
