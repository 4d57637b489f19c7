"""Datasets and data loaders over :class:`~occreid.data.records.Record` lists.

Items are dicts ``{"image", "pid", "camid", "index"}`` so that methods and evaluation read fields by name
and a method needing more (e.g. saliency maps keyed by ``index``) can look them up without a new dataset
class. Loader randomness is explicit: the training loader draws batches from a seeded
:class:`~occreid.data.sampler.PKBatchSampler` and gives its workers seeds from a generator that the caller
re-seeds per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from occreid.data.records import Record
from occreid.data.sampler import PKBatchSampler
from occreid.errors import OccreidError

if TYPE_CHECKING:
    from occreid.data.cache import DecodedImages


@dataclass
class LoaderConfig:
    """How the training images reach the model (params key ``train.loader``); none of it changes the results.

    ``cache``: decode the training split once into memory (:mod:`occreid.data.cache`; ``auto``: when it fits
    in ``cache_max_mb``). The DataLoader options act only with ``train.num_workers`` > 0: workers that live
    across epochs (``persistent_workers``; re-seeded per epoch, :mod:`occreid.data.workers`), batches each
    worker prepares ahead (``prefetch_factor``; null: torch's 2) and page-locked batches for the copy to
    the GPU (``pin_memory``; null: when training on CUDA).
    """

    cache: Literal["auto", "on", "off"] = "auto"
    cache_max_mb: int = 512
    persistent_workers: bool = True
    prefetch_factor: int | None = None
    pin_memory: bool | None = None

    def __post_init__(self) -> None:
        if self.cache_max_mb < 0:
            raise OccreidError(f"train.loader.cache_max_mb must be >= 0, got {self.cache_max_mb}")
        if self.prefetch_factor is not None and self.prefetch_factor < 1:
            raise OccreidError(f"train.loader.prefetch_factor must be >= 1 or null, got {self.prefetch_factor}")


def read_image(path: str) -> Image.Image:
    """Open an image as RGB, with an error naming the file when it is missing or unreadable."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise OccreidError(f"cannot read image: {e}", path=path, fix="re-run the prepare_data stage") from None


class ImageDataset(Dataset):
    """Images of ``records`` passed through ``transform``; item ``index`` is the position in ``records``.

    With ``images`` (the decoded-image cache of these records) the pixels come from memory; with
    ``batch_transform`` too (:mod:`occreid.data.batch_augment`, the same augmentation as ``transform``)
    a batch is augmented at once (``__getitems__``, which torch's DataLoader calls with a batch sampler).
    Either way the items are the ones the per-image path gives.
    """

    def __init__(self, records: Sequence[Record], transform: Callable | None = None, *,
                 images: DecodedImages | None = None, batch_transform: Callable | None = None):
        self.records = list(records)
        self.transform = transform
        if images is not None and len(images) != len(self.records):
            raise ValueError(f"the image cache holds {len(images)} images for {len(self.records)} records")
        self.images = images
        self.batch_transform = batch_transform if images is not None else None

    def __len__(self) -> int:
        return len(self.records)

    def _item(self, index: int, image) -> dict:
        rec = self.records[index]
        return {"image": image, "pid": rec.pid, "camid": rec.camid, "index": index}

    def __getitem__(self, index: int) -> dict:
        img = self.images.pil(index) if self.images is not None else read_image(self.records[index].path)
        return self._item(index, self.transform(img) if self.transform is not None else img)

    def __getitems__(self, indices: list[int]) -> list[dict]:
        if self.batch_transform is None:
            return [self[i] for i in indices]
        images = self.batch_transform(self.images.batch(indices))
        return [self._item(i, image) for i, image in zip(indices, images)]


def train_dataloader(
    dataset: Dataset,
    batch_sampler: Sampler,
    *,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    options: LoaderConfig | None = None,
) -> tuple[DataLoader, Sampler, torch.Generator]:
    """The DataLoader of a training dataset and batch sampler, with the worker-seed generator (re-seed it per
    epoch) and the sampler to call ``set_epoch`` on. ``options`` (``train.loader``) may override ``pin_memory``
    and, with workers, keeps them alive across epochs (then seeded per epoch: :mod:`occreid.data.workers`)
    and sets their prefetch depth."""
    from occreid.data.workers import epoch_seeded

    options = options or LoaderConfig()
    generator = torch.Generator().manual_seed(seed)
    extra = {}
    if num_workers > 0:
        dataset, batch_sampler = epoch_seeded(dataset, batch_sampler, generator)
        extra["persistent_workers"] = options.persistent_workers
        if options.prefetch_factor is not None:
            extra["prefetch_factor"] = options.prefetch_factor
    pin = pin_memory if options.pin_memory is None else options.pin_memory
    loader = DataLoader(dataset, batch_sampler=batch_sampler, num_workers=num_workers, pin_memory=pin,
                        generator=generator, **extra)
    return loader, batch_sampler, generator


def build_train_loader(
    records: Sequence[Record],
    transform: Callable,
    *,
    ids_per_batch: int,
    images_per_id: int,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    shard: Callable | None = None,
    options: LoaderConfig | None = None,
) -> tuple[DataLoader, PKBatchSampler, torch.Generator]:
    """A P×K training loader, its sampler (call ``set_epoch``) and the worker-seed generator (re-seed per epoch).

    ``shard`` wraps the sampler (the engine's: this process's share of each batch, resumable mid-epoch).
    When ``transform`` is a training transform (:func:`~occreid.data.transforms.build_train_transform`) and
    ``options.cache`` says so, the split is decoded once into memory and batches are augmented at once
    (:func:`occreid.data.cache.train_images`; the same items). ``options``: :func:`train_dataloader`."""
    from occreid.data.cache import train_images

    sampler = PKBatchSampler([r.pid for r in records], ids_per_batch, images_per_id, seed=seed)
    if shard is not None:
        sampler = shard(sampler)
    images, batch_transform = train_images(records, transform, options)
    dataset = ImageDataset(records, transform, images=images, batch_transform=batch_transform)
    return train_dataloader(dataset, sampler, seed=seed, num_workers=num_workers, pin_memory=pin_memory,
                            options=options)


def build_test_loader(
    records: Sequence[Record], transform: Callable, *, batch_size: int = 256, num_workers: int = 0
) -> DataLoader:
    """Records in their given order, no shuffling (features line up with the records)."""
    return DataLoader(
        ImageDataset(records, transform), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
