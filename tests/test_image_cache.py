"""The fast input path gives the slow path's tensors: the decoded-image cache, the batched augmentation (against
torchvision's per-image pipeline, draw for draw), the paired DPM++ dataset on both paths, persistent workers
(seeded per epoch), and a whole training run with and without the cache."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from occreid.augment.config import SptConfig, TransferConfig
from occreid.augment.oiou import binarise
from occreid.augment.pairing import OcclusionPairSampler, PairedTransferDataset
from occreid.augment.partners import SptSets, build_partner_table
from occreid.data.batch_augment import BatchTrainTransform, batch_train_transform
from occreid.data.cache import DecodedImages, decode_train_images, decoded_size_mb, train_images
from occreid.data.datasets import create_dataset
from occreid.data.loader import ImageDataset, LoaderConfig, build_train_loader, read_image, train_dataloader
from occreid.data.records import Record
from occreid.data.sampler import PKBatchSampler
from occreid.data.transforms import TransformConfig, build_test_transform, build_train_transform
from occreid.engine import TrainConfig, fit
from occreid.engine.seeding import seed_everything
from occreid.errors import OccreidError
from occreid.methods import create_method
from occreid.models.factory import BackboneConfig
from occreid.saliency import SaliencyConfig, compute_saliency
from occreid.saliency.config import ClassicalConfig
from occreid.saliency.store import load_rgb
from data_fixtures import noise_records
from saliency_fixtures import build_person_dataset
from stages.params import from_dict

H, W = 32, 16


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[Record]:
    """4 ids × 4 JPEGs at twice the training size (so the training resize is real work)."""
    return noise_records(tmp_path_factory.mktemp("cache"), 4, 4, 2 * H, 2 * W, seed=3, suffix=".jpg")


def per_image(cfg: TransformConfig, images: list[Image.Image], seed: int) -> tuple[torch.Tensor, tuple]:
    seed_everything(seed)
    transform = build_train_transform(cfg)
    out = torch.stack([transform(img) for img in images])
    return out, (torch.rand(1).item(), random.random())  # where the generators were left


def batched(cfg: TransformConfig, images: list[Image.Image], seed: int) -> tuple[torch.Tensor, tuple]:
    seed_everything(seed)
    batch = torch.from_numpy(np.stack([np.asarray(img) for img in images])).permute(0, 3, 1, 2).contiguous()
    out = BatchTrainTransform(cfg)(batch)
    return out, (torch.rand(1).item(), random.random())


@pytest.mark.parametrize("over", [
    {},
    {"flip_p": 0.0},
    {"flip_p": 1.0, "pad": 0},
    {"pad": 5, "random_erasing_p": 1.0, "erasing_mode": "const", "mean": [0.1, 0.2, 0.3], "std": [0.3, 0.2, 0.1]},
    {"random_erasing_p": 0.0},
    {"erasing_mode": "rand", "pad": 1},
])
def test_batched_augmentation_equals_torchvision_per_image(over):
    cfg = TransformConfig(**{"size": [H, W], "pad": 3, **over})
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for _ in range(12)]
    for seed in (0, 1, 2):
        want, want_after = per_image(cfg, images, seed)
        got, got_after = batched(cfg, images, seed)
        assert torch.equal(got, want)
        assert got_after == want_after  # the same number of draws from both generators


def test_batched_augmentation_draws_vary_per_image():
    """Flip and crop are drawn per image: identical inputs come out different."""
    cfg = TransformConfig(size=[H, W], pad=3, random_erasing_p=0.0)
    image = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    seed_everything(4)
    out = BatchTrainTransform(cfg)(torch.from_numpy(np.stack([image] * 8)).permute(0, 3, 1, 2).contiguous())
    assert len({out[i].numpy().tobytes() for i in range(8)}) > 4


def test_batched_augmentation_refuses_what_it_cannot_do():
    assert batch_train_transform(TransformConfig(size=[H, W], color_jitter=[0.1, 0.1, 0.1, 0.1])) is None
    t = BatchTrainTransform(TransformConfig(size=[H, W]))
    with pytest.raises(ValueError, match="uint8"):
        t(torch.zeros(2, 3, H + 1, W, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        t(torch.zeros(2, 3, H, W))


def test_cache_holds_the_training_resize(records):
    cfg = TransformConfig(size=[H, W])
    images = DecodedImages(records, cfg, progress=False)
    assert images.array.shape == (len(records), H, W, 3) and images.array.dtype == np.uint8
    for i in (0, 7):
        want = np.asarray(read_image(records[i].path).resize((W, H), Image.BICUBIC))
        assert np.array_equal(images.array[i], want)
        assert np.array_equal(images.rgb(i, (H, W)), load_rgb(records[i].path, (H, W)))  # what DPM++ transfers
    assert images.rgb(0, (H // 2, W // 2)) is None  # another size: not cached
    bilinear = DecodedImages(records, TransformConfig(size=[H, W], interpolation="bilinear"), progress=False)
    assert bilinear.rgb(0, (H, W)) is None  # load_rgb resizes bicubic
    assert torch.equal(images.batch([3, 1]), torch.from_numpy(images.array[[3, 1]]).permute(0, 3, 1, 2))


@pytest.mark.parametrize("jitter", [None, [0.3, 0.3, 0.2, 0.1]])
def test_cached_dataset_items_equal_the_file_path(records, jitter):
    """Per-image transform on cached pixels (any config, colour jitter included) = on the files."""
    cfg = TransformConfig(size=[H, W], pad=2, color_jitter=jitter)
    transform = build_train_transform(cfg)
    cached = ImageDataset(records, transform, images=DecodedImages(records, cfg, progress=False))
    files = ImageDataset(records, transform)
    for index in (0, 5, 15):
        seed_everything(index)
        a = cached[index]
        seed_everything(index)
        b = files[index]
        assert torch.equal(a["image"], b["image"]) and (a["pid"], a["index"]) == (b["pid"], b["index"])


def _epochs(records, epochs=(1, 2), *, cache: bool, num_workers: int = 0, persistent: bool = False,
            jitter=None) -> list[torch.Tensor]:
    cfg = TransformConfig(size=[H, W], pad=2, color_jitter=jitter)
    options = LoaderConfig(cache="on" if cache else "off", persistent_workers=persistent)
    loader, sampler, gen = build_train_loader(records, build_train_transform(cfg), ids_per_batch=2, images_per_id=2,
                                              seed=5, num_workers=num_workers, options=options)
    seed_everything(5)
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        gen.manual_seed(100 + epoch)
        out.append(torch.cat([torch.cat([b["image"], b["index"].float().view(-1, 1, 1, 1).expand(-1, 3, H, 1)], -1)
                              for b in loader]))  # the epoch's images, each with its index as a last column
    return out


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_loader_epochs_equal_with_and_without_the_cache(records):
    plain = _epochs(records, cache=False)
    assert len(plain) == 2 and len(plain[0]) >= 12
    assert same(plain, _epochs(records, cache=True))
    jitter = [0.2, 0.2, 0.2, 0.05]  # per-image path on cached pixels
    assert same(_epochs(records, cache=False, jitter=jitter), _epochs(records, cache=True, jitter=jitter))


def test_persistent_workers_are_reseeded_every_epoch(records):
    """One worker, two epochs: persistent or not, cached or not, the same batches; each epoch its own draws;
    and epoch 2 alone (a resumed run) replays the second epoch."""
    runs = [_epochs(records, cache=c, num_workers=1, persistent=p) for c, p in ((False, False), (True, True))]
    assert same(*runs)
    first, second = runs[0]
    assert first.shape != second.shape or not torch.equal(first, second)
    resumed = _epochs(records, epochs=(2,), cache=True, num_workers=1, persistent=True)
    assert same([second], resumed)


def test_loader_options_reach_the_dataloader(records):
    ds = ImageDataset(records)
    smp = PKBatchSampler([r.pid for r in records], 2, 2)
    loader, sampler, _ = train_dataloader(ds, smp, seed=0, num_workers=2,
                                          options=LoaderConfig(prefetch_factor=3, pin_memory=False))
    assert loader.persistent_workers and loader.prefetch_factor == 3 and not loader.pin_memory
    assert len(sampler) == len(smp) and sampler.state_dict() == smp.state_dict()  # the wrapper delegates
    plain, _, _ = train_dataloader(ds, smp, seed=0, num_workers=0, pin_memory=True, options=LoaderConfig(prefetch_factor=3))
    assert plain.pin_memory and not plain.persistent_workers and plain.batch_sampler is smp


def test_cache_policy_and_loader_validation(records):
    cfg = TransformConfig(size=[H, W])
    mb = decoded_size_mb(len(records), (H, W))
    assert mb == pytest.approx(16 * H * W * 3 / 2**20)
    assert decode_train_images(records, cfg, LoaderConfig(cache="off")) is None
    assert decode_train_images(records, cfg, LoaderConfig(cache="auto", cache_max_mb=0)) is None  # does not fit
    assert decode_train_images(records, cfg, LoaderConfig(cache="on", cache_max_mb=0)) is not None
    jitter = build_train_transform(TransformConfig(size=[H, W], color_jitter=[0.1, 0, 0, 0]))
    images, batch = train_images(records, jitter)
    assert images is not None and batch is None  # jitter: cached pixels, per-image transform
    assert train_images(records, build_test_transform(cfg), LoaderConfig(cache="on")) == (None, None)  # unknown ops
    with pytest.raises(OccreidError, match="prefetch_factor"):
        LoaderConfig(prefetch_factor=0)
    with pytest.raises(OccreidError, match="cache_max_mb"):
        LoaderConfig(cache_max_mb=-1)
    with pytest.raises(OccreidError, match="cache"):
        from_dict(TrainConfig, {"loader": {"cache": "maybe"}})


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    root = build_person_dataset(tmp_path_factory.mktemp("paired") / "ds", ids=4, per_id=4, size=(64, 32))
    train = create_dataset("synthocc", root).train
    sal = compute_saliency(train, root, SaliencyConfig(img_size=[H, W], grid=[8, 4],
                                                       classical=ClassicalConfig(method="contrast")),
                           BackboneConfig(), device="cpu")
    masks = binarise(sal.maps, 0.5)
    pids = np.array([r.pid for r in train])
    table = build_partner_table(masks, pids, SptConfig(alpha1=0.5, candidates=4))
    return train, SptSets(table, masks, sal.geometry, sal.paths, pids, {})


@pytest.mark.parametrize("mode,size", [("spt", (H, W)), ("cut_paste", (H, W)), ("random_erasing", (H, W)),
                                       ("spt", (2 * H, 2 * W))])  # last: views at another size than the cache
def test_paired_dataset_batches_equal_the_per_item_path(paired, mode, size):
    records, sets = paired
    cfg = TransformConfig(size=list(size), pad=2)
    transfer = TransferConfig(mode=mode, p=1.0, pairs_per_id=2)
    images, batch = train_images(records, build_train_transform(cfg), LoaderConfig(cache="on"))
    fast = PairedTransferDataset(records, build_train_transform(cfg), transfer, sets=sets, img_size=size,
                                 images=images, batch_transform=batch)
    slow = PairedTransferDataset(records, build_train_transform(cfg), transfer, sets=sets, img_size=size)
    smp = OcclusionPairSampler(PKBatchSampler([r.pid for r in records], 2, 2, seed=1), [r.pid for r in records],
                               transfer, sets.table)
    smp.set_epoch(1)
    for items in smp:
        seed_everything(7)
        a = fast.__getitems__(items)
        seed_everything(7)
        b = [slow[item] for item in items]
        assert sum(x["is_transferred"] for x in a) == 4
        for x, y in zip(a, b):
            assert torch.equal(x["image"], y["image"]) and {k: v for k, v in x.items() if k != "image"} == \
                {k: v for k, v in y.items() if k != "image"}


def test_training_with_and_without_the_cache_gives_the_same_weights(records, tmp_path):
    def train(cache: str) -> dict:
        seed_everything(0)
        method = create_method("vit", {"backbone": {"name": "vit_tiny_p8", "img_size": [H, W], "drop_path": 0.1}}, 4, 2)
        cfg = from_dict(TrainConfig, {"epochs": 2, "ids_per_batch": 2, "images_per_id": 2, "log_period": 100,
                                      "seed": 3, "transforms": {"size": [H, W], "pad": 2},
                                      "loader": {"cache": cache}})
        history = fit(method, records, cfg, tmp_path / cache, resume=False)
        return {"history": [{k: v for k, v in h.items() if k not in ("seconds", "images_per_s")} for h in history],
                "weights": method.state_dict()}

    on, off = train("on"), train("off")
    assert on["history"] == off["history"]
    assert on["weights"].keys() == off["weights"].keys()
    assert all(torch.equal(on["weights"][k], off["weights"][k]) for k in on["weights"])
