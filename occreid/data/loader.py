"""Datasets and data loaders over :class:`~occreid.data.records.Record` lists.

Items are dicts ``{"image", "pid", "camid", "index"}`` so that methods and evaluation read fields by name
and a method needing more (e.g. saliency maps keyed by ``index``) can look them up without a new dataset
class. Loader randomness is explicit: the training loader draws batches from a seeded
:class:`~occreid.data.sampler.PKBatchSampler` and gives its workers seeds from a generator that the caller
re-seeds per epoch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from occreid.data.records import Record
from occreid.data.sampler import PKBatchSampler
from occreid.errors import OccreidError


def read_image(path: str) -> Image.Image:
    """Open an image as RGB, with an error naming the file when it is missing or unreadable."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise OccreidError(f"cannot read image: {e}", path=path, fix="re-run the prepare_data stage") from None


class ImageDataset(Dataset):
    """Images of ``records`` passed through ``transform``; item ``index`` is the position in ``records``."""

    def __init__(self, records: Sequence[Record], transform: Callable | None = None):
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        img = read_image(rec.path)
        return {
            "image": self.transform(img) if self.transform is not None else img,
            "pid": rec.pid,
            "camid": rec.camid,
            "index": index,
        }


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
) -> tuple[DataLoader, PKBatchSampler, torch.Generator]:
    """A P×K training loader, its sampler (call ``set_epoch``) and the worker-seed generator (re-seed per epoch).
    ``shard`` wraps the sampler (the engine's: this process's share of each batch, resumable mid-epoch)."""
    sampler = PKBatchSampler([r.pid for r in records], ids_per_batch, images_per_id, seed=seed)
    if shard is not None:
        sampler = shard(sampler)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        ImageDataset(records, transform),
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=generator,
    )
    return loader, sampler, generator


def build_test_loader(
    records: Sequence[Record], transform: Callable, *, batch_size: int = 256, num_workers: int = 0
) -> DataLoader:
    """Records in their given order, no shuffling (features line up with the records)."""
    return DataLoader(
        ImageDataset(records, transform), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
