"""Supervised contrastive loss (CLIP-ReID stage 1) on cases computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from occreid.losses.supcon import supcon_loss, symmetric_supcon

E = math.e



def _case():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    contrasts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    return anchors, contrasts, torch.tensor([0, 1]), torch.tensor([0, 1, 0])


def test_hand_case_raw_dot_products_temperature_one():
    # anchor 1: logits (1, 0, 1), positives c1, c3 → mean log p = 1 - log(2e + 1)
    # anchor 2: logits (0, 2, 2), positive c2      → 2 - log(1 + 2e²)
    want = -0.5 * ((1 - math.log(2 * E + 1)) + (2 - math.log(1 + 2 * E**2)))
    assert supcon_loss(*_case()).item() == pytest.approx(want, rel=1e-6)


def test_hand_case_temperature_and_normalisation():
    # T = 0.5 doubles the logits: (2, 0, 2) and (0, 4, 4)
    want_t = -0.5 * ((2 - math.log(2 * E**2 + 1)) + (4 - math.log(1 + 2 * E**4)))
    assert supcon_loss(*_case(), temperature=0.5).item() == pytest.approx(want_t, rel=1e-6)
    # cosine: anchor 1 → logits (1, 0, r), anchor 2 → (0, 1, r) with r = 1/√2; both share log Z = log(e + 1 + e^r)
    r = 1 / math.sqrt(2)
    log_z = math.log(E + 1 + E**r)
    want_n = -0.5 * (((1 + r) / 2 - log_z) + (1 - log_z))
    assert supcon_loss(*_case(), normalize=True).item() == pytest.approx(want_n, rel=1e-6)


def test_anchor_without_positive_is_left_out_and_all_missing_fails():
    a, c, la, lc = _case()
    extra = supcon_loss(torch.cat([a, torch.randn(1, 2)]), c, torch.cat([la, torch.tensor([7])]), lc)
    assert extra.item() == pytest.approx(supcon_loss(a, c, la, lc).item(), rel=1e-6)
    with pytest.raises(ValueError, match="no anchor has a positive"):
        supcon_loss(a, c, torch.tensor([5, 6]), lc)
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(a, c, la, lc, temperature=0.0)


def test_symmetric_is_i2t_plus_t2i_with_swapped_roles():
    img, txt = torch.randn(6, 4), torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    i2t, t2i = symmetric_supcon(img, txt, labels)
    assert i2t.item() == pytest.approx(supcon_loss(img, txt, labels, labels).item())
    assert t2i.item() == pytest.approx(supcon_loss(txt, img, labels, labels).item())
    assert i2t.item() != pytest.approx(t2i.item())


def test_matching_pairs_give_lower_loss_than_shuffled():
    torch.manual_seed(0)
    protos = torch.randn(4, 8) * 3
    labels = torch.arange(4).repeat_interleave(2)
    img = protos[labels] + 0.1 * torch.randn(8, 8)
    good = sum(symmetric_supcon(img, protos[labels], labels))
    bad = sum(symmetric_supcon(img, protos[labels.roll(2)], labels))
    assert good < bad
