"""evaluate_features (chunked) against the unchunked route, top-k lists, ranks.npz, EvalConfig."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval_reference import brute_force_metrics
from occreid.errors import OccreidError
from occreid.eval import (EvalConfig, compute_distance, evaluate_features, rank_metrics, re_ranking,
                          save_ranks, top_k)
from occreid.eval.chunking import distance_rows


def _split(nq=60, ng=2000, dim=8, seed=0, integer=False):
    """Query/gallery features around identity centres (integer-valued if asked: exact distances)."""
    rng = np.random.default_rng(seed)
    n_ids = 25
    centres = rng.integers(-3, 4, (n_ids, dim))
    g_pids, q_pids = rng.integers(0, n_ids, ng), rng.integers(0, n_ids, nq)
    g_pids[:50] = -1  # junk
    noise_g, noise_q = rng.integers(-2, 3, (ng, dim)), rng.integers(-2, 3, (nq, dim))
    gf = (centres[np.maximum(g_pids, 0)] + noise_g).astype(np.float32)
    qf = (centres[q_pids] + noise_q).astype(np.float32)
    if not integer:
        gf += rng.normal(scale=0.1, size=gf.shape).astype(np.float32)
        qf += rng.normal(scale=0.1, size=qf.shape).astype(np.float32)
    ids = dict(q_pids=q_pids, g_pids=g_pids, q_camids=rng.integers(0, 4, nq), g_camids=rng.integers(0, 4, ng))
    mask = rng.random((nq, dim)).astype(np.float32)
    return qf, gf, ids, mask


def _same(a, b):
    assert a.mAP == b.mAP and a.mINP == b.mINP and (a.num_valid, a.num_skipped) == (b.num_valid, b.num_skipped)
    for name in ("cmc", "ap", "inp", "first_match"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_chunked_evaluation_is_bit_identical_to_one_block():
    # integer features and unnormalised euclidean distances are exact, so every chunking sees the very
    # same distances (and many ties); the metrics must then be bit-identical
    qf, gf, ids, _ = _split(integer=True)
    assert distance_rows(1, 2000, 8) <= 60 // 2  # the 1 MB budget really splits the queries
    small = evaluate_features(qf, gf, **ids, cfg=EvalConfig(metric="euclidean", normalize=False, memory_budget_mb=1))
    large = evaluate_features(qf, gf, **ids, cfg=EvalConfig(metric="euclidean", normalize=False, memory_budget_mb=4096))
    _same(small, large)
    np.testing.assert_array_equal(small.topk, large.topk)
    d = torch.cdist(torch.as_tensor(qf, dtype=torch.float64), torch.as_tensor(gf, dtype=torch.float64))
    ref = brute_force_metrics(d.numpy(), ids["q_pids"], ids["g_pids"], ids["q_camids"], ids["g_camids"], 50, "market")
    np.testing.assert_array_equal(small.first_match, ref["first_match"])
    assert small.mAP == pytest.approx(ref["mAP"], rel=1e-12)


@pytest.mark.parametrize("metric", ["cosine", "masked_cosine", "masked_euclidean"])
def test_evaluation_equals_ranking_the_full_distance_matrix(metric):
    qf, gf, ids, mask = _split(nq=40, ng=500)
    cfg = EvalConfig(metric=metric, memory_budget_mb=1, max_rank=20)
    got = evaluate_features(qf, gf, **ids, cfg=cfg, q_mask=mask)
    d = compute_distance(qf, gf, metric, mask)
    expected = rank_metrics(d, ids["q_pids"], ids["g_pids"], ids["q_camids"], ids["g_camids"], max_rank=20)
    np.testing.assert_array_equal(got.first_match, expected.first_match)
    np.testing.assert_allclose(got.ap, expected.ap, rtol=1e-12)
    assert 0.05 < got.mAP < 1.0  # planted identities: far from chance, not trivially perfect


def test_top_k_lists_follow_the_stable_order_of_kept_items():
    qf, gf, ids, _ = _split(nq=12, ng=300, integer=True)
    d = compute_distance(qf, gf, "euclidean", normalize=False)
    ref = brute_force_metrics(d.numpy(), ids["q_pids"], ids["g_pids"], ids["q_camids"], ids["g_camids"], 5, "market")
    id_tensors = [torch.as_tensor(ids[k]) for k in ("q_pids", "q_camids", "g_pids", "g_camids")]
    for k in (25, 1000):  # ties at the k-th value; more than the gallery (rows padded with -1)
        got = top_k(d, *id_tensors, "market", k)
        assert got.dtype == np.int32 and got.shape == (12, min(k, 300))
        for row, ranked in zip(got, ref["ranked"]):
            expected = ranked[:k].tolist()
            assert row.tolist() == expected + [-1] * (got.shape[1] - len(expected))


def test_reranking_path_equals_ranking_the_reranked_matrix():
    qf, gf, ids, _ = _split(nq=10, ng=80, dim=6)
    cfg = EvalConfig(metric="euclidean", rerank=True, k1=6, k2=3, save_topk=0)
    got = evaluate_features(qf, gf, **ids, cfg=cfg)
    q, g = torch.as_tensor(qf), torch.as_tensor(gf)
    blocks = [compute_distance(a, b, "euclidean") ** 2 for a, b in ((q, g), (q, q), (g, g))]
    d = re_ranking(*blocks, k1=6, k2=3, lambda_value=0.3)
    expected = rank_metrics(d, ids["q_pids"], ids["g_pids"], ids["q_camids"], ids["g_camids"])
    np.testing.assert_allclose(got.ap, expected.ap, rtol=1e-6)
    assert got.topk is None


def test_save_ranks_round_trip(tmp_path):
    qf, gf, ids, _ = _split(nq=15, ng=200)
    ids["q_pids"][0] = 999  # a skipped query
    result = evaluate_features(qf, gf, **ids, cfg=EvalConfig(save_topk=7))
    path = save_ranks(tmp_path / "ranks.npz", result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranks.npz"]  # no temporary left, no extra suffix
    with np.load(path) as f:
        assert f["topk"].dtype == np.int32 and f["topk"].shape == (15, 7)
        np.testing.assert_array_equal(f["topk"], result.topk)
        np.testing.assert_array_equal(f["first_match"], result.first_match)
        assert f["first_match"][0] == 0 and np.isnan(f["ap"][0]) and not f["valid"][0]
        np.testing.assert_array_equal(f["ap"][f["valid"]], result.ap)
    with pytest.raises(OccreidError, match="topk must be"):
        save_ranks(tmp_path / "bad.npz", result, topk=np.zeros((3, 2)))


def test_bad_input_is_explained():
    qf, gf, ids, mask = _split(nq=5, ng=40)
    cfg = EvalConfig()
    cases = [
        (dict(gf=gf[:, :4]), "dimension 8 but gallery features 4"),
        (dict(qf=np.where(qf > 1, np.nan, qf)), "query features contain NaN"),
        (dict(g_pids=ids["g_pids"][:-1]), "g_pids has 39 entries"),
        (dict(cfg=EvalConfig(metric="masked_cosine")), "needs a channel mask"),
        (dict(q_mask=mask[:2], cfg=EvalConfig(metric="masked_cosine")), "query masks have shape"),
        (dict(q_pids=ids["q_pids"] + 1000), "no query has a matching gallery item"),
        (dict(cfg={"metric": "cosine"}), "must be an EvalConfig"),
    ]
    for change, message in cases:
        args = dict(qf=qf, gf=gf, **ids, cfg=cfg)
        args.update(change)
        with pytest.raises(OccreidError, match=message) as err:
            evaluate_features(**args)
        assert err.value.fix, message


def test_eval_config_is_a_valid_params_schema():
    from stages.params import from_dict

    cfg = from_dict(EvalConfig, {"metric": "masked_cosine", "protocol": "occluded_reid", "subsets": ["all"]},
                    key="evaluate")
    assert (cfg.metric, cfg.protocol, cfg.subsets) == ("masked_cosine", "cross_camera_free", ("all",))
    with pytest.raises(OccreidError, match="unknown params key 'evaluate.k3'"):
        from_dict(EvalConfig, {"k3": 1}, key="evaluate")
    for bad, message in [(dict(metric="cosin"), "did you mean 'cosine'"), (dict(k1=0), "k1"),
                         (dict(lambda_value=1.5), "outside"), (dict(subsets=("hidden",)), "unknown query subset"),
                         (dict(protocol="duke"), "unknown evaluation protocol")]:
        with pytest.raises(OccreidError, match=message):
            EvalConfig(**bad)
