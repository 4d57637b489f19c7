"""Per-epoch seeding of DataLoader workers that also holds for persistent workers.

Augmentation draws come from the global ``torch`` / ``random`` / ``numpy`` generators of the process that
runs the transform. Without workers that is the training process, whose generators the engine seeds and
checkpoints. With workers, torch seeds each worker once, when it starts, from the loader's generator
(which the engine re-seeds every epoch). Workers that persist across epochs (``persistent_workers``) are
never re-seeded, so epoch e's augmentations would depend on every earlier epoch, and a run resumed at epoch
e would not replay them.

:func:`epoch_seeded` fixes this for any (dataset, batch sampler) pair: the sampler tags each item with the
epoch's seed (a hash of the loader generator's seed, which the engine sets per epoch; nothing is drawn
from the generator, so the tag is the same whether the workers persist or not), and the dataset, in a
worker, re-seeds the three generators from (epoch seed, worker id) when it sees a new epoch's first item.
Every worker count thus gives the same batches with or without persistent workers, and a resumed run
replays them.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info


def _seed_from(*keys: int) -> int:
    state = np.random.SeedSequence(list(keys)).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


class EpochTaggedSampler(Sampler):
    """A batch sampler whose items are ``(epoch seed, item)``; everything else is the wrapped sampler's
    (``set_epoch``, ``state_dict``, ``load_state_dict``, ``len`` and any attribute)."""

    def __init__(self, sampler: Sampler, generator: torch.Generator):
        self.sampler = sampler
        self.generator = generator

    def __iter__(self) -> Iterator[list[tuple[int, Any]]]:
        tag = _seed_from(self.generator.initial_seed(), 0x5EED)
        for batch in self.sampler:
            yield [(tag, item) for item in batch]

    def __len__(self) -> int:
        return len(self.sampler)

    def __getattr__(self, name: str) -> Any:  # set_epoch, state_dict, load_state_dict, base, p, k, ...
        if name in ("sampler", "generator"):
            raise AttributeError(name)
        return getattr(self.sampler, name)


class EpochSeededDataset(Dataset):
    """Takes ``(epoch seed, item)``; in a worker, re-seeds torch, random and numpy from (epoch seed, worker id)
    before the first item of each epoch, then returns ``dataset[item]`` (or the batch, via ``__getitems__``)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._epoch_seed: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _enter(self, tag: int) -> None:
        worker = get_worker_info()
        if worker is None or tag == self._epoch_seed:
            return
        self._epoch_seed = tag
        seed = _seed_from(tag, worker.id)
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)

    def __getitem__(self, tagged: tuple[int, Any]) -> Any:
        tag, item = tagged
        self._enter(tag)
        return self.dataset[item]

    def __getitems__(self, tagged: list[tuple[int, Any]]) -> list:
        self._enter(tagged[0][0])
        items = [item for _, item in tagged]
        batched = getattr(self.dataset, "__getitems__", None)
        return batched(items) if batched is not None else [self.dataset[i] for i in items]


def epoch_seeded(dataset: Dataset, sampler: Sampler, generator: torch.Generator) -> tuple[Dataset, Sampler]:
    """(dataset, batch sampler) wrapped so that workers are seeded per epoch (module docstring)."""
    return EpochSeededDataset(dataset), EpochTaggedSampler(sampler, generator)
