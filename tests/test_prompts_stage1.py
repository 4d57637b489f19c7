"""CLIP-ReID stage 1: schedule, a tiny prompt-learning run, its outputs, and the ``prompts`` stage CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from occreid.errors import OccreidError
from occreid.models.clip_backbone import ClipImageBackbone, load_clip
from occreid.prompts import PromptsConfig, learn_prompts, load_text_features, write_prompts
from occreid.prompts.train import make_scheduler
from stage_params import DEMO_BACKBONE, exit_code, stage_params, write_params
from stages import prompts as stage

NUM_IDS, PER_ID = 6, 4



class _Images(Dataset):
    """Identity-dependent random images (each id has its own mean colour) as loader items."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.pids = torch.arange(NUM_IDS).repeat_interleave(PER_ID)
        means = torch.randn(NUM_IDS, 3, 1, 1, generator=g)
        self.images = means[self.pids] + 0.3 * torch.randn(len(self.pids), 3, 64, 32, generator=g)

    def __len__(self):
        return len(self.pids)

    def __getitem__(self, i):
        return {"image": self.images[i], "pid": int(self.pids[i]), "camid": 0, "index": i}


def _cfg(**kw) -> PromptsConfig:
    base = dict(epochs=12, lr=5e-3, warmup_epochs=1, warmup_lr=1e-3, min_lr=1e-4, batch_size=8, feature_batch_size=8)
    return PromptsConfig(**{**base, **kw})


def _run(cfg: PromptsConfig):
    clip = load_clip("clip_tiny", seed=0)
    backbone = ClipImageBackbone(clip.visual, img_size=(64, 32), stride=16)
    loader = DataLoader(_Images(), batch_size=5, shuffle=False)
    return clip, learn_prompts(clip, backbone, loader, NUM_IDS, cfg)


def test_cosine_schedule_with_warmup_matches_clipreid_values():
    cfg = PromptsConfig()  # lr 3.5e-4, warm-up 5 epochs from 1e-5, floor 1e-6, 120 epochs
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = make_scheduler(opt, cfg)
    lrs = {}
    for epoch in (1, 3, 5, 60, 120):
        sched.step(epoch)
        lrs[epoch] = opt.param_groups[0]["lr"]
    assert lrs[1] == pytest.approx(1e-5 + (3.5e-4 - 1e-5) / 5)
    assert lrs[3] == pytest.approx(1e-5 + 3 * (3.5e-4 - 1e-5) / 5)
    assert lrs[5] == pytest.approx(1e-6 + 0.5 * (3.5e-4 - 1e-6) * (1 + math.cos(math.pi * 5 / 120)))
    assert lrs[60] == pytest.approx(1e-6 + 0.5 * (3.5e-4 - 1e-6))
    assert lrs[120] == pytest.approx(1e-6)


def test_tiny_run_learns_only_prompts():
    clip, res = _run(_cfg())
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 12 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]
    assert res.text_features.shape == (NUM_IDS, 32) and res.text_features.dtype == torch.float32
    assert losses == pytest.approx([h["loss_i2t"] + h["loss_t2i"] for h in res.history], rel=1e-6)
    # the frozen CLIP model is untouched; the learned prompts moved away from their N(0, 0.02) init
    fresh = load_clip("clip_tiny", seed=0)
    for (name, p), q in zip(clip.named_parameters(), fresh.parameters()):
        if name != "visual.positional_embedding":  # resampled to the 4x2 grid by the backbone
            assert torch.equal(p, q), name
    assert res.prompt_learner.ctx.std() > 0.03


def test_tiny_run_is_deterministic_under_its_seed():
    _, a = _run(_cfg(epochs=2))
    _, b = _run(_cfg(epochs=2))
    _, c = _run(_cfg(epochs=2, seed=1))
    assert torch.equal(a.text_features, b.text_features)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    assert not torch.equal(a.text_features, c.text_features)


def test_outputs_written_and_read_back(tmp_path):
    _, res = _run(_cfg(epochs=2))
    out = write_prompts(tmp_path / "prompts" / "toy", res.text_features, res.prompt_learner,
                        {"backbone": {"name": "clip_tiny", "pretrained": None, "img_size": [64, 32], "stride": 16}})
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "prompts.pt", "text_features.pt"]
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["num_ids"], meta["embed_dim"], meta["n_ctx"]) == (NUM_IDS, 32, 4)
    assert torch.equal(load_text_features(out, num_ids=NUM_IDS, embed_dim=32), res.text_features)
    state = torch.load(out / "prompts.pt", weights_only=True)
    assert torch.equal(state["ctx"], res.prompt_learner.ctx.detach())
    with pytest.raises(OccreidError, match="7 identities|for 6 identities"):
        load_text_features(out, num_ids=7)
    with pytest.raises(OccreidError, match="dim 32"):
        load_text_features(out / "text_features.pt", embed_dim=512)
    with pytest.raises(OccreidError, match="stride: prompts 16 vs model 12"):
        load_text_features(out, backbone={"name": "clip_tiny", "pretrained": None, "img_size": [64, 32], "stride": 12})
    with pytest.raises(OccreidError, match="run the prompts stage"):
        load_text_features(tmp_path / "nowhere")


def test_config_values_are_checked():
    with pytest.raises(OccreidError, match="prompts.lr"):
        PromptsConfig(lr=0.0)
    with pytest.raises(OccreidError, match="X"):
        PromptsConfig(template="A photo of a person.")


def _market_folder(root, train_ids=4, per_id=3):
    rng = np.random.default_rng(0)
    for split, pids in (("bounding_box_train", range(1, train_ids + 1)), ("query", [50]), ("bounding_box_test", [50, 51])):
        (root / split).mkdir(parents=True)
        for pid in pids:
            for k in range(per_id):
                cam = 1 + k % 2 if split != "query" else 1
                arr = rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg")


def test_stage_cli_writes_text_features(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _market_folder(tmp_path / "data" / "prepared" / "synthocc")
    small = {"epochs": 2, "batch_size": 4, "feature_batch_size": 4, "num_workers": 0}
    write_params(tmp_path, stage_params(prompts=small))
    assert exit_code(stage.main, ["--dataset", "synthocc", "--device", "cpu"]) == 0
    out = tmp_path / "data" / "prompts" / "synthocc"
    feats = torch.load(out / "text_features.pt", weights_only=True)
    assert feats.shape == (4, 32)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"] == "synthocc" and meta["num_images"] == 12 and len(meta["history"]) == 2
    assert meta["backbone"]["name"] == "clip_tiny" and meta["prompts"]["epochs"] == 2
    assert meta["backbone"]["img_size"] == [64, 32] and meta["backbone"]["stride"] is None

    # the prompts' backbone must be the one of the experiments training on the dataset
    params = stage_params(prompts={**small, "backbone": {"stride": 8}})
    write_params(tmp_path, params)
    assert exit_code(stage.main, ["--dataset", "synthocc"]) == 2
    err = capsys.readouterr().err
    assert "uses another backbone than the prompts stage runs for synthocc (stride: prompts 8 vs experiment None)" in err
    assert "prompts.dataset_backbones.synthocc" in err
    # ... unless the dataset has its own entry that matches
    params["prompts"]["dataset_backbones"] = {"synthocc": DEMO_BACKBONE}
    write_params(tmp_path, params)
    assert exit_code(stage.main, ["--dataset", "synthocc", "--device", "cpu"]) == 0
    write_params(tmp_path, stage_params(prompts={**small, "epoch": 3}))
    assert exit_code(stage.main, ["--dataset", "synthocc"]) == 2
    assert "unknown params key 'prompts.epoch'" in capsys.readouterr().err
    write_params(tmp_path, stage_params(prompts=small))
    assert exit_code(stage.main, ["--dataset", "market1501"]) == 2  # no experiment needs its prompts
    assert "no job 'prompts@market1501'" in capsys.readouterr().err
