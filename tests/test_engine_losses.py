"""Triplet and ID losses on hand-made cases, and the BNNeck head."""

from __future__ import annotations

import math

import pytest
import torch

from occreid.losses import TripletLoss, batch_hard_triplet, euclidean_distances, hardest_pairs, id_loss
from occreid.models.heads import BNNeck

# Four points on a line: ids 0,0,1,1 at x = 0, 1, 3, 7.
FEAT = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
PIDS = torch.tensor([0, 0, 1, 1])
# hardest positive / nearest negative per anchor, by hand:
#   a0: ap = 1 (to 1), an = 3 (to 3)      a1: ap = 1, an = 2 (to 3)
#   a3: ap = 4 (3→7), an = 2 (3→1)        a7: ap = 4, an = 6 (7→1)
AP = torch.tensor([1.0, 1.0, 4.0, 4.0])
AN = torch.tensor([3.0, 2.0, 2.0, 6.0])


def test_hardest_pairs_by_hand():
    d_ap, d_an = hardest_pairs(euclidean_distances(FEAT, FEAT), PIDS)
    torch.testing.assert_close(d_ap, AP, atol=1e-5, rtol=0)
    torch.testing.assert_close(d_an, AN, atol=1e-5, rtol=0)


def test_margin_triplet_by_hand():
    # max(0, ap - an + 0.3): 0, 0, 2.3, 0 → mean 0.575
    assert batch_hard_triplet(FEAT, PIDS, margin=0.3).item() == pytest.approx(0.575, abs=1e-5)
    # margin 1.5: max(0, -0.5, 0.5, 3.5, -0.5) → (0 + .5 + 3.5 + 0) / 4 = 1.0
    assert TripletLoss(1.5)(FEAT, PIDS).item() == pytest.approx(1.0, abs=1e-5)


def test_soft_margin_triplet_by_hand():
    expected = sum(math.log1p(math.exp(ap - an)) for ap, an in zip(AP.tolist(), AN.tolist())) / 4
    assert batch_hard_triplet(FEAT, PIDS, margin=None).item() == pytest.approx(expected, abs=1e-5)


def test_triplet_gradient_is_finite_with_coincident_points():
    feat = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    loss = batch_hard_triplet(feat, PIDS, margin=None)
    loss.backward()
    assert torch.isfinite(feat.grad).all()


def test_normalize_option_uses_unit_vectors():
    feat = torch.tensor([[2.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 1.0]])
    # normalised: (1,0),(1,0),(0,1),(0,1): ap = 0, an = sqrt(2) → max(0, 0 - 1.414 + .3) = 0
    assert batch_hard_triplet(feat, PIDS, margin=0.3, normalize=True).item() == pytest.approx(0.0, abs=1e-5)
    assert batch_hard_triplet(feat, PIDS, margin=0.3, normalize=False).item() > 0


def test_id_loss_known_values():
    logits = torch.zeros(2, 5)
    assert id_loss(logits, torch.tensor([1, 3])).item() == pytest.approx(math.log(5))
    # confident correct logits: smoothing ε adds ε·(mean over classes of −log p) − ε·(−log p_true)
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0]])
    logp = torch.log_softmax(logits, 1)[0]
    eps = 0.1
    expected = -((1 - eps) * logp[0] + eps * logp.mean())
    assert id_loss(logits, torch.tensor([0]), eps).item() == pytest.approx(expected.item(), rel=1e-6)


def test_bnneck_shapes_frozen_bias_and_init():
    torch.manual_seed(0)
    neck = BNNeck(16, 7)
    assert not neck.bn.bias.requires_grad and neck.classifier.bias is None
    assert neck.classifier.weight.std().item() == pytest.approx(0.001, rel=0.2)
    x = torch.randn(8, 16) * 3 + 2
    bn, logits = neck(x)
    assert bn.shape == (8, 16) and logits.shape == (8, 7)
    torch.testing.assert_close(bn.mean(0), torch.zeros(16), atol=1e-5, rtol=0)  # training BN centres
    assert BNNeck(16, 0)(x)[1] is None
