"""OIoU and mask rolling on 2×4 grids worked out by hand; matrix and chunked versions agree with the definition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from occreid.augment.oiou import (admitted_rolls, best_oiou_chunks, binarise, oiou, oiou_matrix, roll_order,
                                  self_overlap)

# columns 1, 2 / columns 2, 3 / column 2 only / nothing
MI = np.array([[0, 1, 1, 0], [0, 1, 1, 0]], bool)
MJ = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], bool)
NARROW = np.array([[0, 0, 1, 0], [0, 0, 1, 0]], bool)
EMPTY = np.zeros((2, 4), bool)


def test_roll_order_prefers_small_shifts():
    assert roll_order(0).tolist() == [0]
    assert roll_order(2).tolist() == [0, 1, -1, 2, -2]


def test_binarise_is_inclusive_at_the_threshold():
    assert binarise(np.array([0.49, 0.5, 0.51], np.float16), 0.5).tolist() == [False, True, True]


def test_oiou_by_hand():
    assert oiou(MI, MJ, 0) == 0.5  # overlap column 2 (2 patches) / |MJ| = 4
    assert oiou(MI, MJ, 1) == 1.0  # MI rolled right -> columns 2, 3 = MJ
    assert oiou(MI, MJ, -1) == 0.0  # columns 0, 1
    assert oiou(MI, MJ, 2) == 0.5  # columns 3, 0 (wraps around)


def test_oiou_is_normalised_by_the_partner_area():
    assert oiou(MI, NARROW) == 1.0  # the narrow partner region is entirely covered by MI
    assert oiou(NARROW, MI) == 0.5  # but NARROW covers half of MI's region
    assert oiou(MI, EMPTY) == 0.0  # no partner person: defined as 0
    assert oiou(EMPTY, MI) == 0.0


def test_self_overlap_by_hand():
    got = self_overlap(np.stack([MI, NARROW, EMPTY]), roll_order(2))
    assert got.tolist() == [[1.0, 0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 5]


def test_roll_admission_by_alpha2():
    masks = np.stack([MI, NARROW, EMPTY])
    assert admitted_rolls(masks, roll_order(2), 0.5).tolist() == [
        [True, True, True, False, False], [True, False, False, False, False], [True, False, False, False, False]]
    assert admitted_rolls(masks, roll_order(2), 0.0).all()  # alpha2 = 0 admits every roll
    assert admitted_rolls(masks, roll_order(2), 1.0)[:, 1:].sum() == 0  # alpha2 = 1: no shifted mask is itself here


def test_best_oiou_uses_only_admitted_rolls():
    masks = np.stack([MI, MJ])
    (_, best, roll), = best_oiou_chunks(masks, roll_order(2), alpha2=0.5, chunk_size=8)
    assert best[0, 1] == 1.0 and roll[0, 1] == 1  # i=MI reaches MJ by rolling right once
    assert best[1, 0] == 1.0 and roll[1, 0] == -1
    (_, best, roll), = best_oiou_chunks(masks, roll_order(2), alpha2=0.6, chunk_size=8)
    assert best[0, 1] == 0.5 and roll[0, 1] == 0  # ±1 no longer admitted (self-overlap 0.5 < 0.6)


def test_ties_go_to_the_smallest_shift():
    sym = np.array([[0, 1, 0, 0], [0, 1, 0, 0]], bool)  # rolled ±1 it covers columns 2 or 0
    partner = np.array([[1, 0, 1, 0], [1, 0, 1, 0]], bool)  # so +1 and -1 both give 0.5
    _, best, roll = next(best_oiou_chunks(np.stack([sym, partner]), roll_order(1), alpha2=0.0, chunk_size=1))
    assert best[0, 1] == 0.5 and roll[0, 1] == 1
    same = np.stack([MI, MI])  # r = 0 gives 1.0, nothing beats it
    (_, best, roll), = best_oiou_chunks(same, roll_order(2), alpha2=0.0, chunk_size=4)
    assert best[0, 1] == 1.0 and roll[0, 1] == 0


masks_strategy = arrays(bool, st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(1, 5)))


@settings(max_examples=40, deadline=None)
@given(masks=masks_strategy, max_roll=st.integers(0, 3))
def test_matrix_agrees_with_the_definition(masks, max_roll):
    rolls = roll_order(max_roll)
    mat = oiou_matrix(masks, masks, rolls)
    for k, r in enumerate(rolls):
        for i in range(len(masks)):
            for j in range(len(masks)):
                assert mat[k, i, j] == pytest.approx(oiou(masks[i], masks[j], int(r)), abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(masks=masks_strategy, alpha2=st.floats(0, 1), chunk=st.integers(1, 8), max_roll=st.integers(0, 3))
def test_chunked_best_equals_the_unchunked_maximum_over_admitted_rolls(masks, alpha2, chunk, max_roll):
    rolls = roll_order(max_roll)
    mat = oiou_matrix(masks, masks, rolls)
    adm = admitted_rolls(masks, rolls, alpha2)
    expected = np.where(adm.T[:, :, None], mat, -1.0).max(axis=0)
    got = np.concatenate([b for _, b, _ in best_oiou_chunks(masks, rolls, alpha2, chunk)])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    rolls_got = np.concatenate([r for _, _, r in best_oiou_chunks(masks, rolls, alpha2, chunk)])
    for i, j in np.ndindex(got.shape):  # the recorded roll reaches the best score and is admitted
        k = list(rolls).index(rolls_got[i, j])
        assert adm[i, k]
        assert oiou(masks[i], masks[j], int(rolls_got[i, j])) == pytest.approx(got[i, j], abs=1e-6)
