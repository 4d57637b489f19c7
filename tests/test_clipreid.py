"""``clipreid`` method (CLIP-ReID stage 2) on a tiny CLIP, and the CLIP-ReID checkpoint adapter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from occreid.engine.config import TrainConfig
from occreid.engine.context import TrainContext
from occreid.engine.optim import build_optimizer
from occreid.errors import OccreidError
from occreid.methods import create_method
from occreid.methods.clipreid import TRAIN_PRESET, ClipReIDConfig, ClipReIDMethod
from occreid.models.adapters.clipreid import adapt_clipreid_state_dict, load_clipreid_checkpoint, split_adapted
from occreid.models.clip_backbone import load_clip
from occreid.models.factory import BackboneConfig
from occreid.models.prompt_learner import ClipTextEncoder, PromptLearner
from occreid.prompts import compute_text_features, write_prompts
from stages.params import from_dict

IDS, CAMS = 4, 3
BACKBONE = dict(name="clip_tiny", pretrained=None, img_size=[64, 32], stride=12, sie=True, sie_coef=1.0, sie_mode="cls")



@pytest.fixture(scope="module")
def prompts_dir(tmp_path_factory):
    """A stage-1 output for the tiny backbone: random text features + a prompt learner, with meta.json."""
    clip = load_clip("clip_tiny")
    learner = PromptLearner(IDS, clip.token_embedding, context_length=clip.context_length)
    feats = torch.randn(IDS, 32, generator=torch.Generator().manual_seed(3))
    out = tmp_path_factory.mktemp("prompts") / "toy"
    return write_prompts(out, feats, learner, {"backbone": dict(BACKBONE, taps=None, drop_path=None)})


def _method(prompts_dir, **kw) -> ClipReIDMethod:
    torch.manual_seed(0)
    cfg = ClipReIDConfig(backbone=BackboneConfig(**BACKBONE), text_features=str(prompts_dir), **kw)
    return create_method("clipreid", cfg, IDS, CAMS)


def _batch():
    g = torch.Generator().manual_seed(1)
    pids = torch.arange(IDS).repeat_interleave(2)
    images = torch.randn(IDS, 3, 64, 32, generator=g)[pids] + torch.randn(8, 3, 64, 32, generator=g)
    return {"image": images, "pid": pids, "camid": torch.arange(8) % CAMS, "index": torch.arange(8)}


def test_loss_terms_have_clipreid_weights_and_values(prompts_dir):
    m = _method(prompts_dir).train()
    batch = _batch()
    torch.manual_seed(5)
    terms = m.losses(batch)
    assert set(terms) == {"id", "triplet", "i2t"}
    torch.manual_seed(5)  # BN in train mode is deterministic; recompute every term by hand
    out = m.backbone(batch["image"], batch["camid"])
    proj, pids = out.extra["proj"], batch["pid"]
    ce = F.cross_entropy(m.neck.classifier(m.neck.bn(out.cls)), pids, label_smoothing=0.1)
    ce_p = F.cross_entropy(m.neck_proj.classifier(m.neck_proj.bn(proj)), pids, label_smoothing=0.1)
    assert terms["id"].item() == pytest.approx(0.25 * (ce + ce_p).item(), rel=1e-5)
    i2t = F.cross_entropy(proj @ m.text_features.t(), pids, label_smoothing=0.1)
    assert terms["i2t"].item() == pytest.approx(i2t.item(), rel=1e-5)
    assert torch.equal(m.text_features, torch.load(prompts_dir / "text_features.pt", weights_only=True))
    tri = 0.0
    for f in (out.extra["cls_prev"], out.cls, proj):  # batch-hard, margin 0.3, raw (unnormalised) features
        d = torch.cdist(f, f)
        same = pids[:, None] == pids[None]
        d_ap = d.masked_fill(~same, -1).amax(1)
        d_an = d.masked_fill(same, float("inf")).amin(1)
        tri += F.relu(d_ap - d_an + 0.3).mean().item()
    assert terms["triplet"].item() == pytest.approx(tri, rel=1e-4) and tri > 0


def test_trains_a_few_iterations_text_features_frozen(prompts_dir):
    m = _method(prompts_dir)
    specs = m.optimizers(TrainConfig())
    opt_cfg = specs[0].config
    assert (opt_cfg.name, opt_cfg.lr, opt_cfg.weight_decay) == ("adam", 5e-6, 1e-4)
    specs[0].config.lr = 1e-3
    for g in specs[0].param_groups:
        g["lr"] = 1e-3 * (2.0 if g["group"] == "bias" else 1.0)
    ctx = TrainContext(device=torch.device("cpu"), optimizers={"main": build_optimizer(specs[0])})
    text = m.text_features.clone()
    conv = m.backbone.visual.conv1.weight.detach().clone()
    batch = _batch()
    m.train()
    losses = [m.train_step(batch, ctx)["loss"] for _ in range(6)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    assert torch.equal(m.text_features, text)
    assert not torch.equal(m.backbone.visual.conv1.weight, conv)
    assert m.backbone.cam_embed.grad is not None  # SIE trained (added to the CLS token)


def test_embed_is_concat_of_pre_bn_cls_and_proj(prompts_dir):
    m = _method(prompts_dir).eval()
    x, cams = torch.randn(3, 3, 64, 32), torch.tensor([0, 1, 2])
    with torch.no_grad():
        emb = m.embed(x, cams)
        out = m.backbone(x, cams)
    assert emb.feat.shape == (3, 64 + 32) and emb.mask is None
    assert torch.equal(emb.feat, torch.cat([out.cls, out.extra["proj"]], 1))
    after = _method(prompts_dir, neck_feat="after").eval()
    with torch.no_grad():
        assert after.embed(x, cams).feat.shape == (3, 96)


def test_text_features_required_and_matched(prompts_dir, tmp_path):
    cfg = ClipReIDConfig(backbone=BackboneConfig(**BACKBONE))
    m = create_method("clipreid", cfg, IDS, CAMS)  # no text features: fine for loading a trained model
    with pytest.raises(OccreidError, match="no text features"):
        m.losses(_batch())
    with pytest.raises(OccreidError, match="4 identities but the training split has 5"):
        create_method("clipreid", ClipReIDConfig(backbone=BackboneConfig(**BACKBONE), text_features=str(prompts_dir)), 5, CAMS)
    other = BackboneConfig(**{**BACKBONE, "stride": 16})
    with pytest.raises(OccreidError, match="another CLIP backbone"):
        create_method("clipreid", ClipReIDConfig(backbone=other, text_features=str(prompts_dir)), IDS, CAMS)
    with pytest.raises(OccreidError, match="not a CLIP backbone"):
        ClipReIDConfig(backbone=BackboneConfig(name="vit_tiny"))


def test_params_schema_and_train_preset():
    cfg = from_dict(ClipReIDConfig, {"backbone": {"name": "clip_tiny", "stride": 12}, "optimizer": None})
    assert cfg.optimizer is None and (cfg.backbone.name, cfg.backbone.stride) == ("clip_tiny", 12)
    with pytest.raises(OccreidError, match="unknown params key 'methods.clipreid.id_weight'"):
        from_dict(ClipReIDConfig, {"id_weight": 1.0}, key="methods.clipreid")
    default = ClipReIDConfig()
    assert (default.backbone.name, default.backbone.pretrained, default.backbone.sie_mode) == ("clip_vit_b16", "default", "cls")
    assert (default.id_loss_weight, default.triplet_margin, default.label_smoothing) == (0.25, 0.3, 0.1)
    train = from_dict(TrainConfig, TRAIN_PRESET, key="train")
    assert (train.epochs, train.batch_size, train.scheduler.name) == (60, 64, "multistep")
    assert (train.scheduler.warmup_epochs, train.scheduler.warmup_factor, train.scheduler.milestones) == (10, 0.1, [30, 50])


# --- adapter ---------------------------------------------------------------------------------------------

# Our name prefix → CLIP-ReID's (model/make_model_clipreid.py): used to write a synthetic released checkpoint.
TO_CLIPREID = (
    ("backbone.visual.", "image_encoder."), ("backbone.cam_embed", "cv_embed"),
    ("neck.bn.", "bottleneck."), ("neck_proj.bn.", "bottleneck_proj."),
    ("neck.classifier.", "classifier."), ("neck_proj.classifier.", "classifier_proj."),
)


def _as_clipreid(method, learner, encoder) -> dict:
    sd = {}
    for key, value in method.state_dict().items():
        if key == "text_features":
            continue  # CLIP-ReID computes them, never saves them
        for ours, theirs in TO_CLIPREID:
            if key.startswith(ours):
                sd["module." + theirs + key[len(ours):]] = value.clone()
                break
        else:
            raise AssertionError(key)
    sd["prompt_learner.cls_ctx"] = learner.ctx.detach().clone()
    sd["prompt_learner.token_prefix"] = learner.token_prefix.clone()
    sd["prompt_learner.token_suffix"] = learner.token_suffix.clone()
    for key, value in encoder.state_dict().items():
        sd["text_encoder." + key] = value.clone()
    return sd


def test_adapter_round_trip_into_a_fresh_method(prompts_dir, tmp_path):
    src = _method(prompts_dir)
    clip = load_clip("clip_tiny")
    learner = PromptLearner(IDS, clip.token_embedding, context_length=clip.context_length,
                            generator=torch.Generator().manual_seed(9))
    encoder = ClipTextEncoder(clip)
    sd = _as_clipreid(src, learner, encoder)
    for name, shape in [("module.image_encoder.class_embedding", (64,)), ("module.image_encoder.proj", (64, 32)),
                        ("module.image_encoder.positional_embedding", (5 * 2 + 1, 64)),
                        ("module.image_encoder.transformer.resblocks.2.attn.in_proj_weight", (192, 64)),
                        ("module.cv_embed", (CAMS, 64)), ("module.classifier.weight", (IDS, 64)),
                        ("module.classifier_proj.weight", (IDS, 32)), ("module.bottleneck_proj.running_var", (32,)),
                        ("prompt_learner.cls_ctx", (IDS, 4, 32)), ("text_encoder.text_projection", (32, 32))]:
        assert tuple(sd[name].shape) == shape, name

    adapted = adapt_clipreid_state_dict(sd)
    groups = split_adapted(adapted)
    own = {k: v for k, v in src.state_dict().items() if k != "text_features"}
    assert groups["method"].keys() == own.keys()
    assert all(torch.equal(groups["method"][k], own[k]) for k in own)
    assert torch.equal(groups["prompt_learner"]["ctx"], learner.ctx)

    path = tmp_path / "clipreid.pth"
    torch.save(sd, path)
    dst = create_method("clipreid", ClipReIDConfig(backbone=BackboneConfig(**BACKBONE)), IDS, CAMS)
    load_clipreid_checkpoint(dst, path)
    for k, v in own.items():
        assert torch.equal(dst.state_dict()[k], v), k
    with torch.no_grad():
        want = compute_text_features(learner, encoder)
    assert torch.allclose(dst.text_features, want, atol=1e-6) and bool(want.abs().sum() > 0)


def test_adapter_rejects_foreign_and_misfitting_checkpoints(prompts_dir, tmp_path):
    with pytest.raises(OccreidError, match="not CLIP-ReID"):
        adapt_clipreid_state_dict({"image_encoder.proj": torch.zeros(1), "base.cls_token": torch.zeros(1)})
    with pytest.raises(OccreidError, match="no image_encoder"):
        adapt_clipreid_state_dict({"classifier.weight": torch.zeros(2, 2)})
    src = _method(prompts_dir)
    sd = {("image_encoder." + k[len("backbone.visual."):]): v for k, v in src.state_dict().items()
          if k.startswith("backbone.visual.")}
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(OccreidError, match="lacks"):
        load_clipreid_checkpoint(_method(prompts_dir), path)
    bigger = create_method("clipreid", ClipReIDConfig(backbone=BackboneConfig(**{**BACKBONE, "stride": 16})), IDS, CAMS)
    with pytest.raises(OccreidError, match="does not fit"):
        load_clipreid_checkpoint(bigger, path)
    with pytest.raises(OccreidError, match="not found"):
        load_clipreid_checkpoint(bigger, tmp_path / "missing.pth")
