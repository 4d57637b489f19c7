"""Occlusion-aware pairing: pairs share a batch, batch size and PK structure hold, draws are seeded; the
paired dataset keeps the source label and fills the documented batch fields."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from occreid.augment.config import SptConfig, TransferConfig
from occreid.augment.oiou import binarise
from occreid.augment.pairing import (CUT_PASTE, ERASE, HOLISTIC, SPT, OcclusionPairSampler, PairItem,
                                     build_paired_train_loader)
from occreid.augment.partners import PartnerTable, SptSets, build_partner_table
from occreid.augment.transfer import transfer_image
from occreid.data.datasets import create_dataset
from occreid.data.sampler import PKBatchSampler
from occreid.data.transforms import TransformConfig, build_test_transform
from occreid.errors import OccreidError
from occreid.models.factory import BackboneConfig
from occreid.saliency import SaliencyConfig, compute_saliency
from occreid.saliency.config import ClassicalConfig
from occreid.saliency.store import load_rgb
from saliency_fixtures import build_person_dataset

PIDS = np.repeat(np.arange(6), 5)  # 6 identities x 5 images


def full_table(n: int = 30, c: int = 3) -> PartnerTable:
    """Image i's partners: (i + 5) % n, (i + 10) % n, ... with roll = slot number; image 0 has none."""
    partner = np.array([[(i + 5 * (k + 1)) % n for k in range(c)] for i in range(n)], np.int32)
    partner[0] = -1
    roll = np.tile(np.arange(c, dtype=np.int16), (n, 1))
    return PartnerTable(partner, np.where(partner >= 0, roll, 0), np.ones((n, c)))


def sampler(cfg: TransferConfig, seed: int = 0, p_ids: int = 3, k: int = 4, table=None) -> OcclusionPairSampler:
    base = PKBatchSampler(PIDS, p_ids, k, seed=seed)
    return OcclusionPairSampler(base, PIDS, cfg, full_table() if table is None else table)


def test_batch_size_pk_structure_and_pairs():
    cfg = TransferConfig(p=0.5, pairs_per_id=2)
    s = sampler(cfg)
    base_batches = [list(b) for b in s.base]
    assert len(s) == len(base_batches)
    for items, base in zip(s, base_batches):
        items = [PairItem(*it) for it in items]
        assert len(items) == s.batch_size == 3 * (4 + 2)
        for block in range(3):  # identity blocks of K + m items, one identity each
            chunk = items[block * 6:(block + 1) * 6]
            assert len({PIDS[it.index] for it in chunk}) == 1
            assert [it.index for it in chunk[:4]] == base[block * 4:(block + 1) * 4]  # PK batch kept, in order
            assert all(it.pair_id >= 0 for it in chunk[4:])
        assert len({PIDS[it.index] for it in items}) == 3
        pairs = Counter(it.pair_id for it in items if it.pair_id >= 0)
        assert sorted(pairs) == list(range(6)) and set(pairs.values()) == {2}
        for pid in pairs:
            a, b = [it for it in items if it.pair_id == pid]
            assert a.index == b.index and a.kind == HOLISTIC  # the holistic source, then its view
        assert sum(it.pair_id == -1 for it in items) == 3 * 2


def views(items) -> list[PairItem]:
    """The second item of each pair (the view appended after the identity's K images)."""
    seen, out = set(), []
    for it in (PairItem(*x) for x in items):
        if it.pair_id >= 0:
            (out.append(it) if it.pair_id in seen else seen.add(it.pair_id))
    return out


def test_views_come_from_the_partner_table():
    table = full_table()
    for items in sampler(TransferConfig(p=1.0, pairs_per_id=4), table=table):
        for it in views(items):
            if it.index == 0:  # no partners: a second holistic view instead
                assert it.kind == HOLISTIC and it.partner == -1
            else:
                assert it.kind == SPT and it.partner != it.index
                slot = list(table.partner[it.index]).index(it.partner)
                assert it.roll == table.roll[it.index, slot]


def test_p_zero_and_mode_none_give_holistic_second_views():
    for cfg in (TransferConfig(p=0.0), TransferConfig(mode="none", p=1.0)):
        for items in sampler(cfg):
            assert all(PairItem(*it).kind == HOLISTIC and PairItem(*it).partner == -1 for it in items)


def test_baseline_modes():
    for items in sampler(TransferConfig(mode="cut_paste", p=1.0), table=None):
        got = views(items)
        assert len(got) == 6 and all(v.kind == CUT_PASTE and PIDS[v.partner] != PIDS[v.index] for v in got)
    for items in sampler(TransferConfig(mode="random_erasing", p=1.0), table=None):
        assert Counter(PairItem(*it).kind for it in items)[ERASE] == 3 * 2


def test_deterministic_per_seed_and_epoch():
    cfg = TransferConfig(p=0.5, seed=4)
    a, b = sampler(cfg), sampler(cfg)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    c = sampler(TransferConfig(p=0.5, seed=5))

    def pk_part(items):  # the first K = 4 items of each identity block of 6
        return [PairItem(*x).index for blk in range(3) for x in items[blk * 6:blk * 6 + 4]]

    assert [pk_part(it) for it in a] == [pk_part(it) for it in c]  # the transfer seed leaves the PK batches
    assert list(a) != list(c)  # and changes the pairs and views
    state = b.state_dict()
    d = sampler(cfg)
    d.load_state_dict(state)
    assert list(d) == list(b)


def test_sampler_errors():
    with pytest.raises(OccreidError, match="pairs_per_id"):
        sampler(TransferConfig(pairs_per_id=5))
    with pytest.raises(OccreidError, match="partner table"):
        OcclusionPairSampler(PKBatchSampler(PIDS, 2, 2), PIDS, TransferConfig(), None)
    with pytest.raises(OccreidError, match="rows"):
        OcclusionPairSampler(PKBatchSampler(PIDS, 2, 2), PIDS, TransferConfig(), full_table(n=10))


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    root = build_person_dataset(tmp_path_factory.mktemp("pairs") / "ds", ids=4, per_id=4)
    splits = create_dataset("synthocc", root)
    cfg = SaliencyConfig(img_size=[32, 16], grid=[8, 4], classical=ClassicalConfig(method="contrast"))
    sal = compute_saliency(splits.train, root, cfg, BackboneConfig(), device="cpu")
    masks = binarise(sal.maps, 0.5)
    pids = np.array([r.pid for r in splits.train])
    table = build_partner_table(masks, pids, SptConfig(alpha1=0.5, candidates=4))
    return splits.train, SptSets(table, masks, sal.geometry, sal.paths, pids, {})


def test_loader_batches_keep_labels_and_fields(tiny_sets):
    records, sets = tiny_sets
    assert (sets.table.counts() > 0).all()  # the person boxes overlap: everyone has a partner
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=False), v2.ToPureTensor()])
    loader, smp, _ = build_paired_train_loader(records, to_tensor, TransferConfig(p=1.0, pairs_per_id=1), sets=sets,
                                               ids_per_batch=2, images_per_id=2, seed=0)
    n = 0
    for batch in loader:
        n += 1
        assert batch["image"].shape == (6, 3, 32, 16)
        assert batch["is_transferred"].dtype == torch.bool and batch["is_transferred"].sum() == 2
        for b in torch.nonzero(batch["is_transferred"]).flatten().tolist():
            i, j, r = batch["index"][b].item(), batch["partner"][b].item(), batch["roll"][b].item()
            assert batch["pid"][b].item() == records[i].pid  # the label stays i's
            assert j in sets.table.partner[i]
            expected, _ = transfer_image(load_rgb(records[i].path, (32, 16)), load_rgb(records[j].path, (32, 16)),
                                         sets.masks[j], r, sets.geometry)
            assert torch.equal(batch["image"][b], torch.from_numpy(expected).permute(2, 0, 1).float())
        holistic = batch["pair_id"] >= 0
        assert Counter(batch["pair_id"][holistic].tolist()) == {0: 2, 1: 2}
    assert n == len(smp) > 0


def test_token_space_items(tiny_sets):
    records, sets = tiny_sets
    tf = build_test_transform(TransformConfig(size=[32, 16]))
    loader, _, _ = build_paired_train_loader(records, tf, TransferConfig(p=1.0, pairs_per_id=1, space="token"),
                                             sets=sets, ids_per_batch=2, images_per_id=2, seed=0, plain_transform=tf)
    batch = next(iter(loader))
    assert batch["partner_image"].shape == batch["image"].shape == (6, 3, 32, 16)
    assert batch["partner_mask"].shape == (6, 8, 4) and batch["partner_mask"].dtype == torch.bool
    t = batch["is_transferred"]
    assert batch["partner_mask"][~t].all() and (batch["partner_image"][~t] == 0).all()
    for b in torch.nonzero(t).flatten().tolist():
        assert torch.equal(batch["partner_mask"][b], torch.from_numpy(sets.masks[batch["partner"][b].item()]))
