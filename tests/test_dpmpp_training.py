"""DPM++ through the engine: its own batches (the ``train_data`` hook) — pairs, labels, transfers, the
ablations' samplers —, a short clip_tiny training whose loss falls, exact resume, and the input checks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from engine_fixtures import KillAt, Killed
from dpmpp_fixtures import H, W, make_method, person_records, write_partner_table, write_text_features
from occreid.augment.pairing import OcclusionPairSampler
from occreid.augment.transfer import transfer_image
from occreid.config import from_dict
from occreid.data.transforms import TransformConfig, build_test_transform
from occreid.engine import TrainConfig, fit
from occreid.engine.checkpoint import list_checkpoints
from occreid.errors import OccreidError
from occreid.losses.mask_guided import pair_indices
from occreid.methods.dpmpp import ABLATIONS, VARIANTS, DPMPPMethod, ReplacementSampler
from occreid.saliency.store import load_rgb

IDS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """(records, partner table, method inputs): 4 ids × 4 images, a random partner table, random text."""
    tmp = tmp_path_factory.mktemp("dpmpp")
    records = person_records(tmp / "ds", ids=IDS)
    sets = write_partner_table(tmp / "spt" / "partners.npz", records, tmp / "ds")
    inputs = {"text_features": str(write_text_features(tmp / "prompts", IDS)), "spt_partners": str(tmp / "spt")}
    return records, sets, inputs


def train_config(**over) -> TrainConfig:
    base = {"epochs": 2, "ids_per_batch": 2, "images_per_id": 2, "log_period": 100,
            "optimizer": {"name": "adamw", "lr": 0.002}, "scheduler": {"warmup_epochs": 1, "min_lr_factor": 0.1},
            "transforms": {"size": [H, W], "pad": 2, "random_erasing_p": 0.0}}
    return from_dict(TrainConfig, {**base, **over})


TEST_TF = build_test_transform(TransformConfig(size=[H, W]))


def batches(method: DPMPPMethod, records, cfg: TrainConfig, epoch: int = 1) -> list[dict]:
    dataset, sampler = method.train_data(records, TEST_TF, cfg, cfg.seed)
    sampler.set_epoch(epoch)
    return list(DataLoader(dataset, batch_sampler=sampler))


class Seen(DPMPPMethod):
    """Records the batches the engine hands to the method."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen: list[dict] = []

    def train_step(self, batch, ctx):
        self.seen.append({k: v.detach().clone() for k, v in batch.items()})
        return super().train_step(batch, ctx)


def test_engine_hands_paired_batches_to_the_method(data, tmp_path):
    records, sets, inputs = data
    cfg = make_method(IDS, **inputs, transfer={"p": 1.0, "pairs_per_id": 1}).cfg
    torch.manual_seed(0)
    m = Seen(cfg, IDS, 3)
    fit(m, records, train_config(epochs=1), tmp_path)
    assert [e for e, _ in list_checkpoints(tmp_path / "checkpoints")] == [1]
    assert len(m.seen) == 4  # 4 ids × 4 images / (2 × 2) per P×K batch
    for b in m.seen:
        assert len(b["pid"]) == 2 * (2 + 1)
        counts = Counter(b["pair_id"][b["pair_id"] >= 0].tolist())
        assert sorted(counts) == [0, 1] and set(counts.values()) == {2}  # one pair per identity, both in the batch
        src, view = pair_indices(b["pair_id"], b["is_transferred"])
        assert len(view) == 2  # p = 1 and everyone has partners: every pair's view is a transfer
        assert torch.equal(b["index"][src], b["index"][view]) and torch.equal(b["pid"][src], b["pid"][view])
        for v in view.tolist():
            i, j = b["index"][v].item(), b["partner"][v].item()
            assert b["pid"][v].item() == records[i].pid  # the transferred view keeps its source's label
            assert j in sets.table.partner[i] and records[j].pid != records[i].pid


def test_transferred_view_is_the_source_in_the_partners_scene(data):
    records, sets, inputs = data
    m = make_method(IDS, **inputs, transfer={"p": 1.0, "pairs_per_id": 2})
    checked = 0
    for b in batches(m, records, train_config()):
        for v in torch.nonzero(b["is_transferred"]).flatten().tolist():
            i, j, r = b["index"][v].item(), b["partner"][v].item(), b["roll"][v].item()
            want, _ = transfer_image(load_rgb(records[i].path, (H, W)), load_rgb(records[j].path, (H, W)),
                                     sets.masks[j], r, sets.geometry)
            torch.testing.assert_close(b["image"][v], TEST_TF(Image.fromarray(want)))
            checked += 1
    assert checked == 4 * 2 * 2  # 4 batches × 2 ids × 2 views


def test_no_pairing_replaces_images_in_place(data):
    records, _, inputs = data
    cfg = train_config()
    m = make_method(IDS, **inputs, **{**ABLATIONS["no_pairing"], "transfer": {"p": 1.0}})
    dataset, sampler = m.train_data(records, TEST_TF, cfg, cfg.seed)
    assert isinstance(sampler, ReplacementSampler) and sampler.batch_size == 4
    paired = make_method(IDS, **inputs).train_data(records, TEST_TF, cfg, cfg.seed)[1]
    sampler.set_epoch(1), paired.set_epoch(1)
    for items, base in zip(sampler, paired.base):
        assert [it.index for it in items] == list(base)  # the engine's P×K batch, each image replaced
    for b in batches(m, records, cfg):
        assert (b["pair_id"] == -1).all() and b["is_transferred"].all()
        assert torch.equal(b["pid"], torch.tensor([records[i].pid for i in b["index"].tolist()]))


@pytest.mark.parametrize("row", ["no_spt", "random_erasing", "cut_paste"])
def test_occlusion_baselines_need_no_partner_table(data, row):
    records, _, inputs = data
    over = ABLATIONS[row]
    m = make_method(IDS, text_features=inputs["text_features"], **{**over, "transfer": {**over["transfer"], "p": 1.0}})
    _, sampler = m.train_data(records, TEST_TF, train_config(), 0)
    assert isinstance(sampler, OcclusionPairSampler) and not isinstance(sampler, ReplacementSampler)
    for b in batches(m, records, train_config()):
        moved = b["is_transferred"]
        assert Counter(b["pair_id"][b["pair_id"] >= 0].tolist()) == {0: 2, 1: 2, 2: 2, 3: 2}
        if row == "no_spt":
            assert not moved.any()  # the second view of each pair is holistic
        elif row == "random_erasing":
            assert moved.sum() == 4 and (b["partner"][moved] == -1).all()
        else:
            donors = b["partner"][moved].tolist()
            assert len(donors) == 4 and all(records[d].pid != records[i].pid
                                            for d, i in zip(donors, b["index"][moved].tolist()))


def test_dpmpp_trains_on_clip_tiny_and_the_loss_falls(data, tmp_path):
    records, _, inputs = data
    m = make_method(IDS, **inputs, anchor_epochs=1, transfer={"p": 1.0, "pairs_per_id": 1})
    history = fit(m, records, train_config(epochs=5), tmp_path)
    first, last = history[0], history[-1]
    assert {"id", "mask_id", "hem", "triplet", "consistency", "loss_mask_step"} <= set(first)
    assert last["loss"] < 0.8 * first["loss"]
    assert last["mask_id"] < first["mask_id"] and last["triplet"] < first["triplet"]


@pytest.mark.parametrize("variant", ["full", "token_transfer"])
def test_resume_replays_the_same_paired_batches(data, tmp_path, variant):
    """2 epochs straight == 1 epoch, a kill in epoch 2, a restart that resumes (pixel and token transfer)."""
    records, _, inputs = data
    over = {**ABLATIONS.get(variant, {}), **VARIANTS.get(variant, {})}
    over["transfer"] = {**over.get("transfer", {}), "p": 0.7}
    cfg = train_config(transforms={"size": [H, W], "pad": 2, "random_erasing_p": 0.5})

    straight = make_method(IDS, **inputs, anchor_epochs=1, **over)
    ref = fit(straight, records, cfg, tmp_path / "straight")
    with pytest.raises(Killed):
        victim = make_method(IDS, **inputs, anchor_epochs=1, **over)
        fit(victim, records, cfg, tmp_path / "killed", callbacks=[KillAt(2)])
    restarted = make_method(IDS, seed=7, **inputs, anchor_epochs=1, **over)
    resumed = fit(restarted, records, cfg, tmp_path / "killed")
    for k, v in straight.state_dict().items():
        assert torch.equal(v, restarted.state_dict()[k]), k
    drop = {"seconds", "images_per_s"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed] == [
        {k: v for k, v in h.items() if k not in drop} for h in ref]


def test_partner_table_is_required_and_checked(data, tmp_path):
    records, _, inputs = data
    m = make_method(IDS, text_features=inputs["text_features"])
    with pytest.raises(OccreidError, match="needs the partner table"):
        fit(m, records, train_config(epochs=1), tmp_path / "a")
    m = make_method(IDS, **inputs)
    with pytest.raises(OccreidError, match="other images"):
        m.train_data(records[:-1], TEST_TF, train_config(), 0)
    shuffled = records[1:] + records[:1]
    with pytest.raises(OccreidError, match="other images"):
        m.train_data(shuffled, TEST_TF, train_config(), 0)
    assert np.all(m.partner_table(records).table.counts() > 0)
