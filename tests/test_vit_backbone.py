"""The timm ViT wrapper: overlapping grids, pos-embed resampling, SIE, taps, attention logits, weights."""

from __future__ import annotations

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from occreid.errors import OccreidError
from occreid.models.factory import BACKBONES, BackboneConfig, create_backbone, skip_pretrained
from occreid.models.vit import ViTBackbone, cls_attention_logits



def tiny(**kw) -> ViTBackbone:
    kw.setdefault("img_size", (64, 32))
    return create_backbone("vit_tiny", **kw)


@pytest.mark.parametrize(
    "img_size, stride, grid",
    [
        ((256, 128), 16, (16, 8)),  # (256-16)//16+1, (128-16)//16+1
        ((256, 128), 12, (21, 10)),  # 240//12+1 = 21, 112//12+1 = 10
        ((256, 128), 11, (22, 11)),  # 240//11+1 = 22, 112//11+1 = 11
        ((64, 32), 8, (7, 3)),  # 48//8+1 = 7, 16//8+1 = 3
    ],
)
def test_overlapping_grid_matches_hand_computation(img_size, stride, grid):
    bb = create_backbone("vit_tiny", img_size=img_size, stride=stride, taps=())
    assert bb.grid == grid
    assert bb.vit.pos_embed.shape == (1, 1 + grid[0] * grid[1], bb.embed_dim)
    assert bb.vit.patch_embed.proj.stride == (stride, stride)
    out = bb(torch.randn(1, 3, *img_size))
    assert out.tokens.shape == (1, grid[0] * grid[1], bb.embed_dim)
    assert out.cls.shape == (1, bb.embed_dim)
    assert out.grid == grid


def test_taps_attn_logits_and_shapes():
    bb = tiny(stride=8, taps=(1, 3), return_attn=True)
    out = bb(torch.randn(2, 3, 64, 32))
    n = 7 * 3
    assert len(out.taps) == 2 and all(t.shape == (2, n, 96) for t in out.taps)
    assert out.attn_logits.shape == (2, bb.num_heads, n)
    assert len(tiny().forward(torch.randn(1, 3, 64, 32)).taps) == len(BACKBONES.get("vit_tiny").taps)
    assert tiny(taps=()).forward(torch.randn(1, 3, 64, 32)).attn_logits is None


def test_taps_are_block_outputs_without_cls():
    bb = tiny(taps=(2,)).eval()
    x = torch.randn(2, 3, 64, 32)
    captured = {}
    bb.vit.blocks[1].register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    out = bb(x)
    torch.testing.assert_close(out.taps[0], captured["out"][:, 1:], rtol=0, atol=0)


def test_attn_logits_match_timm_attention_weights():
    """softmax over our CLS→patch logits == timm's own (non-fused) attention row of CLS, renormalised over patches."""
    torch.manual_seed(0)
    bb = tiny(stride=12, return_attn=True).eval()
    last = bb.vit.blocks[-1].attn
    last.fused_attn = False  # timm then computes softmax(q k^T * scale) explicitly and feeds it to attn_drop
    seen = {}
    last.attn_drop.register_forward_hook(lambda m, i, o: seen.setdefault("attn", i[0]))
    out = bb(torch.randn(3, 3, 64, 32))
    timm_cls_row = seen["attn"][:, :, 0, 1:]  # [B, heads, N]
    ours = out.attn_logits.softmax(-1)
    torch.testing.assert_close(ours, timm_cls_row / timm_cls_row.sum(-1, keepdim=True), rtol=1e-5, atol=1e-6)
    # and the raw logits equal q·k * scale computed the slow way from the normed input
    x = torch.randn(2, 5, 96)
    blk = bb.vit.blocks[0]
    y = blk.norm1(x)
    q, k, _ = blk.attn.qkv(y).reshape(2, 5, 3, 4, 24).permute(2, 0, 3, 1, 4)
    slow = (q[:, :, 0:1] @ k.transpose(-2, -1))[:, :, 0, 1:] * 24**-0.5
    torch.testing.assert_close(cls_attention_logits(blk, x), slow, rtol=1e-5, atol=1e-6)


def test_sie_all_tokens_and_cls_only():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 32).repeat(2, 1, 1, 1)
    for mode in ("all", "cls"):
        bb = tiny(num_cams=3, sie_mode=mode).eval()
        assert bb.sie_embed.shape == (3, 1, 96)
        out = bb(x, torch.tensor([0, 2]))
        assert not torch.allclose(out.cls[0], out.cls[1])  # different cameras, same image
        same = bb(x, torch.tensor([1, 1]))
        torch.testing.assert_close(same.cls[0], same.cls[1], rtol=0, atol=0)
    # "cls": the camera vector enters only the CLS token, so the patch tokens of block 1's input agree
    bb = tiny(num_cams=2, sie_mode="cls", taps=(1,)).eval()
    captured = []
    bb.vit.blocks[0].register_forward_pre_hook(lambda m, args: captured.append(args[0]))
    bb(x, torch.tensor([0, 1]))
    inp = captured[0]
    torch.testing.assert_close(inp[0, 1:], inp[1, 1:], rtol=0, atol=0)
    delta = inp[0, 0] - inp[1, 0]
    torch.testing.assert_close(delta, 3.0 * (bb.sie_embed[0, 0] - bb.sie_embed[1, 0]), rtol=1e-5, atol=1e-6)


def test_sie_requires_camids_and_zero_cams_has_none():
    with pytest.raises(ValueError, match="camids"):
        tiny(num_cams=2)(torch.randn(1, 3, 64, 32))
    assert tiny(num_cams=0).sie_embed is None


def test_gradients_reach_every_parameter():
    bb = tiny(num_cams=2, stride=12, taps=(1, 2), return_attn=True)
    out = bb(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
    loss = out.cls.sum() + sum(t.sum() for t in out.taps) + out.attn_logits.sum() + out.tokens.sum()
    loss.backward()
    missing = [n for n, p in bb.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []
    assert bb.sie_embed.grad.abs().sum() > 0


def test_drop_path_from_config():
    bb = tiny(drop_path=0.2)
    rates = [getattr(blk.drop_path1, "drop_prob", 0.0) for blk in bb.vit.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)  # timm's linear rule over depth
    assert rates == sorted(rates) and len(set(rates)) == len(rates)
    assert all(getattr(blk.drop_path1, "drop_prob", 0.0) == 0.0 for blk in tiny().vit.blocks)  # vit_tiny: 0


@pytest.mark.parametrize("kw, match", [
    (dict(stride=20), "stride"), (dict(taps=(0, 5)), "taps"), (dict(sie_mode="x"), "sie_mode"),
    (dict(img_size=(8, 8)), "smaller than the patch"),
])
def test_bad_arguments_are_user_errors(kw, match):
    with pytest.raises(OccreidError, match=match):
        tiny(**kw)


def test_unknown_backbone_lists_names():
    with pytest.raises(OccreidError, match="vit_tiny"):
        create_backbone("vit_tinny")


def _pretraining_file(tmp_path, seed=7):
    """A 'pretrained' timm checkpoint: another random vit_tiny at the variant's pretraining size (224×224)."""
    torch.manual_seed(seed)
    src = create_backbone("vit_tiny", img_size=BACKBONES.get("vit_tiny").pretrained_size, taps=())
    path = tmp_path / "vit_tiny_pretrained.pth"
    torch.save(src.vit.state_dict(), path)
    return src.vit.state_dict(), path


def test_local_pretrained_file_reproduces_weights_and_resamples_pos_embed(tmp_path):
    src, path = _pretraining_file(tmp_path)
    torch.manual_seed(123)  # the target's own random init must be overwritten
    bb = tiny(pretrained=str(path), stride=12, taps=())
    got = bb.vit.state_dict()
    for k, v in src.items():
        if k != "pos_embed":
            torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)
    assert bb.grid == (5, 2)  # (64-16)//12+1, (32-16)//12+1
    expected = resample_abs_pos_embed(src["pos_embed"], new_size=(5, 2), old_size=(14, 14), num_prefix_tokens=1)
    torch.testing.assert_close(got["pos_embed"], expected, rtol=0, atol=0)
    torch.testing.assert_close(got["pos_embed"][:, 0], src["pos_embed"][:, 0], rtol=0, atol=0)  # CLS kept


def test_pretrained_file_errors(tmp_path):
    with pytest.raises(OccreidError, match="not found"):
        tiny(pretrained=str(tmp_path / "missing.pth"))
    bad = tmp_path / "other.pth"
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(OccreidError, match="missing keys"):
        tiny(pretrained=str(bad))
    import timm

    narrow = timm.create_model("vit_base_patch16_224", embed_dim=64, depth=4, num_heads=4, num_classes=0)
    torch.save(narrow.state_dict(), tmp_path / "narrow.pth")  # same keys, other shapes
    with pytest.raises(OccreidError, match="does not fit"):
        tiny(pretrained=str(tmp_path / "narrow.pth"))
    with pytest.raises(OccreidError, match="no published weights"):
        tiny(pretrained="default")


def test_skip_pretrained_builds_random_init(tmp_path):
    src, path = _pretraining_file(tmp_path)
    with skip_pretrained():
        bb = BackboneConfig(name="vit_tiny", pretrained=str(path), img_size=[224, 224]).build(num_cams=0)
    assert not torch.equal(bb.vit.blocks[0].attn.qkv.weight, src["blocks.0.attn.qkv.weight"])
