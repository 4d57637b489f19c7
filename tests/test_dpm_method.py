"""The ``dpm`` method on a tiny random ViT: losses, embedding, optimisers, the two-step update, training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from occreid.engine.config import OptimizerConfig, TrainConfig
from occreid.engine.context import TrainContext
from occreid.engine.optim import build_optimizer
from occreid.errors import OccreidError
from occreid.methods.dpm import ABLATIONS, MASK_PREFIX, DPMConfig, DPMMethod, frozen
from occreid.models.factory import BackboneConfig

NUM_CLASSES, NUM_CAMS, IMG = 4, 2, [48, 32]  # vit_tiny: D = 96, 4 heads, 4 blocks; grid 3x2


def make(**overrides) -> DPMMethod:
    torch.manual_seed(0)
    cfg = DPMConfig(backbone=BackboneConfig(name="vit_tiny", img_size=IMG), **overrides)
    return DPMMethod(cfg, NUM_CLASSES, NUM_CAMS)


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pids = torch.arange(NUM_CLASSES).repeat_interleave(2)  # P = 4 ids x K = 2
    return {
        "image": torch.randn(len(pids), 3, *IMG, generator=g),
        "pid": pids,
        "camid": torch.arange(len(pids)) % NUM_CAMS,
        "index": torch.arange(len(pids)),
    }


def context(method: DPMMethod, lr: float = 0.008) -> TrainContext:
    train_cfg = TrainConfig(optimizer=OptimizerConfig(lr=lr))
    specs = method.optimizers(train_cfg)
    return TrainContext(device=torch.device("cpu"), optimizers={s.name: build_optimizer(s) for s in specs})


def snapshot(method: DPMMethod) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in method.named_parameters()}


def changed(before: dict, after: dict) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


def test_full_model_terms_and_embedding():
    m = make()
    terms = m.losses(batch())
    assert set(terms) == {"id", "mask_id", "hem", "triplet"}
    assert all(torch.isfinite(t) and t.ndim == 0 for t in terms.values())
    m.eval()
    with torch.no_grad():
        emb = m.embed(batch()["image"][:3], torch.tensor([0, 1, 0]))
    assert emb.feat.shape == (3, 96) and emb.mask.shape == (3, 96)
    assert torch.equal(emb.mask, torch.full((3, 96), 0.5))  # zero-initialised head
    with torch.no_grad():
        one = m.embed(batch()["image"][:1], torch.tensor([1]))
    assert one.mask.shape == (1, 96)


def test_weights_scale_their_terms():
    b = batch()
    full = make().losses(b)
    half = make(w_cls=0.25, w_mask=0.25, w_hem=0.05, w_triplet=0.5).losses(b)
    for k in full:
        assert half[k].item() == pytest.approx(full[k].item() / 2, rel=1e-5)


def test_hierarchy_switch_sets_the_generator_input_width():
    assert make().mask_generator.body[0][0].in_channels == 4 * 96
    m = make(hierarchy=False)
    assert m.mask_generator.body[0][0].in_channels == 96
    assert torch.isfinite(m.losses(batch())["mask_id"])
    out = m.backbone(batch()["image"], batch()["camid"])
    assert len(out.taps) == 4 and m.compute_mask(out).shape == (8, 96)  # deepest tap only


def test_ablation_rows_build_the_parts_they_name():
    for row, overrides in ABLATIONS.items():
        m = make(**overrides)
        terms = m.losses(batch())
        cfg = m.cfg
        assert (m.mask_generator is not None) == cfg.mask, row
        assert ("mask_id" in terms) == cfg.mask, row
        assert ("hem" in terms) == cfg.head_enrich, row
        assert all(torch.isfinite(t) for t in terms.values()), row
    base = make(**ABLATIONS["t3_baseline"])
    base.eval()
    with torch.no_grad():
        assert base.embed(batch()["image"][:2], torch.tensor([0, 1])).mask is None
    assert [s.name for s in base.optimizers(TrainConfig())] == ["main"]


def test_masked_softmax_branch_is_plain_softmax_of_the_masked_prototypes():
    # with the initial mask 0.5 the masked softmax logits are exactly half the plain ones
    m = make(mask_loss="softmax", head_enrich=False, w_triplet=0.0, w_cls=1.0, w_mask=1.0)
    b = batch()
    terms = m.losses(b)
    out = m.backbone(b["image"], b["camid"])
    bn = m.neck.bn(out.cls)
    expected = torch.nn.functional.cross_entropy(0.5 * m.classifier.plain_logits(bn), b["pid"])
    assert terms["mask_id"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_optimisers_split_the_parameters_and_say_which_is_scheduled():
    m = make()
    specs = {s.name: s for s in m.optimizers(TrainConfig())}
    assert set(specs) == {"main", "mask"}
    ids = {name: {id(p) for g in s.param_groups for p in g["params"]} for name, s in specs.items()}
    mask_ids = {id(p) for p in m.mask_generator.parameters()}
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert ids["mask"] == mask_ids
    assert ids["main"] == trainable - mask_ids
    assert specs["main"].scheduled and specs["mask"].scheduled
    assert not {s.name: s for s in make(unscheduled_mask_lr=True).optimizers(TrainConfig())}["mask"].scheduled
    assert [s.name for s in make(two_step=False).optimizers(TrainConfig())] == ["main"]


class RecordingContext(TrainContext):
    """Snapshots the parameters around every optimiser step."""

    def __init__(self, method, **kw):
        super().__init__(**kw)
        self.method = method
        self.log: list[tuple[str, dict, dict]] = []

    def step(self, which):
        before = snapshot(self.method)
        super().step(which)
        self.log.append((which, before, snapshot(self.method)))


def test_two_step_update_moves_each_part_only_in_its_own_step():
    m = make()
    with torch.no_grad():  # a non-zero head so the conv body gets gradient in step B too
        m.mask_generator.fc.weight.normal_(std=0.1)
    ctx = context(m)
    ctx = RecordingContext(m, device=ctx.device, optimizers=ctx.optimizers)
    start = snapshot(m)
    logs = m.train_step(batch(), ctx)
    assert [w for w, _, _ in ctx.log] == ["main", "mask"]
    (_, a0, a1), (_, b0, b1) = ctx.log
    assert not changed(start, a0)  # nothing moves before step A
    hmg = {n for n in start if n.startswith(MASK_PREFIX)}
    main = set(start) - hmg
    moved_a, moved_b = changed(a0, a1), changed(b0, b1)
    assert moved_a and moved_a <= main
    assert moved_b == hmg
    assert not changed(a1, b0)  # nothing between the steps
    assert "backbone.vit.blocks.0.attn.qkv.weight" in moved_a and "classifier.weight" in moved_a
    assert {"loss", "id", "mask_id", "hem", "triplet", "loss_mask_step"} <= set(logs)
    assert all(p.requires_grad for n, p in m.named_parameters() if n != "neck.bn.bias")  # flags restored


def test_step_b_gradient_with_frozen_backbone_equals_the_full_backward():
    # Route 1: the method's step B (main parameters frozen). Route 2: the reference's plain full backward.
    m = make()
    with torch.no_grad():
        m.mask_generator.fc.weight.normal_(std=0.1)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    b = batch(3)

    def hmg_grads(freeze: bool) -> list[torch.Tensor]:
        m.load_state_dict(state)
        m.zero_grad(set_to_none=True)
        params = [p for _, p in m.main_named_parameters()] if freeze else []
        with frozen(params):
            torch.manual_seed(5)
            total = sum(m.losses(b).values())
            total.backward()
        return [p.grad.clone() for p in m.mask_generator.parameters()]

    for g1, g2 in zip(hmg_grads(True), hmg_grads(False)):
        assert torch.allclose(g1, g2, atol=1e-6, rtol=1e-5)


def test_single_step_variant_trains_everything_at_once():
    m = make(two_step=False)
    with torch.no_grad():
        m.mask_generator.fc.weight.normal_(std=0.1)
    ctx = context(m)
    start = snapshot(m)
    m.train_step(batch(), ctx)
    moved = changed(start, snapshot(m))
    assert any(n.startswith(MASK_PREFIX) for n in moved) and "classifier.weight" in moved


def test_trains_a_few_iterations_on_random_data():
    m = make()
    m.train()
    ctx = context(m)
    b = batch(1)
    losses = [m.train_step(b, ctx)["loss"] for _ in range(5)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]
    m.eval()
    with torch.no_grad():
        mask = m.embed(b["image"], b["camid"]).mask
    assert not torch.allclose(mask, torch.full_like(mask, 0.5))  # the mask generator learned something
    assert bool(((mask > 0) & (mask < 1)).all())


def test_config_validation_and_missing_taps():
    with pytest.raises(OccreidError, match="w_hem"):
        DPMConfig(w_hem=-1.0)
    with pytest.raises(OccreidError, match="mask_loss"):
        DPMConfig(mask_loss="cosface")
    cfg = DPMConfig(backbone=BackboneConfig(name="vit_tiny", img_size=IMG, taps=[]))
    with pytest.raises(OccreidError, match="tapped blocks"):
        DPMMethod(cfg, NUM_CLASSES, NUM_CAMS)
    DPMMethod(dataclasses.replace(cfg, mask=False, head_enrich=False), NUM_CLASSES, NUM_CAMS)


def test_runs_on_the_clip_backbone_too():
    import importlib

    from occreid.models.factory import BACKBONES

    for module in ("occreid.models.clip", "occreid.models.clip_backbone"):  # registers the clip family
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    if "clip_tiny" not in BACKBONES:
        pytest.skip("clip_tiny backbone not available")
    torch.manual_seed(0)
    bb = BackboneConfig(name="clip_tiny", img_size=IMG, sie_coef=1.0, sie_mode="cls")
    m = DPMMethod(DPMConfig(backbone=bb), NUM_CLASSES, NUM_CAMS)
    start = snapshot(m)
    logs = m.train_step(batch(), context(m))
    assert {"id", "mask_id", "hem", "triplet"} <= set(logs)
    assert any(n.startswith(MASK_PREFIX) for n in changed(start, snapshot(m)))
    m.eval()
    with torch.no_grad():
        emb = m.embed(batch()["image"][:2], torch.tensor([0, 1]))
    assert emb.mask.shape == emb.feat.shape


def test_built_by_name_from_a_params_mapping():
    from occreid.methods import create_method

    params = {"backbone": {"name": "vit_tiny", "img_size": IMG}, "hierarchy": False, "mask_loss": "softmax"}
    m = create_method("dpm", params, NUM_CLASSES, NUM_CAMS)
    assert isinstance(m, DPMMethod) and m.cfg.mask_loss == "softmax"
    assert m.mask_generator.num_taps == 1
    with pytest.raises(OccreidError, match="hierachy"):
        create_method("dpm", {"hierachy": False}, NUM_CLASSES, NUM_CAMS)
