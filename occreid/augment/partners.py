"""The partner table: for each training image, the images whose scene it may be transferred into.

For source i, a candidate j ≠ i is *accepted* when its best OIoU over i's admitted rolls reaches α1
(:mod:`occreid.augment.oiou`). Up to ``candidates`` accepted partners are kept: with ``prefer_other_ids``
those of other identities first (a partner of the same identity would paste i into a scene that may show
the same person again, which teaches nothing about occlusion), then, if places remain, same-identity ones.
When there are more accepted partners than places, a seeded draw picks them — the generator of row i is
seeded with ``(seed, i)``, so a row does not depend on the chunking or on the other rows. Kept partners are
ordered other-identity first, then by score (descending), then by index.

Storage (:class:`SptSets`, one ``partners.npz``): ``partner`` int32 ``[N, C]`` (−1 = empty slot), ``roll``
int16 (patch columns), ``score`` float16 (OIoU), plus everything a training run needs to transfer without
the saliency file: the bit-packed person masks, their :class:`PatchGeometry`, the image paths (relative
to the dataset folder, checked against the records), the pids and the ``spt`` params used.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from occreid.augment.config import SptConfig
from occreid.augment.oiou import best_oiou_chunks, roll_order
from occreid.data.records import Record
from occreid.errors import OccreidError
from occreid.saliency.geometry import PatchGeometry
from occreid.saliency.store import read_npz, relative_paths, write_npz

log = logging.getLogger(__name__)


@dataclass
class PartnerTable:
    """``partner[i, c]`` = c-th partner of image i (−1: none), with its roll and OIoU score."""

    partner: np.ndarray  # int32 [N, C]
    roll: np.ndarray  # int16 [N, C], 0 on empty slots
    score: np.ndarray  # float16 [N, C], 0 on empty slots

    def __post_init__(self) -> None:
        self.partner = np.asarray(self.partner, np.int32)
        self.roll = np.asarray(self.roll, np.int16)
        self.score = np.asarray(self.score, np.float16)
        if not (self.partner.shape == self.roll.shape == self.score.shape) or self.partner.ndim != 2:
            raise ValueError("partner, roll and score must be [N, C] arrays of one shape")

    def __len__(self) -> int:
        return len(self.partner)

    def counts(self) -> np.ndarray:
        """Number of partners of each image, ``[N]``."""
        return (self.partner >= 0).sum(axis=1)

    def of(self, i: int) -> list[tuple[int, int, float]]:
        """``[(j, roll, score), ...]`` of image i."""
        keep = self.partner[i] >= 0
        return [(int(j), int(r), float(s)) for j, r, s in
                zip(self.partner[i][keep], self.roll[i][keep], self.score[i][keep])]


def _select(i: int, best: np.ndarray, best_roll: np.ndarray, pids: np.ndarray, cfg: SptConfig):
    """The kept partners of row i: (indices, rolls, scores), in table order."""
    accepted = best >= np.float32(cfg.alpha1)
    accepted[i] = False
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, i]))
    if cfg.prefer_other_ids:
        groups = [np.flatnonzero(accepted & (pids != pids[i])), np.flatnonzero(accepted & (pids == pids[i]))]
    else:
        groups = [np.flatnonzero(accepted)]
    chosen: list[np.ndarray] = []
    room = cfg.candidates
    for group in groups:
        take = group if len(group) <= room else np.sort(rng.choice(group, size=room, replace=False))
        if len(take):
            other = (pids[take] != pids[i]).astype(np.int8) if cfg.prefer_other_ids else np.zeros(len(take), np.int8)
            order = np.lexsort((take, -best[take], -other))  # other ids first, best score, low index
            chosen.append(take[order])
        room -= len(take)
        if room == 0:
            break
    idx = np.concatenate(chosen) if chosen else np.zeros(0, np.int64)
    return idx, best_roll[idx], best[idx]


def build_partner_table(masks: np.ndarray, pids: Sequence[int], cfg: SptConfig) -> PartnerTable:
    """The partner table of person masks ``[N, h, w]`` (bool) with identities ``pids`` ``[N]``."""
    masks = np.asarray(masks, bool)
    pids = np.asarray(pids)
    if masks.ndim != 3 or len(pids) != len(masks):
        raise ValueError(f"masks {masks.shape} must be [N, h, w] with one pid each (got {len(pids)})")
    n, c = len(masks), cfg.candidates
    partner = np.full((n, c), -1, np.int32)
    roll = np.zeros((n, c), np.int16)
    score = np.zeros((n, c), np.float16)
    rolls = roll_order(min(cfg.max_roll, masks.shape[2] - 1))
    chunks = best_oiou_chunks(masks, rolls, cfg.alpha2, cfg.chunk_size)
    total = -(-n // cfg.chunk_size)
    for start, best, best_roll in tqdm(chunks, total=total, desc="OIoU partners", leave=False, mininterval=1.0):
        for a in range(len(best)):
            idx, r, s = _select(start + a, best[a], best_roll[a], pids, cfg)
            partner[start + a, :len(idx)] = idx
            roll[start + a, :len(idx)] = r
            score[start + a, :len(idx)] = s
    return PartnerTable(partner, roll, score)


@dataclass
class SptSets:
    """Everything patch transfer needs at training time, as stored in ``partners.npz``."""

    table: PartnerTable
    masks: np.ndarray  # bool [N, h, w]: person masks (saliency >= threshold)
    geometry: PatchGeometry
    paths: list[str]  # relative to the prepared dataset folder
    pids: np.ndarray  # int64 [N]
    config: dict  # the spt params used

    def check_records(self, records: Sequence[Record], root: str | Path) -> None:
        """Refuse records that are not the images the table was built for (same order)."""
        rel = relative_paths([r.path for r in records], root)
        if rel != self.paths:
            first = next((k for k, (a, b) in enumerate(zip(rel, self.paths)) if a != b), min(len(rel), len(self.paths)))
            raise OccreidError(
                f"the partner table was built for other images ({len(self.paths)} images, the training split has "
                f"{len(rel)}; first difference at position {first})", path=root,
                fix="re-run the saliency and spt_sets stages for this dataset")


_FIX = "re-run the spt_sets stage (python -m stages.spt_sets --dataset NAME)"


def save_spt_sets(target: str | Path, sets: SptSets) -> Path:
    n, h, w = sets.masks.shape
    path = write_npz(target, {
        "partner": sets.table.partner, "roll": sets.table.roll, "score": sets.table.score,
        "masks": np.packbits(sets.masks.reshape(n, h * w), axis=1), "mask_shape": np.array([n, h, w], np.int64),
        "geometry": sets.geometry.to_array(), "paths": np.array(sets.paths, dtype=str),
        "pids": np.asarray(sets.pids, np.int64), "config": np.array(json.dumps(sets.config, sort_keys=True)),
    })
    log.info("partner table of %d images (%d with partners) written to %s", n,
             int((sets.table.counts() > 0).sum()), path)
    return path


def load_spt_sets(path: str | Path) -> SptSets:
    keys = ("partner", "roll", "score", "masks", "mask_shape", "geometry", "paths", "pids", "config")
    d = read_npz(path, keys, what="partner table", fix=_FIX)
    try:
        n, h, w = (int(v) for v in d["mask_shape"])
        masks = np.unpackbits(d["masks"], axis=1, count=h * w).reshape(n, h, w).astype(bool)
        sets = SptSets(PartnerTable(d["partner"], d["roll"], d["score"]), masks,
                       PatchGeometry.from_array(d["geometry"]), [str(p) for p in d["paths"]],
                       d["pids"].astype(np.int64), json.loads(str(d["config"])))
        if len(sets.table) != n or len(sets.paths) != n or len(sets.pids) != n or sets.geometry.grid != (h, w):
            raise ValueError("array sizes disagree")
        if sets.table.partner.max(initial=-1) >= n:
            raise ValueError("partner index out of range")
    except (ValueError, OccreidError) as e:
        raise OccreidError(f"inconsistent partner table: {e}", path=path, fix=_FIX) from None
    return sets


def spt_config_dict(cfg: SptConfig) -> dict:
    return dataclasses.asdict(cfg)
