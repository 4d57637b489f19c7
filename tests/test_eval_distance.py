"""Distances: plain metrics against their formulas, DPM's masked distance against its per-query loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eval_reference import dpm_masked_loop
from occreid.errors import OccreidError
from occreid.eval import compute_distance, prepare_gallery


def _data(nq=7, ng=11, dim=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(nq, dim, generator=g, dtype=dtype)
    gal = torch.randn(ng, dim, generator=g, dtype=dtype)
    mask = torch.rand(nq, dim, generator=g, dtype=dtype)
    return q, gal, mask


def test_hand_worked_values():
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[0.0, 2.0], [3.0, 0.0], [1.0, 1.0]])
    assert compute_distance(q, g, "cosine")[0].tolist() == pytest.approx([1.0, 0.0, 1 - 1 / math.sqrt(2)], abs=1e-7)
    assert compute_distance(q, g, "euclidean", normalize=False)[0].tolist() == pytest.approx(
        [math.sqrt(5), 2.0, 1.0], abs=1e-6)
    assert compute_distance(q, g, "euclidean")[0].tolist() == pytest.approx(
        [math.sqrt(2), 0.0, math.sqrt(2 - math.sqrt(2))], abs=1e-6)
    # mask keeps only channel 0: every gallery item becomes (±1, 0)-like after re-normalising -> angle 0
    # (clipped: arccos(1 - 1e-5), the clip bound as float32); item 0 has nothing left in channel 0 ->
    # similarity 0 -> angle pi/2
    m = torch.tensor([[1.0, 0.0]])
    d = compute_distance(q, g, "masked_cosine", q_mask=m)
    clipped = math.acos(float(np.float32(1 - 1e-5)))
    assert d[0].tolist() == pytest.approx([math.pi / 2, clipped, clipped], abs=1e-6)
    # masked euclidean, weights w = m^2 / mean(m^2) = (2, 0): sqrt(2 * (q0 - g0)^2) on raw features
    d = compute_distance(q, g, "masked_euclidean", q_mask=m, normalize=False)
    assert d[0].tolist() == pytest.approx([math.sqrt(2), math.sqrt(8), 0.0], abs=1e-6)


def test_plain_metrics_match_their_formulas():
    q, g, _ = _data()
    qn, gn = q / q.norm(dim=1, keepdim=True), g / g.norm(dim=1, keepdim=True)
    torch.testing.assert_close(compute_distance(q, g, "cosine"), 1 - qn @ gn.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(compute_distance(q, g, "euclidean", normalize=False), torch.cdist(q, g),
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(compute_distance(q, g, "euclidean"), torch.cdist(qn, gn), rtol=0, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 9), st.integers(1, 40), st.integers(1, 64))
def test_masked_matrix_route_agrees_with_the_per_query_loop(seed, nq, ng, dim):
    q, g, m = _data(nq, ng, dim, seed)
    torch.testing.assert_close(compute_distance(q, g, "masked_cosine", q_mask=m), dpm_masked_loop(q, g, m),
                               rtol=0, atol=1e-10)
    # float32, as a real run computes it. arccos amplifies float32 rounding near similarity ±1 (slope
    # 1/sqrt(1 - s^2)), so the similarities are compared there: both routes round, differently.
    q32, g32, m32 = q.float(), g.float(), m.float()
    got = compute_distance(q32, g32, "masked_cosine", q_mask=m32)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double().cos(), dpm_masked_loop(q32, g32, m32).double().cos(), rtol=0, atol=1e-6)


def test_masked_euclidean_matches_its_definition():
    q, g, m = _data()
    for normalize in (False, True):
        qq, gg = (q / q.norm(dim=1, keepdim=True), g / g.norm(dim=1, keepdim=True)) if normalize else (q, g)
        w = m**2 / (m**2).mean(dim=1, keepdim=True)
        expected = torch.stack([((w[i] * (qq[i] - gg) ** 2).sum(dim=1)).sqrt() for i in range(q.shape[0])])
        torch.testing.assert_close(compute_distance(q, g, "masked_euclidean", q_mask=m, normalize=normalize),
                                   expected, rtol=0, atol=1e-10)


def test_constant_masks_reduce_to_the_plain_metrics():
    q, g, _ = _data()
    half = torch.full_like(q, 0.5)
    torch.testing.assert_close(compute_distance(q, g, "masked_euclidean", q_mask=half),
                               compute_distance(q, g, "euclidean"), rtol=0, atol=1e-10)
    sim = 1 - compute_distance(q, g, "cosine")
    torch.testing.assert_close(compute_distance(q, g, "masked_cosine", q_mask=half),
                               torch.arccos(sim.clamp(-1 + 1e-5, 1 - 1e-5)), rtol=0, atol=1e-10)


def test_masked_cosine_is_scale_invariant():
    q, g, m = _data()
    base = compute_distance(q, g, "masked_cosine", q_mask=m)
    torch.testing.assert_close(compute_distance(3 * q, 0.2 * g, "masked_cosine", q_mask=5 * m), base,
                               rtol=0, atol=1e-10)
    torch.testing.assert_close(compute_distance(q, g, "masked_cosine", q_mask=m, normalize=False), base,
                               rtol=0, atol=1e-10)


def test_prepared_gallery_and_float16_features_give_the_same_distances():
    q, g, m = _data(dtype=torch.float32)
    for metric in ("cosine", "euclidean", "masked_cosine", "masked_euclidean"):
        direct = compute_distance(q, g, metric, q_mask=m)
        prepared = prepare_gallery(g, metric)
        assert torch.equal(compute_distance(q, prepared, metric, q_mask=m), direct)
        half = compute_distance(q.half(), g.half(), metric, q_mask=m.half())
        assert half.dtype == torch.float32
        torch.testing.assert_close(half, direct, rtol=0, atol=5e-3)
    assert torch.equal(g, _data(dtype=torch.float32)[1])  # the caller's features are never modified


@pytest.mark.parametrize("call, message", [
    (lambda q, g, m: compute_distance(q, g, "cosin"), "unknown distance metric 'cosin'"),
    (lambda q, g, m: compute_distance(q, g[:, :5], "cosine"), "dimension 16 but gallery features 5"),
    (lambda q, g, m: compute_distance(q[0], g, "cosine"), "must be a 2-D"),
    (lambda q, g, m: compute_distance(q, g, "masked_cosine"), "needs a channel mask"),
    (lambda q, g, m: compute_distance(q, g, "masked_cosine", q_mask=m[:3]), "query masks have shape"),
    (lambda q, g, m: compute_distance(torch.where(q > 2, torch.nan, q), g), "query features contain NaN"),
    (lambda q, g, m: compute_distance(q, g.index_fill(0, torch.tensor([4]), torch.inf)),
     "gallery features contain NaN"),
    (lambda q, g, m: compute_distance(q, prepare_gallery(g, "cosine"), "euclidean"), "prepared for metric='cosine'"),
])
def test_bad_input_is_explained(call, message):
    q, g, m = _data(nq=7, ng=11, dim=16)
    q[0, 0] = 3.0  # at least one value above 2 for the NaN case
    with pytest.raises(OccreidError, match=message) as err:
        call(q, g, m)
    assert err.value.fix


def test_numpy_input_is_accepted():
    q, g, m = _data(dtype=torch.float32)
    np.testing.assert_array_equal(compute_distance(q.numpy(), g.numpy(), "masked_cosine", m.numpy()).numpy(),
                                  compute_distance(q, g, "masked_cosine", m).numpy())
