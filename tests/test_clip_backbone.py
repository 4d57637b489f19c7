"""CLIP image backbone: overlapping-stride grids, pos-embed resampling, SIE, taps, attention logits, weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from occreid.errors import OccreidError
from occreid.models.clip_backbone import LOCAL_CONFIGS, ClipImageBackbone, load_clip, resize_pos_embed
from occreid.models.factory import BACKBONES, create_backbone



@pytest.fixture(scope="module")
def clip():
    return load_clip("clip_tiny", seed=0)


def _backbone(clip, **kw) -> ClipImageBackbone:
    import copy

    return ClipImageBackbone(copy.deepcopy(clip.visual), **kw).eval()


@pytest.mark.parametrize(
    "img_size, stride, grid",
    [
        ((64, 32), 16, (4, 2)),  # 64/16, 32/16: no overlap
        ((64, 32), 12, (5, 2)),  # (64-16)//12+1 = 5, (32-16)//12+1 = 2
        ((256, 128), 12, (21, 10)),  # CLIP-ReID's SIE+OLP grid: 240//12+1, 112//12+1
        ((80, 48), 8, (9, 5)),  # 64//8+1, 32//8+1
    ],
)
def test_output_shapes_for_overlapping_grids(clip, img_size, stride, grid):
    b = _backbone(clip, img_size=img_size, stride=stride, taps=(2,), return_attn=True)
    n = grid[0] * grid[1]
    out = b(torch.randn(2, 3, *img_size))
    assert b.grid == grid and out.grid == grid
    assert b.visual.positional_embedding.shape == (n + 1, 64)
    assert out.cls.shape == (2, 64) and out.tokens.shape == (2, n, 64)
    assert out.extra["proj"].shape == (2, 32) and out.extra["cls_prev"].shape == (2, 64)
    assert out.attn_logits.shape == (2, 4, n)
    assert [t.shape for t in out.taps] == [(2, n, 64)]
    assert (b.embed_dim, b.proj_dim, b.num_heads) == (64, 32, 4)


def test_pos_embed_kept_when_grid_unchanged(clip):
    b = _backbone(clip, img_size=(64, 64), stride=16)  # the config's own 64x64 / 16 = 4x4 grid
    assert torch.equal(b.visual.positional_embedding, clip.visual.positional_embedding)
    pos = torch.randn(1 + 3 * 2, 8)
    assert torch.equal(resize_pos_embed(pos, (3, 2), (3, 2)), pos)


def test_pos_embed_bilinear_values_by_hand():
    # one channel, grid 2x2 [[a, b], [c, d]] -> 4x4; bilinear, align_corners=False samples the source at
    # -0.25, 0.25, 0.75, 1.25 (clamped) → weights (1, 0), (.75, .25), (.25, .75), (0, 1) per axis.
    a, b, c, d = 1.0, 2.0, 5.0, 9.0
    pos = torch.tensor([[7.0], [a], [b], [c], [d]])
    out = resize_pos_embed(pos, (2, 2), (4, 4))
    assert out.shape == (17, 1) and out[0, 0] == 7.0  # the CLS position is not resampled
    grid = out[1:, 0].view(4, 4)
    w = [(1.0, 0.0), (0.75, 0.25), (0.25, 0.75), (0.0, 1.0)]
    for i, (r0, r1) in enumerate(w):
        for j, (c0, c1) in enumerate(w):
            want = r0 * (c0 * a + c1 * b) + r1 * (c0 * c + c1 * d)
            assert grid[i, j].item() == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("mode", ["cls", "all"])
def test_sie_on_cls_only_or_every_token(clip, mode):
    b = _backbone(clip, img_size=(64, 32), stride=16, num_cams=3, sie_coef=2.0, sie_mode=mode)
    b.visual.ln_pre = nn.Identity()  # look at the embeddings themselves
    x = torch.randn(2, 3, 64, 32)
    cams = torch.tensor([2, 0])
    diff = b._embed(x, cams) - b._embed(x, None)
    want = 2.0 * b.cam_embed[cams]  # [B, D]
    assert torch.allclose(diff[:, 0], want, atol=1e-6)
    if mode == "cls":
        assert torch.count_nonzero(diff[:, 1:]) == 0
    else:
        assert torch.allclose(diff[:, 1:], want[:, None].expand_as(diff[:, 1:]), atol=1e-6)


def test_sie_absent_without_cameras(clip):
    b = _backbone(clip, img_size=(64, 32), num_cams=0)
    assert b.cam_embed is None
    assert _backbone(clip, img_size=(64, 32), num_cams=4, sie_coef=0.0).cam_embed is None


def test_taps_are_block_outputs_and_last_tap_matches_tokens(clip):
    b = _backbone(clip, img_size=(64, 32), stride=12, taps=(1, 3))
    seen = []
    hooks = [blk.register_forward_hook(lambda m, i, o: seen.append(o)) for blk in b.visual.transformer.resblocks]
    out = b(torch.randn(2, 3, 64, 32))
    for h in hooks:
        h.remove()
    assert len(out.taps) == 2
    assert torch.equal(out.taps[0], seen[0][:, 1:]) and torch.equal(out.taps[1], seen[2][:, 1:])
    assert torch.allclose(b.visual.ln_post(out.taps[1]), out.tokens, atol=1e-6)
    # CLIP-ReID's three features: block-(L-1) CLS (no norm), ln_post CLS, projected CLS
    assert torch.equal(out.extra["cls_prev"], seen[1][:, 0])
    assert torch.allclose(out.extra["proj"], out.cls @ b.visual.proj, atol=1e-6)
    with pytest.raises(OccreidError, match="1-based"):
        _backbone(clip, img_size=(64, 32), taps=(0,))
    with pytest.raises(OccreidError):
        _backbone(clip, img_size=(64, 32), taps=(4,))


def test_attn_logits_match_multihead_attention_weights(clip):
    b = _backbone(clip, img_size=(64, 32), stride=12, return_attn=True)
    last = b.visual.transformer.resblocks[-1]
    inputs = []
    hook = last.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    out = b(torch.randn(3, 3, 64, 32))
    hook.remove()
    h = last.ln_1(inputs[0])
    _, weights = last.attn(h, h, h, need_weights=True, average_attn_weights=False)  # [B, H, T, T]
    cls_to_patch = weights[:, :, 0, 1:]
    ours = torch.softmax(out.attn_logits, dim=-1)  # softmax over patches = the CLS row renormalised
    assert torch.allclose(ours, cls_to_patch / cls_to_patch.sum(-1, keepdim=True), atol=1e-5)
    # scaled: logit = q·k / sqrt(head_dim); the CLS→CLS weight completes the row
    q = nn.functional.linear(h[:, :1], *[t[:64] for t in (last.attn.in_proj_weight, last.attn.in_proj_bias)])
    k = nn.functional.linear(h[:, :1], *[t[64:128] for t in (last.attn.in_proj_weight, last.attn.in_proj_bias)])
    self_logit = (q.view(3, 4, 16) * k.view(3, 4, 16)).sum(-1) / math.sqrt(16)  # [B, H]
    full = torch.softmax(torch.cat([self_logit[..., None], out.attn_logits], -1), -1)
    assert torch.allclose(full, weights[:, :, 0], atol=1e-5)
    assert _backbone(clip, img_size=(64, 32)).forward(torch.randn(1, 3, 64, 32)).attn_logits is None


def test_bad_inputs_raise_occreid_errors(clip):
    b = _backbone(clip, img_size=(64, 32))
    with pytest.raises(OccreidError, match="img_size"):
        b(torch.randn(1, 3, 32, 64))
    with pytest.raises(OccreidError, match="stride"):
        _backbone(clip, img_size=(64, 32), stride=17)
    with pytest.raises(OccreidError, match="smaller than the patch"):
        _backbone(clip, img_size=(8, 32))
    with pytest.raises(OccreidError, match="sie_mode"):
        _backbone(clip, img_size=(64, 32), num_cams=2, sie_mode="tokens")


def test_factory_builds_clip_backbones_with_default_taps():
    b = create_backbone("clip_tiny", img_size=(64, 32), stride=12, num_cams=2, sie_mode="cls")
    assert isinstance(b, ClipImageBackbone) and b.taps == (1, 2, 3) and b.grid == (5, 2)
    out = b(torch.randn(1, 3, 64, 32), torch.tensor([1]))
    assert len(out.taps) == 3
    with pytest.raises(OccreidError, match="drop-path"):
        create_backbone("clip_tiny", img_size=(64, 32), drop_path=0.1)


def test_seeded_random_init_is_reproducible_and_leaves_global_rng(clip):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    again = load_clip("clip_tiny", seed=0)
    assert torch.equal(torch.rand(1), before)  # the global stream did not move
    for (n, p), (_, q) in zip(clip.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), n
    other = load_clip("clip_tiny", seed=1)
    assert not torch.equal(other.visual.conv1.weight, clip.visual.conv1.weight)


def test_pretrained_file_loads_and_missing_weights_explain(clip, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(clip.state_dict(), path)
    loaded = load_clip("clip_tiny", str(path), seed=7)  # seed 7 would give other random weights
    assert torch.equal(loaded.visual.proj, clip.visual.proj)
    assert torch.equal(loaded.token_embedding.weight, clip.token_embedding.weight)
    with pytest.raises(OccreidError, match="neither a file nor an open_clip tag"):
        load_clip("clip_tiny", str(tmp_path / "missing.pt"))
    with pytest.raises(OccreidError, match="no published weights"):
        load_clip("clip_tiny", "default")
    with pytest.raises(OccreidError, match="not a CLIP model"):
        load_clip("vit_tiny")


# Every CLIP variant without published weights is a config shipped in occreid/models/clip_configs/: it must
# build offline, reproducibly from the seed, and give the taps and grid its spec and config say.
RANDOM_CLIPS = [n for n in BACKBONES.names() if BACKBONES.get(n).family == "clip" and BACKBONES.get(n).default_tag is None]


@pytest.mark.parametrize("name", RANDOM_CLIPS)
def test_shipped_clip_configs_build_offline_with_their_declared_shape(name):
    import json

    spec = BACKBONES.get(name)
    cfg = json.loads(LOCAL_CONFIGS[spec.source].read_text())["vision_cfg"]
    a, b = load_clip(name, seed=0), load_clip(name, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    backbone = create_backbone(name, img_size=(64, 32), num_cams=3, sie_mode="cls", sie_coef=1.0).eval()
    out = backbone(torch.randn(2, 3, 64, 32), torch.tensor([0, 2]))
    p = cfg["patch_size"]
    grid = (64 // p, 32 // p)
    assert out.grid == grid and out.cls.shape == (2, cfg["width"])
    assert [t.shape for t in out.taps] == [(2, grid[0] * grid[1], cfg["width"])] * len(spec.taps)
    assert max(spec.taps) == cfg["layers"]


@pytest.mark.parametrize("clip_name, vit_name", [("clip_tiny_p8", "vit_tiny_p8"), ("clip_mini_p8", "vit_mini_p8")])
def test_the_demo_clip_matches_the_demo_vit_in_size(clip_name, vit_name):
    """The demo's CLIP (clip_mini_p8; before, clip_tiny_p8) has its ViT's image tower, so their rows compare at
    equal capacity."""
    clip = create_backbone(clip_name, img_size=(64, 32), taps=())
    vit = create_backbone(vit_name, img_size=(64, 32), taps=())
    n_clip = sum(p.numel() for p in clip.parameters())
    n_vit = sum(p.numel() for p in vit.parameters())
    assert abs(n_clip - n_vit) / n_vit < 0.1, (n_clip, n_vit)
