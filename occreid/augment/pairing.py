"""Occlusion-aware pairing: every batch holds images together with their synthetic occluded views.

:class:`OcclusionPairSampler` wraps the P×K sampler. In each P×K batch it picks, per identity, ``m =
pairs_per_id`` of the K images as pair sources and appends, after that identity's K items, one paired view
per source. A batch is therefore P × (K + m) items, identity by identity (the PK structure with K' = K + m),
and each pair (holistic image, its view) lies in the same batch with a batch-local ``pair_id``. A view is
occluded with probability ``p`` (SPT transfer into a partner from the table, or a baseline); otherwise, or
when the source has no partner, it is a second holistic view (same image, its own augmentation), so the
batch shape never changes. All draws come from a generator seeded with ``(transfer seed, epoch, batch)``.

The sampler yields :class:`PairItem` tuples; :class:`PairedTransferDataset` turns each into a dict. Batch
fields (after default collation):

- ``image`` [B, 3, H, W]: the view (holistic, or occluded; augmented by the training transform)
- ``pid`` [B], ``camid`` [B], ``index`` [B]: identity, camera and dataset index of the *source* image i
  (a transferred view keeps i's label)
- ``pair_id`` [B]: batch-local pair number shared by a source and its view; −1 for unpaired images
- ``is_transferred`` [B] bool: True for the synthetic occluded view of a pair
- ``partner`` [B]: dataset index of the partner / donor j (−1 if none); ``roll`` [B]: SPT roll (columns)
- token space only: ``partner_image`` [B, 3, H, W], ``partner_mask`` [B, h, w] bool (all True and roll 0
  for items that are not transferred, so :func:`transfer_tokens` leaves them unchanged). In token space a
  transferred item's ``image`` and ``partner_image`` are resized and normalised only (no flip/crop), so the
  mask stays aligned with the patches.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from occreid.augment.config import TransferConfig
from occreid.augment.erasing import cut_paste, random_erase
from occreid.augment.partners import PartnerTable, SptSets
from occreid.augment.transfer import transfer_image
from occreid.data.batch_augment import BatchTrainTransform
from occreid.data.cache import DecodedImages
from occreid.data.loader import read_image
from occreid.data.records import Record
from occreid.data.sampler import PKBatchSampler
from occreid.errors import OccreidError
from occreid.saliency.store import load_rgb

HOLISTIC, SPT, CUT_PASTE, ERASE = 0, 1, 2, 3
_KIND = {"spt": SPT, "cut_paste": CUT_PASTE, "random_erasing": ERASE}


class PairItem(NamedTuple):
    """One batch entry: source ``index``, its ``partner`` (or donor) and ``roll``, ``pair_id``, view ``kind``
    and the ``seed`` of the view's own random draws (boxes of the baselines)."""

    index: int
    partner: int
    roll: int
    pair_id: int
    kind: int
    seed: int


class OcclusionPairSampler(Sampler[list[PairItem]]):
    """Batch sampler over a :class:`PKBatchSampler` that appends paired occluded views (module docstring)."""

    def __init__(self, base: PKBatchSampler, pids: Sequence[int], cfg: TransferConfig,
                 table: PartnerTable | None = None):
        if cfg.mode == "spt" and table is None:
            raise OccreidError("transfer mode 'spt' needs the partner table", fix="run the spt_sets stage and pass it")
        if table is not None and len(table) != len(pids):
            raise OccreidError(f"the partner table has {len(table)} rows for {len(pids)} images",
                               fix="re-run the spt_sets stage for this training split")
        if cfg.pairs_per_id > base.k:
            raise OccreidError(f"transfer.pairs_per_id {cfg.pairs_per_id} exceeds images_per_id {base.k}",
                               fix="lower transfer.pairs_per_id")
        self.base, self.cfg, self.table = base, cfg, table
        self.pids = np.asarray(pids)

    @property
    def batch_size(self) -> int:
        return self.base.p * (self.base.k + self.cfg.pairs_per_id)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict(), "transfer_seed": self.cfg.seed}

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state["base"])

    def _view(self, idx: int, rng: np.random.Generator) -> tuple[int, int, int]:
        """(kind, partner, roll) of the paired view of source ``idx``."""
        cfg = self.cfg
        occlude = rng.random() < cfg.p
        if cfg.mode == "none" or not occlude:
            return HOLISTIC, -1, 0
        if cfg.mode == "spt":
            row = self.table.partner[idx]
            n = int((row >= 0).sum())  # partners fill the row from the left
            if n == 0:
                return HOLISTIC, -1, 0
            c = int(rng.integers(n))
            return SPT, int(row[c]), int(self.table.roll[idx, c])
        if cfg.mode == "cut_paste":
            others = np.flatnonzero(self.pids != self.pids[idx])
            return (CUT_PASTE, int(others[rng.integers(len(others))]), 0) if len(others) else (HOLISTIC, -1, 0)
        return ERASE, -1, 0

    def _pair_batch(self, batch: list[int], rng: np.random.Generator) -> list[PairItem]:
        k, m = self.base.k, self.cfg.pairs_per_id
        items: list[PairItem] = []
        pair = 0
        for start in range(0, len(batch), k):
            chunk = batch[start:start + k]
            sources = set(rng.choice(len(chunk), size=min(m, len(chunk)), replace=False).tolist())
            views = []
            for pos, idx in enumerate(chunk):
                if pos in sources:
                    kind, partner, roll = self._view(idx, rng)
                    items.append(PairItem(idx, -1, 0, pair, HOLISTIC, 0))
                    views.append(PairItem(idx, partner, roll, pair, kind, int(rng.integers(2**31))))
                    pair += 1
                else:
                    items.append(PairItem(idx, -1, 0, -1, HOLISTIC, 0))
            items += views
        return items

    def __iter__(self) -> Iterator[list[PairItem]]:
        epoch = self.base.epoch
        for b, batch in enumerate(self.base):
            rng = np.random.default_rng(np.random.SeedSequence([self.cfg.seed, epoch, b]))
            yield self._pair_batch(list(batch), rng)

    def __len__(self) -> int:
        return len(self.base)


class PairedTransferDataset(Dataset):
    """Items are :class:`PairItem` → batch dicts (module docstring). ``transform`` is the training transform
    (PIL → normalised tensor); ``plain_transform`` (resize + normalise) serves token-space items.

    ``images``: the decoded-image cache of ``records`` (:mod:`occreid.data.cache`), read instead of the files;
    ``batch_transform`` (the same augmentation as ``transform``, :mod:`occreid.data.batch_augment`) then
    augments a pixel-space batch at once. The items are the same either way."""

    def __init__(self, records: Sequence[Record], transform: Callable, cfg: TransferConfig, *,
                 sets: SptSets | None = None, img_size: Sequence[int] = (256, 128),
                 plain_transform: Callable | None = None, images: DecodedImages | None = None,
                 batch_transform: BatchTrainTransform | None = None):
        if cfg.mode == "spt" and sets is None:
            raise OccreidError("transfer mode 'spt' needs the partner table", fix="run the spt_sets stage and pass it")
        if cfg.space == "token" and plain_transform is None:
            raise OccreidError("token-space transfer needs plain_transform (resize + normalise, no augmentation)")
        self.records, self.transform, self.cfg, self.sets = list(records), transform, cfg, sets
        self.plain_transform = plain_transform
        self.size = tuple(sets.geometry.img_size) if sets is not None else tuple(img_size)
        self.images = images
        self.batch_transform = batch_transform if images is not None and cfg.space == "pixel" else None

    def __len__(self) -> int:
        return len(self.records)

    def _rgb(self, index: int, size: Sequence[int]) -> np.ndarray:
        """``load_rgb`` of record ``index`` at ``size``, from the cache when it holds that size."""
        cached = self.images.rgb(index, size) if self.images is not None else None
        return cached if cached is not None else load_rgb(self.records[index].path, size)

    def _pil(self, index: int) -> Image.Image:
        return self.images.pil(index) if self.images is not None else read_image(self.records[index].path)

    def _pixels(self, item: PairItem) -> Image.Image:
        """The view before the training transform: the transferred / pasted image, or the image itself."""
        if item.kind == SPT:
            geometry = self.sets.geometry
            out, _ = transfer_image(self._rgb(item.index, geometry.img_size), self._rgb(item.partner, geometry.img_size),
                                    self.sets.masks[item.partner], item.roll, geometry)
            return Image.fromarray(out)
        if item.kind == CUT_PASTE:
            rng = np.random.default_rng(item.seed)
            return Image.fromarray(cut_paste(self._rgb(item.index, self.size), self._rgb(item.partner, self.size),
                                             rng, self.cfg.boxes)[0])
        return self._pil(item.index)

    def _finish(self, item: PairItem, image: torch.Tensor) -> torch.Tensor:
        """What follows the training transform: the random-erasing baseline's box."""
        if item.kind == ERASE:
            return random_erase(image, np.random.default_rng(item.seed), self.cfg.boxes)[0]
        return image

    def _view(self, item: PairItem) -> torch.Tensor:
        return self._finish(item, self.transform(self._pixels(item)))

    def _fields(self, item: PairItem) -> dict:
        rec = self.records[item.index]
        return {"pid": rec.pid, "camid": rec.camid, "index": item.index, "pair_id": item.pair_id,
                "is_transferred": item.kind != HOLISTIC, "partner": item.partner, "roll": item.roll}

    def __getitem__(self, item: PairItem) -> dict:
        item = PairItem(*item)
        out = self._fields(item)
        if self.cfg.space == "token":
            return {**out, **self._token_item(item)}
        return {"image": self._view(item), **out}

    def __getitems__(self, items: list[PairItem]) -> list[dict]:
        """A batch: with the batched transform (every view at the training size), augmented at once."""
        items = [PairItem(*item) for item in items]
        if self.batch_transform is None:
            return [self[item] for item in items]
        pixels = [np.asarray(self._pixels(item)) for item in items]
        if any(p.shape[:2] != self.batch_transform.size for p in pixels):  # e.g. partner masks at another size
            return [{"image": self._finish(item, self.transform(Image.fromarray(p))), **self._fields(item)}
                    for item, p in zip(items, pixels)]
        images = self.batch_transform(torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous())
        return [{"image": self._finish(item, image), **self._fields(item)} for item, image in zip(items, images)]

    def _token_item(self, item: PairItem) -> dict:
        grid = self.sets.geometry.grid  # token space implies mode "spt", which requires the sets
        if item.kind != SPT:
            image = self.transform(self._pil(item.index))
            return {"image": image, "partner_image": torch.zeros_like(image),
                    "partner_mask": torch.ones(grid, dtype=torch.bool)}
        size = self.sets.geometry.img_size
        image = self.plain_transform(Image.fromarray(self._rgb(item.index, size)))
        partner = self.plain_transform(Image.fromarray(self._rgb(item.partner, size)))
        return {"image": image, "partner_image": partner,
                "partner_mask": torch.from_numpy(np.ascontiguousarray(self.sets.masks[item.partner]))}


def build_paired_train_loader(
    records: Sequence[Record], transform: Callable, cfg: TransferConfig, *, sets: SptSets | None,
    ids_per_batch: int, images_per_id: int, seed: int, img_size: Sequence[int] = (256, 128),
    plain_transform: Callable | None = None, num_workers: int = 0, pin_memory: bool = False,
) -> tuple[DataLoader, OcclusionPairSampler, torch.Generator]:
    """The paired counterpart of :func:`occreid.data.loader.build_train_loader` (same return shape)."""
    base = PKBatchSampler([r.pid for r in records], ids_per_batch, images_per_id, seed=seed)
    sampler = OcclusionPairSampler(base, [r.pid for r in records], cfg, sets.table if sets is not None else None)
    dataset = PairedTransferDataset(records, transform, cfg, sets=sets, img_size=img_size,
                                    plain_transform=plain_transform)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
                        generator=generator)
    return loader, sampler, generator
