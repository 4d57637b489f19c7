"""The ``dpmpp`` method on clip_tiny: anchoring (init, freeze, loss), the mask-guided terms inside the method,
token-space transfer, config checks, and that each ablation switch removes its part."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dpmpp_fixtures import BACKBONE, NUM_CAMS, make_method, paired_batch, write_text_features
from occreid.config import from_dict
from occreid.engine.config import OptimizerConfig, TrainConfig
from occreid.engine.context import TrainContext
from occreid.engine.optim import build_optimizer
from occreid.errors import OccreidError
from occreid.losses import batch_hard_triplet
from occreid.losses.anchoring import anchor_loss, xavier_row_norm
from occreid.losses.mask_guided import masked_batch_hard_triplet, masked_consistency
from occreid.methods.dpm import DPMConfig, DPMMethod
from occreid.methods.dpmpp import ABLATIONS, SWEEPS, VARIANTS, DPMPPConfig, sweep_overrides
from occreid.models.factory import BackboneConfig

IDS = 4


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return write_text_features(tmp_path_factory.mktemp("prompts"), IDS)


def context(method, epoch: int = 1, lr: float = 0.01) -> TrainContext:
    specs = method.optimizers(TrainConfig(optimizer=OptimizerConfig(name="adamw", lr=lr)))
    return TrainContext(device=torch.device("cpu"), optimizers={s.name: build_optimizer(s) for s in specs}, epoch=epoch)


def plain(batch: dict) -> dict:
    """The batch without the pairing fields (what the engine's own P×K loader gives)."""
    return {k: batch[k] for k in ("image", "pid", "camid", "index")}


# ---------------------------------------------------------------------------------------------- config
def test_config_checks():
    with pytest.raises(OccreidError, match="not a CLIP backbone"):
        DPMPPConfig(backbone=BackboneConfig(name="vit_tiny"))
    with pytest.raises(OccreidError, match="freeze a random"):
        DPMPPConfig(anchor_init=False)
    with pytest.raises(OccreidError, match="needs pairing"):
        DPMPPConfig(pairing=False)
    with pytest.raises(OccreidError, match=">= 0"):
        DPMPPConfig(alpha=-1.0)


def test_ablation_and_variant_rows_are_valid_configs():
    base = dataclasses.asdict(DPMPPConfig())
    for name, over in {**ABLATIONS, **VARIANTS}.items():
        cfg = dataclasses.asdict(from_dict(DPMPPConfig, over, key=name))
        changed = {k for k in base if base[k] != cfg[k]}
        assert changed == set(over), name  # exactly the listed switches differ from the full model
    assert sweep_overrides("alpha")["alpha_0p25"] == {"methods": {"dpmpp": {"alpha": 0.25}}}
    assert list(sweep_overrides("alpha1")) == [f"alpha1_{v}".replace(".", "p") for v in SWEEPS["alpha1"].values]
    assert sweep_overrides("alpha2")["alpha2_0p5"] == {"spt": {"alpha2": 0.5}}
    assert sweep_overrides("alpha_dpm")["alpha_dpm_0p25"] == {"methods": {"dpmpp": {"w_mask": 0.25, "w_cls": 0.75}}}
    for name, sweep in SWEEPS.items():  # every method-side sweep value is a valid config
        if sweep.param.startswith("methods.dpmpp."):
            for over in sweep_overrides(name).values():
                from_dict(DPMPPConfig, over["methods"]["dpmpp"], key=name)


# ---------------------------------------------------------------------------------------------- anchoring
def test_prototypes_start_at_the_projected_text_features(text_dir):
    m = make_method(IDS, text_features=str(text_dir))
    text = torch.load(text_dir / "text_features.pt")
    expected = F.normalize(text.double() @ torch.linalg.pinv(m.backbone.visual.proj.detach().double()), dim=1)
    expected = (expected * xavier_row_norm(IDS, m.backbone.embed_dim)).float()
    torch.testing.assert_close(m.classifier.weight.detach(), expected)
    torch.testing.assert_close(m.text_prototypes, expected)
    # mapped back through CLIP's projection, each prototype points at its identity's text feature
    back = F.normalize(m.classifier.weight.detach() @ m.backbone.visual.proj.detach(), dim=1)
    torch.testing.assert_close(back, F.normalize(text, dim=1), atol=1e-5, rtol=1e-4)


def test_no_anchor_keeps_dpms_xavier_prototypes(text_dir):
    m = make_method(IDS, text_features=str(text_dir), **ABLATIONS["no_anchor"])
    torch.manual_seed(0)
    dpm = DPMMethod(DPMConfig(backbone=BackboneConfig(**BACKBONE)), IDS, NUM_CAMS)
    assert torch.equal(m.classifier.weight, dpm.classifier.weight)
    assert not torch.allclose(m.classifier.weight, m.text_prototypes)


def test_freeze_holds_the_prototypes_for_the_anchoring_period_only(text_dir):
    m = make_method(IDS, text_features=str(text_dir), anchor_epochs=2)
    start = m.classifier.weight.detach().clone()
    backbone = m.backbone.visual.conv1.weight.detach().clone()
    ctx = context(m)
    for epoch in (1, 2):
        ctx.epoch = epoch
        m.train_step(paired_batch(seed=epoch), ctx)
        assert torch.equal(m.classifier.weight, start), epoch
    assert not torch.equal(m.backbone.visual.conv1.weight, backbone)  # the rest trained meanwhile
    assert m.classifier.weight.requires_grad
    ctx.epoch = 3
    m.train_step(paired_batch(seed=3), ctx)
    assert not torch.equal(m.classifier.weight, start)


def test_anchor_loss_mode_weights_and_releases(text_dir):
    m = make_method(IDS, text_features=str(text_dir), anchor_mode="loss", anchor_init=False, anchor_epochs=4,
                    anchor_weight=2.0)
    batch = paired_batch()
    m.train_epoch = 2  # λ = 2 · (1 − 1/4)
    terms = m.losses(batch)
    expected = 1.5 * anchor_loss(m.classifier.weight, m.text_prototypes)
    assert terms["anchor"].item() == pytest.approx(expected.item()) and expected.item() > 0.1
    ctx = context(m, epoch=4)
    assert m.train_step(batch, ctx)["anchor_weight"] == pytest.approx(0.5)
    m.train_epoch = 5
    assert "anchor" not in m.losses(batch)
    # with the text init, W is not frozen in loss mode: it moves from the first step
    m2 = make_method(IDS, text_features=str(text_dir), anchor_mode="loss")
    start = m2.classifier.weight.detach().clone()
    m2.train_step(batch, context(m2))
    assert not torch.equal(m2.classifier.weight, start)


def test_training_an_anchoring_without_text_features_is_refused():
    m = make_method(IDS)
    with pytest.raises(OccreidError, match="text features"):
        m.train_step(paired_batch(), context(m))
    m = make_method(IDS, **ABLATIONS["no_anchor"])  # without anchoring no text is needed
    assert m.train_step(paired_batch(), context(m))["loss"] > 0


# -------------------------------------------------------------------------------------- mask-guided terms
def test_masked_triplet_uses_the_mask_and_equals_dpms_at_init(text_dir):
    batch = paired_batch()
    m = make_method(IDS, text_features=str(text_dir))
    plain_m = make_method(IDS, text_features=str(text_dir), masked_triplet=False)
    # the mask generator starts at 0.5 everywhere: the masked triplet is then DPM's triplet
    assert m.losses(batch)["triplet"].item() == pytest.approx(plain_m.losses(batch)["triplet"].item(), rel=1e-5)
    for mm in (m, plain_m):
        torch.nn.init.normal_(mm.mask_generator.fc.bias, std=3.0, generator=torch.Generator().manual_seed(0))
    out = m.backbone(batch["image"], batch["camid"])
    mask = m.compute_mask(out)
    assert mask.std() > 0.1
    want = masked_batch_hard_triplet(out.cls, batch["pid"], mask)
    assert m.losses(batch)["triplet"].item() == pytest.approx(want.item(), rel=1e-5)
    want_plain = batch_hard_triplet(out.cls, batch["pid"], None)
    assert plain_m.losses(batch)["triplet"].item() == pytest.approx(want_plain.item(), rel=1e-5)
    assert abs(want.item() - plain_m.losses(batch)["triplet"].item()) > 1e-4


@pytest.mark.parametrize("stop_grad", [True, False])
def test_consistency_ties_each_view_to_its_source(text_dir, stop_grad):
    m = make_method(IDS, text_features=str(text_dir), alpha=0.5, consistency_stop_grad=stop_grad)
    torch.nn.init.normal_(m.mask_generator.fc.bias, std=3.0, generator=torch.Generator().manual_seed(1))
    batch = paired_batch()
    batch["image"].requires_grad_(True)
    term = m.losses(batch)["consistency"]
    out = m.backbone(batch["image"], batch["camid"])
    mask = m.compute_mask(out)
    src, view = [0, 3, 6, 9], [2, 5, 8, 11]  # paired_batch: K = 2 images then the view of the first
    want = 0.5 * masked_consistency(out.cls[view], out.cls[src], mask[view])
    assert term.item() == pytest.approx(want.item(), rel=1e-5) and term.item() > 0
    grad = torch.autograd.grad(term, batch["image"])[0].flatten(1).abs().sum(1)
    assert (grad[view] > 0).all()
    assert (grad[src] == 0).all() if stop_grad else (grad[src] > 0).all()
    others = [i for i in range(len(grad)) if i not in src + view]
    assert (grad[others] == 0).all()


@pytest.mark.parametrize("mask_grad", [False, True])
def test_metric_losses_train_the_mask_only_when_asked(text_dir, mask_grad):
    m = make_method(IDS, text_features=str(text_dir), metric_mask_grad=mask_grad)
    torch.nn.init.normal_(m.mask_generator.fc.weight, std=0.1, generator=torch.Generator().manual_seed(2))
    terms = m.losses(paired_batch())
    params = list(m.mask_generator.parameters())
    grads = torch.autograd.grad(terms["triplet"] + terms["consistency"], params, allow_unused=True)
    touched = any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    assert touched == mask_grad


def test_ablations_remove_their_terms(text_dir):
    batch = paired_batch()
    full = make_method(IDS, text_features=str(text_dir))
    assert set(full.losses(batch)) == {"id", "mask_id", "hem", "triplet", "consistency"}
    no_cons = make_method(IDS, text_features=str(text_dir), **ABLATIONS["no_consistency"])
    assert "consistency" not in no_cons.losses(batch)
    no_mg = make_method(IDS, text_features=str(text_dir), **ABLATIONS["no_mask_guided"])
    torch.nn.init.normal_(no_mg.mask_generator.fc.bias, std=3.0)
    terms = no_mg.losses(batch)
    assert "consistency" not in terms
    out = no_mg.backbone(batch["image"], batch["camid"])
    assert terms["triplet"].item() == pytest.approx(batch_hard_triplet(out.cls, batch["pid"], None).item(), rel=1e-5)


def test_dpm_on_clip_is_dpm(text_dir):
    """Every DPM++ part off: the same losses and update as DPM itself on the same CLIP backbone."""
    m = make_method(IDS, text_features=str(text_dir), **ABLATIONS["dpm_on_clip"])
    assert m.train_data([], None, TrainConfig(), 0) is None  # the engine's plain P×K batches
    torch.manual_seed(0)
    dpm = DPMMethod(DPMConfig(backbone=BackboneConfig(**BACKBONE)), IDS, NUM_CAMS)
    batch = plain(paired_batch())
    got, want = m.losses(batch), dpm.losses(batch)
    assert set(got) == set(want)
    for k in want:
        assert got[k].item() == pytest.approx(want[k].item(), rel=1e-6), k
    a, b = m.train_step(batch, context(m)), dpm.train_step(batch, context(dpm))
    assert a == pytest.approx(b)


# ---------------------------------------------------------------------------------------- token transfer
def test_token_transfer_mixes_patch_embeddings(text_dir):
    m = make_method(IDS, text_features=str(text_dir)).eval()
    g = torch.Generator().manual_seed(0)
    images, partners = torch.randn(3, 3, 64, 32, generator=g), torch.randn(3, 3, 64, 32, generator=g)
    masks = torch.ones(3, 4, 2, dtype=torch.bool)
    masks[0] = False  # item 0: nothing of i is kept → the partner's image
    masks[1, :, 1] = False  # item 1: a half mask
    batch = {"image": images, "camid": torch.tensor([0, 1, 2]), "partner_image": partners, "partner_mask": masks,
             "roll": torch.zeros(3, dtype=torch.long), "is_transferred": torch.tensor([True, True, False])}
    with torch.no_grad():
        with m.token_transfer(batch):
            mixed = m.backbone(images, batch["camid"]).cls
        alone = m.backbone(images, batch["camid"]).cls
        partner = m.backbone(partners, batch["camid"]).cls
    torch.testing.assert_close(mixed[0], partner[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[2], alone[2])  # all-True mask, roll 0: unchanged
    assert not torch.allclose(mixed[1], alone[1], atol=1e-3) and not torch.allclose(mixed[1], partner[1], atol=1e-3)


def test_embed_gives_feature_and_mask(text_dir):
    m = make_method(IDS, text_features=str(text_dir)).eval()
    with torch.no_grad():
        emb = m.embed(torch.randn(2, 3, 64, 32), torch.tensor([0, 1]))
    assert emb.feat.shape == (2, 64) and emb.mask.shape == (2, 64)
    assert torch.equal(emb.mask, torch.full((2, 64), 0.5))
