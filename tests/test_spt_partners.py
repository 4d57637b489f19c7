"""Partner tables: α1/α2 admission by hand, never self, other identities first, seeded and byte-stable storage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from occreid.augment.config import SptConfig
from occreid.augment.oiou import oiou
from occreid.augment.partners import PartnerTable, SptSets, build_partner_table, load_spt_sets, save_spt_sets
from occreid.data.records import Record
from occreid.errors import OccreidError
from occreid.saliency.geometry import PatchGeometry

MI = np.array([[0, 1, 1, 0], [0, 1, 1, 0]], bool)
MJ = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], bool)
NARROW = np.array([[0, 0, 1, 0], [0, 0, 1, 0]], bool)
EMPTY = np.zeros((2, 4), bool)


def test_hand_case_alpha1_and_alpha2():
    masks = np.stack([MI, MJ, NARROW, EMPTY])
    pids = [0, 1, 2, 3]
    t = build_partner_table(masks, pids, SptConfig(alpha1=0.7, alpha2=0.5, max_roll=2, candidates=3))
    # MI: MJ via roll +1 (1.0), NARROW at roll 0 (1.0); EMPTY has no person (OIoU 0)
    assert t.of(0) == [(1, 1, 1.0), (2, 0, 1.0)]
    # MJ: MI via roll -1 (1.0); NARROW at roll 0 (1.0)
    assert t.of(1) == [(0, -1, 1.0), (2, 0, 1.0)]
    # NARROW: no roll admitted (self-overlap 0); at r=0 it covers 1/2 of MI and MJ < 0.7
    assert t.of(2) == []
    assert t.of(3) == []
    assert t.partner[2].tolist() == [-1, -1, -1] and t.roll[2].tolist() == [0, 0, 0]
    assert t.score[2].tolist() == [0, 0, 0]
    # stricter rolling: MI only reaches MJ at r=0 with 0.5 < 0.7
    t = build_partner_table(masks, pids, SptConfig(alpha1=0.7, alpha2=0.6, max_roll=2, candidates=3))
    assert t.of(0) == [(2, 0, 1.0)]
    # looser OIoU: NARROW accepts MI and MJ at 0.5
    t = build_partner_table(masks, pids, SptConfig(alpha1=0.5, alpha2=0.5, max_roll=2, candidates=3))
    assert t.of(2) == [(0, 0, 0.5), (1, 0, 0.5)]


def test_dtypes_and_padding():
    t = build_partner_table(np.stack([MI, MJ]), [0, 1], SptConfig(candidates=4))
    assert (t.partner.dtype, t.roll.dtype, t.score.dtype) == (np.int32, np.int16, np.float16)
    assert t.partner.shape == (2, 4) and t.counts().tolist() == [1, 1]


def test_never_pairs_an_image_with_itself_even_when_it_is_its_own_best_match():
    masks = np.stack([MI] * 5)
    t = build_partner_table(masks, [0, 1, 2, 3, 4], SptConfig(candidates=10))
    for i in range(5):
        assert i not in t.partner[i]
        assert sorted(j for j, _, _ in t.of(i)) == [j for j in range(5) if j != i]


def test_other_identities_first_then_the_same_identity():
    masks = np.stack([MI] * 6)
    pids = [0, 0, 0, 1, 1, 2]
    t = build_partner_table(masks, pids, SptConfig(candidates=4, seed=3))
    for i in range(6):
        got = [j for j, _, _ in t.of(i)]
        other = [j for j in got if pids[j] != pids[i]]
        assert got[:len(other)] == other  # other identities occupy the first places
        n_other = sum(p != pids[i] for p in pids)
        assert len(other) == min(4, n_other)
    # identity 2 has 5 partners of other identities: only 4 fit, none of its own identity needed
    assert all(pids[j] != 2 for j, _, _ in t.of(5))
    t = build_partner_table(masks, pids, SptConfig(candidates=4, prefer_other_ids=False, seed=3))
    assert t.counts().tolist() == [4] * 6


def test_same_seed_same_table_different_seed_other_draw():
    rng = np.random.default_rng(0)
    masks = rng.random((40, 4, 3)) < 0.6
    pids = rng.integers(0, 8, 40)
    cfg = SptConfig(alpha1=0.3, candidates=3, seed=11)
    a = build_partner_table(masks, pids, cfg)
    b = build_partner_table(masks, pids, cfg)
    assert a.partner.tobytes() == b.partner.tobytes() and a.roll.tobytes() == b.roll.tobytes()
    c = build_partner_table(masks, pids, SptConfig(alpha1=0.3, candidates=3, seed=12))
    assert not np.array_equal(a.partner, c.partner)


@settings(max_examples=25, deadline=None)
@given(masks=arrays(bool, st.tuples(st.integers(2, 12), st.just(2), st.just(4))), chunk=st.integers(1, 5),
       alpha1=st.floats(0, 1), seed=st.integers(0, 5))
def test_table_rows_do_not_depend_on_chunking_and_meet_the_thresholds(masks, chunk, alpha1, seed):
    pids = np.arange(len(masks)) % 3
    cfg = SptConfig(alpha1=alpha1, alpha2=0.5, max_roll=2, candidates=3, seed=seed, chunk_size=chunk)
    t = build_partner_table(masks, pids, cfg)
    whole = build_partner_table(masks, pids, SptConfig(**{**cfg.__dict__, "chunk_size": 100}))
    assert np.array_equal(t.partner, whole.partner) and np.array_equal(t.roll, whole.roll)
    for i in range(len(masks)):
        for j, r, s in t.of(i):
            assert j != i
            assert abs(r) <= 2
            exact = oiou(masks[i], masks[j], r)
            assert exact >= alpha1 - 1e-6 and s == pytest.approx(exact, abs=1e-3)  # float16 score


def _sets(n: int = 4) -> SptSets:
    masks = np.stack([MI, MJ, NARROW, MI][:n])
    pids = np.arange(n, dtype=np.int64)
    cfg = SptConfig(candidates=2)
    return SptSets(build_partner_table(masks, pids, cfg), masks, PatchGeometry((8, 16), (2, 4), 4, 4),
                   [f"bounding_box_train/{k:04d}_c1s1_000001_01.jpg" for k in range(n)], pids, {"candidates": 2})


def test_spt_sets_round_trip_with_identical_bytes(tmp_path):
    sets = _sets()
    save_spt_sets(tmp_path / "a.npz", sets)
    save_spt_sets(tmp_path / "b.npz", _sets())
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = load_spt_sets(tmp_path / "a.npz")
    assert np.array_equal(back.masks, sets.masks) and back.masks.dtype == bool
    assert np.array_equal(back.table.partner, sets.table.partner)
    assert np.array_equal(back.table.roll, sets.table.roll)
    assert back.geometry == sets.geometry and back.paths == sets.paths and back.config == {"candidates": 2}


def test_spt_sets_refuse_other_records(tmp_path):
    sets = _sets()
    root = tmp_path / "ds"
    records = [Record(str(root / p), 0, 0) for p in sets.paths]
    sets.check_records(records, root)
    with pytest.raises(OccreidError, match="other images") as e:
        sets.check_records(records[:3], root)
    assert "spt_sets" in e.value.fix


def test_corrupt_partner_file_is_a_user_error(tmp_path):
    from occreid.saliency.store import write_npz

    with pytest.raises(OccreidError, match="partner table not found"):
        load_spt_sets(tmp_path / "none.npz")
    sets = _sets()
    n, h, w = sets.masks.shape
    write_npz(tmp_path / "bad.npz", {
        "partner": np.full((n, 2), 99, np.int32), "roll": np.zeros((n, 2), np.int16),
        "score": np.zeros((n, 2), np.float16), "masks": np.packbits(sets.masks.reshape(n, -1), axis=1),
        "mask_shape": np.array([n, h, w]), "geometry": sets.geometry.to_array(), "paths": np.array(sets.paths),
        "pids": sets.pids, "config": np.array("{}")})
    with pytest.raises(OccreidError, match="out of range"):
        load_spt_sets(tmp_path / "bad.npz")


def test_partner_table_checks_shapes():
    with pytest.raises(ValueError):
        PartnerTable(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError):
        build_partner_table(np.stack([MI, MJ]), [0], SptConfig())


@pytest.mark.parametrize("bad", [dict(alpha1=1.5), dict(threshold=-0.1), dict(candidates=0), dict(max_roll=-1)])
def test_bad_spt_params_are_user_errors(bad):
    with pytest.raises(OccreidError):
        SptConfig(**bad)
