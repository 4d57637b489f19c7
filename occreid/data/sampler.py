"""PK identity sampler: every batch holds P distinct identities with K images each.

Batch-hard triplet losses need positives and negatives inside each batch, so batches are formed by
identity, as in TransReID's ``RandomIdentitySampler`` (the sampler behind DPM and CLIP-ReID): each
identity's images are shuffled and cut into chunks of K (an identity with fewer than K images is drawn
K times with replacement; a trailing chunk shorter than K is dropped); then, while at least P identities
still have chunks, P of them are drawn without replacement and one chunk of each forms a batch. An epoch
therefore covers about ``number of images / (P*K)`` batches.

The plan of an epoch is a pure function of ``(seed, epoch)`` (its own ``numpy`` generator, untouched by
anything else), so resuming at epoch e replays exactly the batches an uninterrupted run would see.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from occreid.errors import OccreidError


class PKBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices, P identities × K images per list; use as ``batch_sampler``."""

    def __init__(self, pids: Sequence[int], ids_per_batch: int, images_per_id: int, seed: int = 0):
        if ids_per_batch < 1 or images_per_id < 1:
            raise OccreidError(f"P and K must be >= 1, got P={ids_per_batch}, K={images_per_id}")
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self.by_pid[int(pid)].append(index)
        if len(self.by_pid) < ids_per_batch:
            raise OccreidError(
                f"the training set has {len(self.by_pid)} identities, fewer than ids_per_batch={ids_per_batch}",
                fix="lower train.ids_per_batch or use a larger training set",
            )
        self.p = ids_per_batch
        self.k = images_per_id
        self.seed = seed
        self.epoch = 0
        self._plan: tuple[int, list[list[int]]] | None = None  # (epoch, batches) cache

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "p": self.p, "k": self.k}

    def load_state_dict(self, state: dict) -> None:
        if (state["p"], state["k"]) != (self.p, self.k):
            raise OccreidError(f"sampler state is for P={state['p']}, K={state['k']}, not P={self.p}, K={self.k}")
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def _batches(self) -> list[list[int]]:
        if self._plan is not None and self._plan[0] == self.epoch:
            return self._plan[1]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
        chunks: dict[int, list[np.ndarray]] = {}
        for pid in sorted(self.by_pid):
            idxs = np.asarray(self.by_pid[pid])
            idxs = rng.choice(idxs, size=self.k, replace=True) if len(idxs) < self.k else rng.permutation(idxs)
            n = len(idxs) // self.k
            chunks[pid] = [idxs[i * self.k : (i + 1) * self.k] for i in range(n)]
        available = sorted(chunks)
        batches: list[list[int]] = []
        while len(available) >= self.p:
            chosen = [available[i] for i in rng.choice(len(available), size=self.p, replace=False)]
            batches.append([int(i) for pid in chosen for i in chunks[pid].pop()])
            available = [pid for pid in available if chunks[pid]]
        self._plan = (self.epoch, batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
