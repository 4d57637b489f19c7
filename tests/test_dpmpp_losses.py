"""DPM++'s loss parts by hand: the anchoring schedule, loss and text→prototype map; masked distances and the
masked triplet (= the plain triplet under a constant mask); pair finding and the masked consistency."""

from __future__ import annotations

import math

import pytest
import torch

from occreid.errors import OccreidError
from occreid.losses import batch_hard_triplet, euclidean_distances
from occreid.losses.anchoring import (anchor_loss, anchor_weight, in_anchor_period, text_to_prototypes,
                                      xavier_row_norm)
from occreid.losses.mask_guided import masked_batch_hard_triplet, masked_consistency, masked_distances, pair_indices


# ---------------------------------------------------------------------------------------------- anchoring
def test_anchor_schedules_by_hand():
    linear = [anchor_weight(e, 4, 1.0, "linear") for e in range(1, 7)]
    assert linear == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    c = (1 + math.cos(math.pi / 4)) / 2  # 0.853553...
    cosine = [anchor_weight(e, 4, 2.0, "cosine") for e in range(1, 7)]
    assert cosine == pytest.approx([2.0, 2 * c, 1.0, 2 * (1 - c), 0.0, 0.0])
    assert [anchor_weight(e, 0, 1.0) for e in (1, 2)] == [0.0, 0.0]  # no anchoring period
    assert [in_anchor_period(e, 2) for e in (0, 1, 2, 3)] == [False, True, True, False]
    with pytest.raises(OccreidError, match="schedule"):
        anchor_weight(1, 4, 1.0, "step")


def test_anchor_loss_compares_directions_only():
    w = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    t = torch.tensor([[0.0, 2.0], [0.0, 0.5]])
    # row 0: ||(1,0) − (0,1)||² = 2; row 1: same direction → 0; mean 1
    assert anchor_loss(w, t).item() == pytest.approx(1.0)
    assert anchor_loss(5 * t, t).item() == pytest.approx(0.0, abs=1e-7)
    w.requires_grad_(True)
    t.requires_grad_(True)
    anchor_loss(w, t).backward()
    assert w.grad is not None and t.grad is None  # targets are fixed


def test_text_to_prototypes_pinv_transpose_and_rescale():
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(6, 3, generator=g)  # D = 6 visual, P = 3 joint: full column rank
    text = torch.randn(4, 3, generator=g)
    w = text_to_prototypes(text, proj, "pinv")
    assert w.shape == (4, 6)
    torch.testing.assert_close(w @ proj, text, atol=1e-5, rtol=1e-5)  # projects back onto the text feature
    # minimum norm: w lies in the column space of proj (no component proj cannot see)
    residual = w - (w @ proj) @ torch.linalg.pinv(proj)
    assert residual.abs().max() < 1e-5
    wt = text_to_prototypes(text, proj, "transpose")
    torch.testing.assert_close(wt, text @ proj.t())
    f = torch.randn(5, 6, generator=g)
    torch.testing.assert_close(f @ wt.t(), (f @ proj) @ text.t(), atol=1e-4, rtol=1e-5)  # = CLIP-ReID's i2t logits
    scaled = text_to_prototypes(text, proj, "pinv", row_norm=2.0)
    torch.testing.assert_close(scaled.norm(dim=1), torch.full((4,), 2.0))
    torch.testing.assert_close(scaled / 2.0, w / w.norm(dim=1, keepdim=True))
    with pytest.raises(OccreidError, match="do not fit"):
        text_to_prototypes(torch.randn(4, 5), proj)


def test_xavier_row_norm_by_hand_and_against_the_init():
    assert xavier_row_norm(2, 6) == pytest.approx(math.sqrt(12 / 8))
    w = torch.empty(2000, 64)
    torch.nn.init.xavier_uniform_(w, generator=torch.Generator().manual_seed(0))
    assert w.pow(2).sum(1).mean().sqrt().item() == pytest.approx(xavier_row_norm(2000, 64), rel=0.02)


# ------------------------------------------------------------------------------------------ masked metric
def test_masked_distance_by_hand_uses_the_anchor_mask():
    f = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    m = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    d = masked_distances(f, m)
    # row 0: weights m²/mean(m²) = (2, 0) → sqrt(2·9); row 1: all ones → plain distance 5
    assert d[0, 1].item() == pytest.approx(math.sqrt(18))
    assert d[1, 0].item() == pytest.approx(5.0)
    assert d[0, 0].item() == pytest.approx(1e-6) and d[1, 1].item() == pytest.approx(1e-6, abs=1e-5)


@pytest.mark.parametrize("level", [1.0, 0.5, 0.01])
def test_constant_masks_give_the_euclidean_distance(level):
    g = torch.Generator().manual_seed(1)
    f = torch.randn(7, 16, generator=g)
    masked, plain = masked_distances(f, torch.full((7, 16), level)), euclidean_distances(f, f)
    off = ~torch.eye(7, dtype=torch.bool)
    torch.testing.assert_close(masked[off], plain[off], atol=1e-4, rtol=1e-5)
    # Self-distances are float32 cancellation noise of ||f||² − 2 f·f + ||f||² (the order of the sums differs
    # between the two routes and the BLAS kernel): at most sqrt(8 · eps · ||f||²), not exactly equal.
    bound = (8 * torch.finfo(torch.float32).eps * f.pow(2).sum(1)).sqrt()
    assert (masked.diagonal() <= bound).all() and (plain.diagonal() <= bound).all()
    torch.testing.assert_close(masked_distances(f, None), euclidean_distances(f, f))


@pytest.mark.parametrize("margin", [None, 0.3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_triplet_equals_plain_triplet_with_all_ones_masks(margin, seed):
    g = torch.Generator().manual_seed(seed)
    feat = torch.randn(12, 8, generator=g) * 3
    pids = torch.randint(0, 4, (12,), generator=g)
    pids[:4] = torch.arange(4)  # at least two ids, every sample has a negative
    plain = batch_hard_triplet(feat, pids, margin)
    masked = masked_batch_hard_triplet(feat, pids, torch.ones(12, 8), margin)
    assert masked.item() == pytest.approx(plain.item(), rel=1e-5, abs=1e-6)


def test_masking_changes_the_hardest_pairs():
    """A channel that separates two ids only in a masked-out channel no longer separates them."""
    feat = torch.tensor([[0.0, 0.0], [0.0, 1.0], [5.0, 0.0], [5.0, 1.0]])
    pids = torch.tensor([0, 1, 0, 1])  # same id differs in channel 0, other ids differ in channel 1
    plain = masked_batch_hard_triplet(feat, pids, None, margin=0.1)
    keep_ch1 = masked_batch_hard_triplet(feat, pids, torch.tensor([[0.0, 1.0]] * 4), margin=0.1)
    assert plain.item() > 0.5  # d_ap = 5 > d_an ≈ 1
    assert keep_ch1.item() == pytest.approx(0.0, abs=1e-5)  # through the mask: d_ap ≈ 0, d_an = sqrt(2)


# ---------------------------------------------------------------------------------------------- pairs
def test_pair_indices_find_each_views_source():
    pair_id = torch.tensor([0, -1, 1, 0, 2, 1, 2])
    moved = torch.tensor([False, False, False, True, False, True, False])  # pair 2's view is holistic
    src, view = pair_indices(pair_id, moved)
    assert view.tolist() == [3, 5] and src.tolist() == [0, 2]
    src, view = pair_indices(torch.tensor([-1, -1]), torch.tensor([False, True]))
    assert len(src) == len(view) == 0  # a view without pair (no pairing) is not a pair
    with pytest.raises(OccreidError, match="exactly one holistic source"):
        pair_indices(torch.tensor([0, 0]), torch.tensor([True, True]))


def test_masked_consistency_by_hand():
    view, src = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    assert masked_consistency(view, src, torch.tensor([[1.0, 1.0]])).item() == pytest.approx(1 - 1 / math.sqrt(2))
    assert masked_consistency(view, src, None).item() == pytest.approx(1 - 1 / math.sqrt(2))
    # the view's mask hides channel 1, where the two disagree: nothing left to pull
    assert masked_consistency(view, src, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(0.0, abs=1e-7)
    f = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    assert masked_consistency(f, f.clone(), torch.rand(5, 8)).item() == pytest.approx(0.0, abs=1e-6)
    # mean over pairs: (1 − 1/√2 + 1 − 0) / 2, the second pair opposite in the visible channel
    two = masked_consistency(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 1.0], [-1.0, 0.0]]), None)
    assert two.item() == pytest.approx((1 - 1 / math.sqrt(2) + 2.0) / 2)
    empty = masked_consistency(torch.zeros(0, 8, requires_grad=True), torch.zeros(0, 8), None)
    assert empty.item() == 0.0 and empty.requires_grad
