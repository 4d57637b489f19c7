"""DPM's losses: head-enrich orthonormality and the shared prototype matrix with masked ArcFace."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from occreid.errors import OccreidError
from occreid.losses.head_enrich import head_enrich_loss
from occreid.losses.masked_arcface import PrototypeClassifier, arcface_logits, arcface_loss, masked_cosine

# ---------------------------------------------------------------------------------------------- head enrich


def test_orthonormal_heads_cost_nothing_whatever_their_scale():
    h, n = 3, 5
    logits = torch.zeros(2, h, n)
    for i in range(h):
        logits[:, i, i] = 2.0 + i  # disjoint supports, different lengths
    assert head_enrich_loss(logits).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("heads", [2, 4, 12])
def test_identical_heads_cost_h2_minus_h_over_h2_per_image(heads):
    b = 3
    row = torch.randn(1, 1, 7)
    logits = row.expand(b, heads, 7)
    per_image = (heads**2 - heads) / heads**2
    assert head_enrich_loss(logits).item() == pytest.approx(b * per_image, rel=1e-5)  # summed, as the code
    assert head_enrich_loss(logits, reduction="mean").item() == pytest.approx(per_image, rel=1e-5)


def test_two_heads_at_45_degrees():
    # unit vectors (1,0) and (1,1)/sqrt2: off-diagonal 1/sqrt2, ||G - I||^2 = 2 * 1/2 = 1, / H^2 = 1/4
    logits = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    assert head_enrich_loss(logits).item() == pytest.approx(0.25, rel=1e-6)


def test_softmax_variant_sees_overlap_that_the_logits_do_not():
    # logits (1,0) and (0,1) are orthogonal, their softmaxes (e,1)/(e+1) and (1,e)/(e+1) are not:
    # cosine 2e/(e^2+1), loss = 2 cos^2 / 4
    logits = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    c = 2 * math.e / (math.e**2 + 1)
    assert head_enrich_loss(logits).item() == pytest.approx(0.0, abs=1e-7)
    assert head_enrich_loss(logits, softmax=True).item() == pytest.approx(c * c / 2, rel=1e-6)


def test_head_enrich_gradient_and_bad_reduction():
    logits = torch.randn(2, 4, 6, requires_grad=True)
    head_enrich_loss(logits).backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(OccreidError, match="reduction"):
        head_enrich_loss(logits, reduction="avg")


# ---------------------------------------------------------------------------------------------- masked ArcFace

W_HAND = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
MASK_HAND = torch.tensor([[1.0, 0.5], [1.0, 0.5]])


def test_masked_cosine_by_hand():
    # n(W0) = (1,1)/sqrt2, masked (1, .5)/sqrt2, renormalised (2,1)/sqrt5; n(W1) = (0,1), masked (0,.5) -> (0,1)
    # f0 = (3,4) -> (.6,.8): cos = (1.2 + .8)/sqrt5 = 2/sqrt5 and .8; f1 = (-1,-1): -3/sqrt10 and -1/sqrt2
    feat = torch.tensor([[3.0, 4.0], [-1.0, -1.0]])
    cos = masked_cosine(feat, W_HAND, MASK_HAND)
    expected = torch.tensor([[2 / math.sqrt(5), 0.8], [-3 / math.sqrt(10), -1 / math.sqrt(2)]])
    assert torch.allclose(cos, expected, atol=1e-6)
    # without the second normalisation: <(.6,.8), (1,.5)/sqrt2> = 1/sqrt2 and <(.6,.8), (0,.5)> = .4
    raw = masked_cosine(feat[:1], W_HAND, MASK_HAND[:1], renormalize=False)
    assert torch.allclose(raw, torch.tensor([[1 / math.sqrt(2), 0.4]]), atol=1e-6)


def test_masked_arcface_loss_by_hand():
    s, m = 2.0, 0.5
    feat = torch.tensor([[3.0, 4.0], [-1.0, -1.0]])
    labels = torch.tensor([0, 0])
    cos = masked_cosine(feat, W_HAND, MASK_HAND)
    logits = arcface_logits(cos, labels, scale=s, margin=m)
    # sample 0: cos theta = 2/sqrt5, sin theta = 1/sqrt5 (> cos(pi - m)), so cos(theta + m) is used
    phi0 = (2 * math.cos(m) - math.sin(m)) / math.sqrt(5)
    # sample 1: cos theta = -3/sqrt10 <= cos(pi - m) = -0.8776: fallback cos - m sin(pi - m)
    phi1 = -3 / math.sqrt(10) - m * math.sin(math.pi - m)
    expected = torch.tensor([[s * phi0, s * 0.8], [s * phi1, -s / math.sqrt(2)]])
    assert torch.allclose(logits, expected, atol=1e-6)
    ce0 = math.log(1 + math.exp(s * 0.8 - s * phi0))
    ce1 = math.log(1 + math.exp(-s / math.sqrt(2) - s * phi1))
    assert arcface_loss(cos, labels, scale=s, margin=m).item() == pytest.approx((ce0 + ce1) / 2, rel=1e-6)


def test_plain_logits_are_unnormalised_products():
    clf = PrototypeClassifier(dim=2, num_classes=2)
    with torch.no_grad():
        clf.weight.copy_(W_HAND)
    assert clf.plain_logits(torch.tensor([[3.0, 4.0]])).tolist() == [[7.0, 8.0]]


def _explicit_masked_cosine(feat, weight, mask, renormalize=True, mask_feature=False):
    """Second route: materialise every masked prototype [B, C, D] and take cosines one by one."""
    f = F.normalize(feat, dim=1)
    if mask_feature:
        f = mask * f
        f = F.normalize(f, dim=1) if renormalize else f
    wm = mask[:, None, :] * F.normalize(weight, dim=1)[None]
    wm = F.normalize(wm, dim=2) if renormalize else wm
    return (f[:, None, :] * wm).sum(-1)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    renormalize=st.booleans(),
    mask_feature=st.booleans(),
)
def test_factorised_masked_cosine_equals_the_explicit_route(seed, renormalize, mask_feature):
    g = torch.Generator().manual_seed(seed)
    feat, weight = torch.randn(5, 6, generator=g), torch.randn(4, 6, generator=g)
    mask = torch.rand(5, 6, generator=g) * 0.98 + 0.01
    ours = masked_cosine(feat, weight, mask, renormalize=renormalize, mask_feature=mask_feature)
    ref = _explicit_masked_cosine(feat, weight, mask, renormalize, mask_feature)
    assert torch.allclose(ours, ref, atol=1e-5)
    assert bool((ours.abs() <= 1 + 1e-5).all())


def test_unit_or_constant_mask_is_the_plain_cosine():
    g = torch.Generator().manual_seed(0)
    feat, weight = torch.randn(3, 5, generator=g), torch.randn(4, 5, generator=g)
    plain = masked_cosine(feat, weight, None)
    assert torch.allclose(plain, F.normalize(feat, dim=1) @ F.normalize(weight, dim=1).t())
    assert torch.allclose(masked_cosine(feat, weight, torch.ones(3, 5)), plain, atol=1e-6)
    assert torch.allclose(masked_cosine(feat, weight, torch.full((3, 5), 0.5)), plain, atol=1e-6)


def test_zero_margin_arcface_is_scaled_cosine_and_gradient_is_finite_at_cos_one():
    cos = torch.tensor([[0.3, -0.2, 0.9]])
    labels = torch.tensor([2])
    assert torch.allclose(arcface_logits(cos, labels, scale=4.0, margin=0.0), 4.0 * cos, atol=1e-6)
    edge = torch.tensor([[1.0, 0.0]], requires_grad=True)
    arcface_loss(edge, torch.tensor([0]), scale=30.0, margin=0.5).backward()
    assert torch.isfinite(edge.grad).all()


def test_margin_lowers_the_true_class_logit_only():
    g = torch.Generator().manual_seed(1)
    cos = torch.rand(4, 3, generator=g) * 1.6 - 0.8
    labels = torch.tensor([0, 1, 2, 1])
    with_m = arcface_logits(cos, labels, scale=1.0, margin=0.3)
    target = F.one_hot(labels, 3).bool()
    assert bool((with_m[target] < cos[target]).all())
    assert torch.equal(with_m[~target], cos[~target])


def test_masked_branch_gradient_reaches_the_mask_and_the_prototypes():
    g = torch.Generator().manual_seed(2)
    clf = PrototypeClassifier(dim=4, num_classes=3)
    feat = torch.randn(2, 4, generator=g, requires_grad=True)
    mask = torch.rand(2, 4, generator=g).requires_grad_()
    arcface_loss(clf.cosine(feat, mask), torch.tensor([0, 2]), scale=30.0, margin=0.5).backward()
    for t in (feat.grad, mask.grad, clf.weight.grad):
        assert t is not None and t.abs().sum() > 0
