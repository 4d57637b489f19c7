"""k-reciprocal re-ranking against the released algorithm's loops, and its chunked feature route."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eval_reference import zhong_re_ranking
from occreid.errors import OccreidError
from occreid.eval import compute_distance, re_ranking, re_ranking_features


def _clustered(nq, ng, dim=8, seed=0):
    """Features in a few clusters, so that k-reciprocal sets are non-trivial."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(2, (nq + ng) // 6), dim))
    x = centres[rng.integers(0, len(centres), nq + ng)] + 0.4 * rng.normal(size=(nq + ng, dim))
    return x[:nq], x[nq:]


def _blocks(q, g):
    x = np.concatenate([q, g])
    full = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    full = (full + full.T) / 2  # exactly symmetric
    nq = len(q)
    return full[:nq, nq:], full[:nq, :nq], full[nq:, nq:]


@pytest.mark.parametrize("nq, ng, k1, k2, lam", [
    (4, 20, 20, 6, 0.3),  # defaults, k1 larger than the set
    (6, 30, 5, 3, 0.3),
    (5, 25, 4, 1, 0.0),  # no query expansion, Jaccard only
    (3, 17, 7, 2, 0.7),
    (8, 40, 9, 4, 0.3),  # odd k1: round(4.5) = 4 (half to even, as numpy)
])
def test_agrees_with_the_released_algorithm(nq, ng, k1, k2, lam):
    q_g, q_q, g_g = _blocks(*_clustered(nq, ng, seed=nq * ng))
    expected = zhong_re_ranking(q_g, q_q, g_g, k1, k2, lam)
    got = re_ranking(q_g, q_q, g_g, k1, k2, lam)
    assert got.shape == (nq, ng) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


def test_lambda_one_is_the_row_normalised_original_distance():
    q_g, q_q, g_g = _blocks(*_clustered(4, 12))
    row_max = np.maximum(q_q.max(axis=1), q_g.max(axis=1))
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, 3, 2, 1.0).numpy(), q_g / row_max[:, None],
                               rtol=0, atol=1e-7)


def test_chunking_does_not_change_the_result():
    q_g, q_q, g_g = _blocks(*_clustered(9, 45, seed=2))
    whole = re_ranking(q_g, q_q, g_g, 6, 3, 0.3, memory_budget_mb=512)
    for budget in (0.001, 0.01):  # one and a few rows per chunk
        assert torch.equal(re_ranking(q_g, q_q, g_g, 6, 3, 0.3, memory_budget_mb=budget), whole)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "masked_cosine", "masked_euclidean"])
def test_feature_route_equals_the_block_route(metric):
    q, g = (torch.as_tensor(x) for x in _clustered(6, 30, seed=7))
    mask = torch.rand(q.shape, generator=torch.Generator().manual_seed(0), dtype=q.dtype)
    ones_q, ones_g = torch.ones_like(q), torch.ones_like(g)
    masked = metric.startswith("masked")
    q_g = compute_distance(q, g, metric, mask if masked else None)
    q_q = compute_distance(q, q, metric, ones_q if masked else None)
    g_g = compute_distance(g, g, metric, ones_g if masked else None)
    if metric.endswith("euclidean"):  # the feature route squares euclidean-type distances
        q_g, q_q, g_g = q_g**2, q_q**2, g_g**2
    expected = re_ranking(q_g, q_q, g_g, 5, 3, 0.3)
    got = re_ranking_features(q, g, metric, mask, k1=5, k2=3, lambda_value=0.3, memory_budget_mb=0.005)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_reranking_reorders_the_gallery():
    """With clustered data the Jaccard term must change some query's order (not a monotone transform)."""
    q_g, q_q, g_g = _blocks(*_clustered(5, 40, seed=11))
    before = np.argsort(q_g, axis=1, kind="stable")
    after = np.argsort(re_ranking(q_g, q_q, g_g, 6, 3, 0.3).numpy(), axis=1, kind="stable")
    assert not np.array_equal(before, after)  # re-ranking is not a monotone transform of the distance


def test_bad_input_is_explained():
    q_g, q_q, g_g = _blocks(*_clustered(3, 9))
    with pytest.raises(OccreidError, match="blocks do not fit") as err:
        re_ranking(q_g, q_q, g_g[:-1, :-1])
    assert err.value.fix
    with pytest.raises(OccreidError, match="k1 >= 1"):
        re_ranking(q_g, q_q, g_g, k1=0)
    with pytest.raises(OccreidError, match="NaN"):
        re_ranking(np.full_like(q_g, np.nan), q_q, g_g)
    with pytest.raises(OccreidError, match="needs a channel mask"):
        re_ranking_features(torch.ones(2, 4), torch.ones(3, 4), "masked_cosine")
