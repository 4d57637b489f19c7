"""DPEFormer's parts with answers worked out by hand: DPSM's token selection, FBM's blending, the memory bank."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from occreid.errors import OccreidError
from occreid.losses.memory_bank import IdentityMemory, identity_means, info_nce, momentum_update
from occreid.models.dpsm import (DPSMConfig, adaptive_pool_matrix, pooling_weights, proxy_scores, select_parts,
                                 spatial_parts, split_counts)
from occreid.models.fbm import CodeFBM, FBMConfig, PaperFBM, build_fbm

# ---------------------------------------------------------------------------------------------------- DPSM
# Six tokens in 3-D and the global token g = (1, 0, 0). g·t = (0, 2, 1.6, 1.7, 0, 0.1): the proxy is t1.
# Scores against the proxy t1 = (2, 0, 0): (0, 4, 3.2, 3.4, 0, 0.2); descending t1 4, t3 3.4, t2 3.2, t5 0.2,
# t0 0, t4 0 (the tie kept in index order); drops 0.6, 0.2, 3.0, 0.2, 0: the largest (3.0) lies between ranks
# 3 and 4, so the paper keeps the 3 tokens before it: t1, t3, t2.
TOKENS = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [1.6, 0.1, 0.0], [1.7, 0.0, 0.1], [0.0, 0.0, 1.0],
                       [0.1, 1.0, 0.0]])[None]
GLOBAL = torch.tensor([[1.0, 0.0, 0.0]])


def test_proxy_and_scores_by_hand():
    scores, proxy = proxy_scores(GLOBAL, TOKENS, "patch")
    assert proxy.tolist() == [1]
    assert torch.allclose(scores, torch.tensor([[0.0, 4.0, 3.2, 3.4, 0.0, 0.2]]))
    scores, proxy = proxy_scores(GLOBAL, TOKENS, "cls")
    assert proxy.tolist() == [-1] and torch.allclose(scores, torch.tensor([[0.0, 2.0, 1.6, 1.7, 0.0, 0.1]]))


@pytest.mark.parametrize("curve, paper", [
    ([1.0, 0.9, 0.85, 0.3, 0.2], 3),  # drops .1 .05 .55 .1: the cut after the third score
    ([1.0, 0.2, 0.1, 0.0], 1),  # the largest drop right after the proxy
    ([1.0, 0.5, 0.0], 1),  # equal drops: the first one
    ([0.7, 0.7, 0.7], 1),  # flat: no drop, argmax of zeros is the first
    ([0.9, 0.8, 0.7, 0.6, 0.0], 4),  # the cut before the last token
])
def test_split_point_is_the_largest_drop(curve, paper):
    counts = split_counts(torch.tensor([curve]), "paper")
    assert counts.tolist() == [paper]
    assert split_counts(torch.tensor([curve]), "code").tolist() == [paper - 1]  # the released code: one fewer


def test_selection_which_tokens_how_many_and_the_minimum():
    sel = select_parts(GLOBAL, TOKENS, DPSMConfig(k_min=0), bins=2)
    assert sel.counts.tolist() == [3] and sel.proxy.tolist() == [1]
    assert sel.kept[0].tolist() == [False, True, True, True, False, False]
    # similarity order t1, t3, t2 into 2 adaptive bins: (t1 + t3) / 2 and (t3 + t2) / 2
    assert torch.allclose(sel.parts[0], torch.tensor([[1.85, 0.0, 0.05], [1.65, 0.05, 0.05]]))
    # raster order t1, t2, t3: (t1 + t2) / 2 and (t2 + t3) / 2
    spatial = select_parts(GLOBAL, TOKENS, DPSMConfig(k_min=0, order="spatial"), bins=2)
    assert torch.allclose(spatial.parts[0], torch.tensor([[1.8, 0.05, 0.0], [1.65, 0.05, 0.05]]))
    # the minimum count lifts 3 to 5: t5 and then t0 (the first of the tied zeros) join
    lifted = select_parts(GLOBAL, TOKENS, DPSMConfig(k_min=5), bins=1)
    assert lifted.counts.tolist() == [5] and lifted.kept[0].tolist() == [True, True, True, True, False, True]
    assert torch.allclose(lifted.parts[0, 0], TOKENS[0, [1, 3, 2, 5, 0]].mean(0))
    # the code's rule keeps one fewer; the global token as proxy gives the same ranking here; fixed keeps 2
    assert select_parts(GLOBAL, TOKENS, DPSMConfig(k_min=0, split_rule="code"), 1).kept[0].tolist() == \
        [False, True, False, True, False, False]
    assert select_parts(GLOBAL, TOKENS, DPSMConfig(k_min=0, proxy="cls"), 1).counts.tolist() == [3]
    fixed = select_parts(GLOBAL, TOKENS, DPSMConfig(selection="fixed", fixed_k=2), 1)
    assert fixed.counts.tolist() == [2] and torch.allclose(fixed.parts[0, 0], (TOKENS[0, 1] + TOKENS[0, 3]) / 2)


def test_selection_per_image_in_a_batch_and_gradients():
    other = torch.roll(TOKENS, shifts=2, dims=1) * 2  # same geometry, scores ×4, tokens moved by two places
    tokens = torch.cat([TOKENS, other]).requires_grad_(True)
    sel = select_parts(torch.cat([GLOBAL, GLOBAL]), tokens, DPSMConfig(k_min=0), bins=2)
    assert sel.counts.tolist() == [3, 3] and sel.proxy.tolist() == [1, 3]
    assert torch.allclose(sel.parts[1], 2 * sel.parts[0])
    sel.parts.sum().backward()
    assert tokens.grad[0, [0, 4, 5]].abs().sum() == 0 and tokens.grad[0, [1, 2, 3]].abs().sum() > 0


def test_too_large_minimum_is_refused():
    with pytest.raises(OccreidError, match="k_min = 7 exceeds the backbone's 6 patch tokens"):
        select_parts(GLOBAL, TOKENS, DPSMConfig(k_min=7), bins=2)
    with pytest.raises(OccreidError, match="selection.pooling"):
        DPSMConfig(pooling="mean")


@pytest.mark.parametrize("length, bins", [(1, 1), (3, 2), (5, 4), (7, 3), (24, 4), (128, 4), (2, 4)])
def test_pool_matrix_equals_adaptive_avg_pool(length, bins):
    x = torch.randn(2, 5, length)
    assert torch.allclose(x @ adaptive_pool_matrix(length, bins).t(), nn.AdaptiveAvgPool1d(bins)(x), atol=1e-6)


def test_batch_min_pooling_by_hand():
    # counts 3 and 2 into one part: direct = the mean of the kept tokens; the code's two stages pool 3 → 2
    # ([.5 .5 0], [0 .5 .5]) then 2 → 1, i.e. weights [.25 .5 .25]: the middle token counts twice
    direct = pooling_weights(torch.tensor([3, 2]), 1, 4, "direct")
    assert torch.allclose(direct, torch.tensor([[[1 / 3, 1 / 3, 1 / 3, 0]], [[0.5, 0.5, 0, 0]]]))
    staged = pooling_weights(torch.tensor([3, 2]), 1, 4, "batch_min")
    assert torch.allclose(staged, torch.tensor([[[0.25, 0.5, 0.25, 0]], [[0.5, 0.5, 0, 0]]]))


def test_spatial_parts_are_horizontal_stripes():
    tokens = torch.arange(8.0).reshape(1, 8, 1)  # a 4x2 grid in raster order
    assert spatial_parts(tokens, 4)[0, :, 0].tolist() == [0.5, 2.5, 4.5, 6.5]


# ---------------------------------------------------------------------------------------------------- FBM
def _identity(linear: nn.Linear) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.eye(linear.weight.shape[0], linear.weight.shape[1]))
        if linear.bias is not None:
            linear.bias.zero_()


def test_fbm_shapes_and_descriptor():
    for style in ("paper", "code"):
        fbm = build_fbm(768, FBMConfig(style=style, heads=1 if style == "paper" else 2))
        out = fbm(torch.randn(3, 768), torch.randn(3, 768))
        assert out.shape == (3, 768)
        assert fbm.pos_embed.shape == (1, 48, 16)  # 768 = 48 sub-parts x 16 channels
    with pytest.raises(OccreidError, match="not a multiple"):
        PaperFBM(100, FBMConfig())
    with pytest.raises(OccreidError, match="multiple of blending.heads"):
        FBMConfig(subpart_dim=16, heads=3)


def test_paper_fbm_blending_worked_by_hand():
    """D = 4 in two sub-parts of 2, one head, every map the identity, position embedding 0, FFN = GELU.

    part (3, 1 | 0, 2) → sub-parts LN'ed to (1, −1), (−1, 1); global (1, 5 | 4, 2) → keys = values = (−1, 1),
    (1, −1). Query (1, −1) scores −2 and 2 (÷√2): softmax w = (1 − s, s), s = 1/(1 + e^(−2√2)), output
    (2s − 1)·(1, −1); the other query mirrors it. Then y = LN(part + blended), f = y + GELU(y)."""
    fbm = PaperFBM(4, FBMConfig(subpart_dim=2, heads=1, mlp_ratio=1.0))
    for lin in (fbm.proj_q, fbm.proj_k, fbm.proj_v, fbm.out, fbm.ffn.fc1, fbm.ffn.fc2):
        _identity(lin)
    part, glob = torch.tensor([[3.0, 1.0, 0.0, 2.0]]), torch.tensor([[1.0, 5.0, 4.0, 2.0]])
    s = 1 / (1 + math.exp(-2 * math.sqrt(2)))
    a = 2 * s - 1  # 0.88839
    summed = [3 + a, 1 - a, 0 - a, 2 + a]
    mean = sum(summed) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in summed) / 4 + 1e-5)
    y = [(x - mean) / std for x in summed]
    expected = torch.tensor([[v + v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in y]])
    # LN of a 2-channel sub-part is ±1 only up to its epsilon: 1e-5 / (2·1²) relative
    assert torch.allclose(fbm(part, glob), expected, atol=1e-4)
    assert abs(a - 0.88839) < 1e-5 and torch.allclose(torch.tensor(y), torch.tensor([1.22264, -0.71073, -1.22264, 0.71073]), atol=1e-4)


def test_code_fbm_equals_its_formula():
    """The released layout recomputed with einsum from its weights (two routes)."""
    torch.manual_seed(0)
    fbm = CodeFBM(32, FBMConfig(style="code", subpart_dim=8, heads=2))
    with torch.no_grad():
        fbm.pos_embed.normal_()
    part, glob = torch.randn(3, 32), torch.randn(3, 32)
    x = part.reshape(3, 4, 8) + fbm.pos_embed
    g = glob.reshape(3, 4, 8) + fbm.pos_embed
    q = fbm.norm_q(x) @ fbm.q.weight.t()
    kv = fbm.norm_kv(g) @ fbm.kv.weight.t()
    k, v = kv[..., :8], kv[..., 8:]
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        w = torch.softmax(torch.einsum("bic,bjc->bij", q[..., sl], k[..., sl]) / 2.0, dim=-1)
        heads.append(torch.einsum("bij,bjc->bic", w, v[..., sl]))
    x = x + fbm.proj(torch.cat(heads, dim=-1))
    x = x + fbm.ffn(fbm.norm_ffn(x))
    assert torch.allclose(fbm(part, glob), x.reshape(3, 32), atol=1e-6)


# ---------------------------------------------------------------------------------------------------- memory
def test_identity_means_and_missing_identity():
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    assert identity_means(feats, torch.tensor([0, 0, 1]), 2).tolist() == [[2.0, 0.0], [0.0, 2.0]]
    with pytest.raises(OccreidError, match="1 identities have no training image"):
        identity_means(feats, torch.tensor([0, 0, 2]), 3)


def test_momentum_update_in_batch_order():
    bank = torch.tensor([[1.0, 0.0], [5.0, 5.0]])
    momentum_update(bank, torch.tensor([[0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 0]), 0.2)
    # (1, 0) → 0.2·(1, 0) + 0.8·(0, 1) = (0.2, 0.8) → 0.2·(0.2, 0.8) + 0.8·(1, 1) = (0.84, 0.96); id 1 untouched
    assert torch.allclose(bank, torch.tensor([[0.84, 0.96], [5.0, 5.0]]))


def test_info_nce_value_by_hand():
    bank = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # entries are compared after L2 normalisation
    feat = torch.tensor([[3.0, 4.0]])  # cosines 0.6 and 0.8; / 0.05 → logits 12 and 16
    assert math.isclose(info_nce(feat, bank, torch.tensor([0]), 0.05).item(), math.log(1 + math.exp(4)), rel_tol=1e-5)
    assert math.isclose(info_nce(feat, bank, torch.tensor([1]), 0.05).item(), math.log(1 + math.exp(-4)), rel_tol=1e-4)


def test_memory_module_needs_initialisation_and_keeps_its_bank_in_the_state_dict():
    mem = IdentityMemory(2, 2)
    with pytest.raises(OccreidError, match="never initialised"):
        mem.loss(torch.ones(1, 2), torch.tensor([0]))
    mem.initialize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    state = mem.state_dict()
    assert set(state) == {"bank", "ready"} and bool(state["ready"])
    other = IdentityMemory(2, 2)
    other.load_state_dict(state)
    assert torch.equal(other.bank, mem.bank) and math.isfinite(other.loss(torch.ones(1, 2), torch.tensor([1])).item())


def test_mix_batch_reproduces_the_cross_image_leak_of_the_released_head_merge():
    """Correct merge: an image's output ignores the other images. The released merge (mix_batch): image 0's
    output is made of head 0's results for images 0 and 1, so changing image 1 changes it."""
    from occreid.models.fbm import cross_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 8).unbind(0)
    k2, v2 = k.clone(), v.clone()
    k2[1] += 1.0
    v2[1] += 1.0
    assert torch.equal(cross_attention(q, k, v, 2)[0], cross_attention(q, k2, v2, 2)[0])
    mixed = cross_attention(q, k, v, 2, mix_batch=True)
    assert not torch.allclose(mixed[0], cross_attention(q, k2, v2, 2, mix_batch=True)[0])
    heads = torch.nn.functional.scaled_dot_product_attention(
        *(t.reshape(2, 4, 2, 4).transpose(1, 2) for t in (q, k, v)))  # [B, heads, S, c]
    assert torch.equal(mixed[0].flatten(), heads[:, 0].flatten())  # head 0 of image 0, then of image 1
