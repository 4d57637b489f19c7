"""Ranking metrics: hand-worked cases, agreement with a full-argsort brute force, chunking invariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eval_reference import brute_force_metrics
from occreid.errors import OccreidError
from occreid.eval import rank_metrics, subset_metrics
from occreid.eval.ordering import order_keys, smallest_k

# One query (pid 1, camera 0) against six gallery items, worked out by hand in the tests below.
G_PIDS = [1, 2, 1, -1, 0, 1]
G_CAMS = [0, 1, 1, 1, 1, 2]
DIST = [[0.1, 0.2, 0.3, 0.05, 0.4, 0.5]]


def test_market_removes_same_camera_match_and_junk():
    # kept, in order: #1 (0.2, pid 2), #2 (0.3, match), #4 (0.4, distractor pid 0), #5 (0.5, match);
    # #0 is the same pid in the same camera, #3 is junk (pid -1).
    r = rank_metrics(DIST, [1], G_PIDS, [0], G_CAMS, max_rank=5)
    assert r.first_match.tolist() == [2]
    assert r.ap.tolist() == pytest.approx([(1 / 2 + 2 / 4) / 2])
    assert r.mINP == pytest.approx(2 / 4)
    assert r.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert (r.num_valid, r.num_skipped) == (1, 0)


@pytest.mark.parametrize("protocol", ["cross_camera_free", "occluded_reid", "single_camera"])
def test_camera_free_protocols_keep_same_camera_matches(protocol):
    # kept: #0 (match), #1, #2 (match), #4, #5 (match): ranks 1, 3, 5; junk #3 still removed.
    r = rank_metrics(DIST, [1], G_PIDS, [0], G_CAMS, max_rank=3, protocol=protocol)
    assert r.first_match.tolist() == [1]
    assert r.mAP == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert r.mINP == pytest.approx(3 / 5)
    assert r.protocol == ("single_camera" if protocol == "single_camera" else "cross_camera_free")


def test_ties_are_broken_by_gallery_order():
    # three items tie at 1.0; the match among them ranks after the earlier negative.
    r = rank_metrics([[1.0, 1.0, 1.0, 0.5]], [1], [2, 1, 3, 1], [0], [1, 1, 1, 2])
    assert r.first_match.tolist() == [1]
    assert r.mAP == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert r.mINP == pytest.approx(2 / 3)
    # the same distances with the tied match first in the gallery: ranks 1, 2
    r = rank_metrics([[1.0, 1.0, 1.0, 0.5]], [1], [1, 2, 3, 1], [0], [1, 1, 1, 2])
    assert r.mAP == pytest.approx(1.0) and r.mINP == pytest.approx(1.0)


def test_single_match_and_skipped_queries():
    dist = [[0.4, 0.3, 0.2, 0.1],  # pid 7: its only match (#0) is last -> rank 4
            [0.1, 0.2, 0.3, 0.4],  # pid 9: not in the gallery -> skipped
            [0.1, 0.2, 0.3, 0.4],  # pid 7 in camera 5: the only match shares its camera -> skipped
            [0.1, 0.2, 0.3, 0.4]]  # pid -1: never matches, even junk -> skipped
    q_pids, q_cams = [7, 9, 7, -1], [0, 0, 5, 0]
    g_pids, g_cams = [7, 3, -1, 4], [5, 1, 1, 1]
    r = rank_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank=4)
    # junk #2 is removed, so the match is at rank 3 (after #3 and #1)
    assert r.first_match.tolist() == [3, 0, 0, 0]
    assert r.ap.tolist() == pytest.approx([1 / 3]) and r.inp.tolist() == pytest.approx([1 / 3])
    assert (r.num_valid, r.num_skipped) == (1, 3)
    assert r.valid.tolist() == [True, False, False, False]
    assert r.cmc.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_cmc_beyond_gallery_size_continues_at_one():
    # gallery of 3 (one removed by the protocol -> 2 remain); max_rank 10 > gallery size
    r = rank_metrics([[0.3, 0.1, 0.2], [0.1, 0.2, 0.3]], [1, 2], [1, 2, 1], [0, 0], [1, 1, 0], max_rank=10)
    # query 0 (pid 1, cam 0): #2 removed; kept #1 (0.1), #0 (0.3, match) -> rank 2
    # query 1 (pid 2): nothing removed; #0 (0.1), #1 (0.2, match) -> rank 2
    assert r.first_match.tolist() == [2, 2]
    assert r.cmc.tolist() == [0.0] + [1.0] * 9


def test_cmc_and_map_average_over_valid_queries():
    dist = [[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.2, 0.1, 0.3]]
    r = rank_metrics(dist, [1, 1, 2], [1, 2, 1], [0, 0, 0], [1, 1, 1], max_rank=3)
    # q0: match #0 rank 1 (and #2 rank 3): AP (1 + 2/3)/2; q1: #2 rank 1, #0 rank 3: same; q2: #1 rank 1
    assert r.first_match.tolist() == [1, 1, 1]
    assert r.mAP == pytest.approx(((1 + 2 / 3) / 2 * 2 + 1) / 3)
    assert r.mINP == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert r.cmc.tolist() == [1.0, 1.0, 1.0]


# --- agreement with the brute force --------------------------------------------------------------------

@st.composite
def ranking_case(draw):
    nq, ng = draw(st.integers(1, 6)), draw(st.integers(1, 25))
    kind = draw(st.sampled_from(["int_f32", "thirds_f64", "f16", "uniform_f32"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "int_f32":  # many exact ties
        dist = rng.integers(0, 4, (nq, ng)).astype(np.float32)
    elif kind == "thirds_f64":  # ties among values float32 cannot hold exactly (dense-rank path)
        dist = rng.integers(-3, 4, (nq, ng)) / 3.0
    elif kind == "f16":
        dist = rng.integers(0, 5, (nq, ng)).astype(np.float16) / np.float16(7)
    else:
        dist = rng.standard_normal((nq, ng)).astype(np.float32)
    ids = dict(q_pids=rng.integers(-1, 4, nq), g_pids=rng.integers(-1, 4, ng),
               q_cams=rng.integers(0, 3, nq), g_cams=rng.integers(0, 3, ng))
    return dist, ids, draw(st.sampled_from(["market", "cross_camera_free"])), draw(st.integers(1, 30))


@settings(max_examples=150, deadline=None)
@given(ranking_case(), st.integers(1, 4))
def test_agrees_with_full_argsort_brute_force(case, chunk_rows):
    dist, ids, protocol, max_rank = case
    ref = brute_force_metrics(dist, ids["q_pids"], ids["g_pids"], ids["q_cams"], ids["g_cams"], max_rank, protocol)
    args = (torch.as_tensor(dist), ids["q_pids"], ids["g_pids"], ids["q_cams"], ids["g_cams"], max_rank, protocol)
    if ref["num_valid"] == 0:
        with pytest.raises(OccreidError, match="no query has a matching gallery item"):
            rank_metrics(*args)
        return
    r = rank_metrics(*args, chunk_rows=chunk_rows)
    np.testing.assert_array_equal(r.first_match, ref["first_match"])
    np.testing.assert_allclose(r.ap, ref["ap"], rtol=1e-12)
    np.testing.assert_allclose(r.inp, ref["inp"], rtol=1e-12)
    np.testing.assert_allclose(r.cmc, ref["cmc"], rtol=1e-12)
    assert r.mAP == pytest.approx(ref["mAP"], rel=1e-12) and r.mINP == pytest.approx(ref["mINP"], rel=1e-12)
    assert r.num_valid + r.num_skipped == dist.shape[0]


def test_chunking_is_bit_identical():
    rng = np.random.default_rng(3)
    nq, ng = 37, 400
    dist = rng.integers(0, 50, (nq, ng)).astype(np.float32)  # plenty of ties
    q_pids, g_pids = rng.integers(0, 20, nq), rng.integers(-1, 20, ng)
    q_cams, g_cams = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    results = [rank_metrics(dist, q_pids, g_pids, q_cams, g_cams, chunk_rows=c) for c in (1, 2, 5, 16, 1000)]
    for r in results[1:]:
        assert r.mAP == results[0].mAP and r.mINP == results[0].mINP
        for name in ("cmc", "ap", "inp", "first_match"):
            np.testing.assert_array_equal(getattr(r, name), getattr(results[0], name))


# --- subsets ------------------------------------------------------------------------------------------

def test_subset_equals_ranking_only_those_queries():
    rng = np.random.default_rng(5)
    nq, ng = 30, 120
    dist = rng.random((nq, ng)).astype(np.float32)
    q_pids, g_pids = rng.integers(0, 12, nq), rng.integers(0, 12, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    q_pids[0] = 99  # one query without any match: skipped inside its subset too
    full = rank_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    mask = rng.random(nq) < 0.5
    mask[0] = True
    sub = subset_metrics(full, mask)
    direct = rank_metrics(dist[mask], q_pids[mask], g_pids, q_cams[mask], g_cams, max_rank=10)
    assert sub.mAP == pytest.approx(direct.mAP, rel=1e-12) and sub.mINP == pytest.approx(direct.mINP, rel=1e-12)
    np.testing.assert_allclose(sub.cmc, direct.cmc, rtol=1e-12)
    assert (sub.num_valid, sub.num_skipped) == (direct.num_valid, direct.num_skipped)
    # the two halves recombine to the whole, weighted by their valid queries
    rest = subset_metrics(full, ~mask)
    assert (sub.num_valid * sub.mAP + rest.num_valid * rest.mAP) / full.num_valid == pytest.approx(full.mAP)


def test_empty_subset_has_undefined_metrics():
    r = rank_metrics(DIST, [1], G_PIDS, [0], G_CAMS)
    empty = subset_metrics(r, np.array([False]))
    assert empty.num_valid == 0 and np.isnan(empty.mAP)
    assert empty.summary()["mAP"] is None and empty.summary()["rank1"] is None
    assert r.summary()["rank1"] == 0.0 and r.summary()["mAP"] == pytest.approx(0.5)
    with pytest.raises(OccreidError, match="boolean array of length 1"):
        subset_metrics(r, np.array([1]))


# --- ordering helpers ---------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([0.0, -0.0, 1.5, -1.5, 2.0, -3.25, 1e-30, -1e-30, float("inf"), 7.0]),
                min_size=1, max_size=30))
def test_order_keys_sort_like_a_stable_argsort(values):
    d = torch.tensor([values], dtype=torch.float32)
    expected = np.argsort(np.array(values, dtype=np.float32), kind="stable")
    np.testing.assert_array_equal(torch.argsort(order_keys(d)[0]).numpy(), expected)
    assert torch.unique(order_keys(d)).numel() == len(values)


def test_smallest_k_matches_stable_argsort_with_exclusions():
    rng = np.random.default_rng(0)
    d = torch.as_tensor(rng.integers(0, 5, (6, 40)).astype(np.float32))
    keep = torch.as_tensor(rng.random((6, 40)) < 0.7)
    got = smallest_k(d, 10, keep).numpy()
    for i in range(6):
        order = [j for j in np.argsort(d[i].numpy(), kind="stable") if keep[i, j]][:10]
        assert got[i].tolist() == order + [-1] * (10 - len(order))


# --- bad input ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(dist=[[np.nan, 0.2, 0.3, 0.1, 0.4, 0.5]]), "NaN or infinite"),
    (dict(dist=[0.1, 0.2]), "must be 2-D"),
    (dict(g_pids=[1, 2, 1]), "g_pids has 3 entries but there are 6 gallery items"),
    (dict(q_pids=[1.0]), "must hold integers"),
    (dict(protocol="marketplace"), "unknown evaluation protocol 'marketplace'"),
    (dict(max_rank=0), "max_rank"),
])
def test_bad_input_is_explained(kwargs, message):
    args = dict(dist=DIST, q_pids=[1], g_pids=G_PIDS, q_camids=[0], g_camids=G_CAMS)
    args.update(kwargs)
    with pytest.raises(OccreidError, match=message) as err:
        rank_metrics(**args)
    assert err.value.fix


def test_unknown_protocol_suggests_the_closest():
    with pytest.raises(OccreidError) as err:
        rank_metrics(DIST, [1], G_PIDS, [0], G_CAMS, protocol="markt")
    assert "did you mean 'market'" in err.value.fix
