"""The ``dpeformer`` method on a tiny random ViT: terms, views, the memory bank's life cycle, ablations, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from occreid.augment.views import TwoViewDataset
from data_fixtures import toy_person_records
from engine_fixtures import KillAt, Killed
from occreid.data.records import Record
from occreid.data.transforms import TransformConfig, train_transform_stages
from occreid.engine import TrainConfig, fit
from occreid.engine.context import TrainContext
from occreid.engine.optim import build_optimizer
from occreid.engine.seeding import seed_everything
from occreid.errors import OccreidError
from occreid.losses.memory_bank import identity_means
from occreid.methods import create_method
from occreid.methods.dpeformer import ABLATIONS, VARIANTS, DPEFormerMethod
from occreid.config import from_dict, merge

NUM_IDS, PER_ID, H, W = 4, 4, 64, 32  # vit_tiny_p8: 8x4 = 32 tokens of 96 channels
BASE = {"backbone": {"name": "vit_tiny_p8", "img_size": [H, W], "sie": False}, "selection": {"k_min": 12},
        "augment": {"mode": "random_erasing"}}


def make(seed: int = 0, **over) -> DPEFormerMethod:
    seed_everything(seed)
    return create_method("dpeformer", merge(BASE, over), NUM_IDS, 2)


def batch(seed: int = 0, views: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    pids = torch.arange(NUM_IDS).repeat_interleave(2)
    out = {"image": torch.randn(len(pids), 3, H, W, generator=g), "pid": pids, "camid": torch.arange(len(pids)) % 2}
    if views == 2:
        out["image_aug"] = torch.randn(len(pids), 3, H, W, generator=g)
    return out


def ready(method: DPEFormerMethod) -> DPEFormerMethod:
    """Banks initialised from random features (the engine does it with real ones, see the fit tests)."""
    for bank in (method.memory, method.memory_final):
        if bank is not None:
            bank.initialize(torch.randn(NUM_IDS, bank.bank.shape[1]), torch.arange(NUM_IDS))
    return method


def context(method, lr: float = 1e-3) -> TrainContext:
    cfg = from_dict(TrainConfig, {"optimizer": {"name": "adam", "lr": lr}})
    return TrainContext(device=torch.device("cpu"),
                        optimizers={s.name: build_optimizer(s) for s in method.optimizers(cfg)})


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[Record]:
    """4 identities x 4 images, each id its own colours and a bright band at its own height."""
    return toy_person_records(tmp_path_factory.mktemp("toy"), NUM_IDS, PER_ID, H, W, band_step=10)


def train_config(**over) -> TrainConfig:
    base = {"epochs": 2, "ids_per_batch": 2, "images_per_id": 2, "log_period": 100, "checkpoint_period": 1,
            "optimizer": {"name": "adam", "lr": 1e-3}, "scheduler": {"warmup_epochs": 1},
            "transforms": {"size": [H, W], "pad": 2, "random_erasing_p": 0.5}}
    return from_dict(TrainConfig, merge(base, over))


def test_terms_and_descriptor():
    m = ready(make())
    terms = m.losses(batch())
    assert set(terms) == {"id_global", "id_pooled", "id_parts", "id_final", "contrast"}
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    m.eval()
    with torch.no_grad():
        emb = m.embed(batch()["image"][:3], torch.tensor([0, 1, 0]))
        f = m.view_features(*m.backbone_features(batch()["image"][:3], None))
    assert emb.mask is None and emb.feat.shape == (3, 4 * 96)  # P = 4 blended parts concatenated (ViT-B: 3072)
    assert torch.equal(emb.feat, f.parts.flatten(1))  # before the BN (paper Eq. 12)
    m.cfg.neck_feat = "after"
    with torch.no_grad():
        assert torch.equal(m.embed(batch()["image"][:3]).feat, f.parts_bn.flatten(1))


def test_one_view_without_augmentation_and_aug_weight():
    m = ready(make(augment={"mode": "none"}))
    one = m.losses(batch(views=1))
    m2 = ready(make(memory={"aug_weight": 0.0}))
    m2.memory.bank.copy_(m.memory.bank)
    two = m2.losses({**batch(views=1), "image_aug": batch(views=1)["image"]})  # the same images twice
    # BN batch statistics are per view, so the clean view's terms are the one-view terms; the copy adds
    # its ID terms again but, with aug_weight 0, no contrastive term
    assert torch.allclose(two["contrast"], one["contrast"], atol=1e-6)
    assert torch.allclose(two["id_global"], 2 * one["id_global"], atol=1e-5)


def test_only_clean_views_update_the_bank():
    m = ready(make())
    before = m.memory.bank.clone()
    b = batch()
    m.losses(b)
    assert len(m._pending) == 1 and m._pending[0][0] is m.memory  # the occluded view does not update (paper)
    queued = m._pending[0][1].clone()
    m.train_step(b, context(m))
    expected = before.clone()
    for f, y in zip(queued, b["pid"].tolist()):
        expected[y] = 0.2 * expected[y] + 0.8 * f
    assert torch.allclose(m.memory.bank, expected, atol=1e-6) and m._pending == []
    both = ready(make(memory={"aug_updates": True}))
    both.losses(b)
    assert len(both._pending) == 2


def test_bank_must_be_initialised():
    with pytest.raises(OccreidError, match="never initialised"):
        make().losses(batch())


@pytest.mark.parametrize("name", sorted(ABLATIONS) + sorted(VARIANTS))
def test_every_ablation_and_variant_trains_a_step(name):
    over = {**ABLATIONS, **VARIANTS}[name]
    if name == "fixed_selection":
        over = merge(over, {"selection": {"fixed_k": 12}})
    m = ready(make(**merge({"selection": {"k_min": 12}}, over)))
    views = 1 if m.cfg.augment.mode == "none" else 2
    logs = m.train_step(batch(views=views), context(m))
    assert np.isfinite(logs["loss"])
    assert ("contrast" in logs) == m.cfg.memory_bank and ("contrast_final" in logs) == (name == "contrast_two")
    m.eval()
    with torch.no_grad():
        f = m.view_features(*m.backbone_features(batch()["image"], None))
    if not m.cfg.dpsm and not m.cfg.fbm:
        assert torch.equal(f.parts, f.pooled)  # no selection, no blending: the parts are the pooled stripes


def test_reference_code_variant_uses_the_first_patch_as_global_feature():
    m = ready(make(**VARIANTS["reference_code"]))
    images = batch()["image"]
    out = m.backbone(images, None)
    g, tokens = m.backbone_features(images, None)
    assert torch.equal(g, out.tokens[:, 0]) and not hasattr(m, "global_neck")


def test_before_training_sets_identity_means(records):
    m = make(memory={"after_fbm": True})
    m.before_training(records, train_config())
    assert bool(m.memory.ready) and bool(m.memory_final.ready) and m.training
    m.eval()
    from occreid.data.loader import read_image
    from occreid.data.transforms import build_test_transform

    t = build_test_transform(train_config().transforms)
    with torch.no_grad():
        images = torch.stack([t(read_image(r.path)) for r in records])
        f = m.view_features(*m.backbone_features(images, None))
    labels = torch.tensor([r.pid for r in records])
    assert torch.allclose(m.memory.bank, identity_means(f.pooled.flatten(1), labels, NUM_IDS), atol=1e-5)
    assert torch.allclose(m.memory_final.bank, identity_means(f.parts.flatten(1), labels, NUM_IDS), atol=1e-5)


def test_training_is_deterministic_and_resumes_with_its_bank(records, tmp_path):
    cfg = train_config()
    straight = make()
    fit(straight, records, cfg, tmp_path / "a")
    again = make()
    fit(again, records, cfg, tmp_path / "b")
    with pytest.raises(Killed):
        fit(make(), records, cfg, tmp_path / "c", callbacks=[KillAt(2)])
    resumed = make(seed=7)  # another init, and before_training is not run: everything comes from epoch 1's checkpoint
    fit(resumed, records, cfg, tmp_path / "c")
    for name, value in straight.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
        assert torch.equal(value, resumed.state_dict()[name]), name
    fresh = make()
    fresh.before_training(records, cfg)
    assert not torch.equal(straight.memory.bank, fresh.memory.bank)  # the bank moved during training


def test_two_views_share_the_geometry_and_the_label(records):
    """The occluded view is the clean view plus the occluder: equal elsewhere; the label is the record's."""
    def red_square(img: Image.Image) -> Image.Image:
        out = img.copy()
        out.paste((255, 0, 0), (0, 0, 16, 20))
        return out

    geometric, to_tensor, erasing = train_transform_stages(TransformConfig(size=[H, W], pad=4, flip_p=0.5,
                                                                           random_erasing_p=0.0))
    data = TwoViewDataset(records, geometric, to_tensor, erasing, occlude=red_square, p=1.0)
    torch.manual_seed(0)
    for i in range(6):
        item = data[i]
        assert item["pid"] == records[i].pid and item["camid"] == records[i].camid and item["occluded"]
        diff = (item["image"] != item["image_aug"]).any(0)
        assert diff[20:].sum() == 0 and diff[:, 16:].sum() == 0 and diff[:20, :16].all()
    same = TwoViewDataset(records, geometric, to_tensor, erasing, occlude=red_square, p=0.0)[0]
    assert torch.equal(same["image"], same["image_aug"]) and not same["occluded"]


def test_random_erasing_view_and_train_data(records):
    m = make()
    dataset, sampler = m.train_data(records, None, train_config(), seed=0)
    sampler.set_epoch(1)
    first = next(iter(sampler))
    assert len(first) == 4
    torch.manual_seed(0)
    item = dataset[first[0]]
    changed = (item["image"] != item["image_aug"]).any(0)
    assert 0.04 * H * W <= int(changed.sum()) <= 0.41 * H * W  # one box of 5-40 % of the image (the code's)
    assert make(augment={"mode": "none"}).train_data(records, None, train_config(), seed=0) is None


@pytest.mark.parametrize("mode", ["random_erasing", "sam"])
def test_two_views_from_the_decoded_image_cache_are_the_files_views(records, library, mode):
    """train.loader.cache on: the split is decoded once at the training size (here a real resize, 64x32 files to
    48x24), and every item of an epoch, both views and the occlusion flag, equals the uncached dataset's."""
    over = {"augment": {"mode": mode}, "selection": {"k_min": 8}}
    if mode == "sam":
        over["occluders"] = library
    m = make(**over, backbone={"img_size": [48, 24]})
    items = {}
    for cache in ("off", "on"):
        cfg = train_config(transforms={"size": [48, 24]}, loader={"cache": cache})
        dataset, _ = m.train_data(records, None, cfg, seed=0)
        assert (dataset.images is not None) == (cache == "on")
        seed_everything(0)  # torch, random (timm's erasing) and numpy
        items[cache] = [dataset[i] for i in range(len(records))]
    for off, on in zip(items["off"], items["on"]):
        assert off["occluded"] == on["occluded"] and off["pid"] == on["pid"]
        assert torch.equal(off["image"], on["image"]) and torch.equal(off["image_aug"], on["image_aug"])


def test_config_errors():
    with pytest.raises(OccreidError, match="k_min = 40 exceeds the backbone's 32 patch tokens"):
        make(selection={"k_min": 40})
    with pytest.raises(OccreidError, match="augment.mode"):
        make(augment={"mode": "sam_paste"})


@pytest.fixture
def library(tmp_path):
    """Two opaque library objects: a wide red one and a tall blue one (the occluders stage's format)."""
    from occreid.occluders import write_library

    def solid(w: int, h: int, colour) -> Image.Image:
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., :3], rgba[..., 3] = colour, 255
        rgba[0, 0, 3] = 0  # one transparent corner pixel: the mask is not the box
        return Image.fromarray(rgba, "RGBA")

    meta = {"source": "test", "bbox": [0, 0, 0, 0], "area": 0, "aspect": 0.0}
    write_library(tmp_path / "lib", [(solid(12, 6, (250, 0, 0)), meta), (solid(3, 12, (0, 0, 250)), meta)], build={})
    return str(tmp_path / "lib")


@pytest.mark.parametrize("mode", ["sam", "cut_paste"])
def test_pasted_view_keeps_the_label_and_covers_an_image_edge(records, library, mode):
    m = make(augment={"mode": mode}, occluders=library)
    cfg = train_config(transforms={"random_erasing_p": 0.0})
    dataset, _ = m.train_data(records, None, cfg, seed=0)
    torch.manual_seed(1)
    for i in range(8):
        item = dataset[i]
        assert item["pid"] == records[i].pid and item["camid"] == records[i].camid and item["occluded"]
        changed = (item["image"] != item["image_aug"]).any(0)
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        # Algorithm 1: the box is 1/2-3/4 of the image and spans its full width or height, at an edge
        area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert 0.45 * H * W <= int(area) <= 0.78 * H * W
        assert rows.min() == 0 or cols.min() == 0
    assert dataset.occlude.cfg.shape == ("box" if mode == "cut_paste" else "mask")  # Cut&Paste: whole boxes


def test_paste_needs_the_library():
    with pytest.raises(OccreidError, match="occluders is not set"):
        make(augment={"mode": "sam"}).train_data([], None, train_config(), seed=0)
    with pytest.raises(OccreidError, match="use augment.mode cut_paste"):
        make(augment={"mode": "sam", "paste": {"shape": "box"}})
