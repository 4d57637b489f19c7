"""The plan of a dataset: every image's split, person id, camera, frame and whether it is occluded.

The plan is fixed before any pixel is drawn, from the config alone, so the images can be drawn in any
order (or in parallel) with the same result: each image is then rendered from its own seed
``(seed, split, pid, index)``.

Like Occluded-Duke, training and test identities are disjoint; a test identity's queries all come from
one of its cameras and its gallery images from its other cameras, so the Market-1501 protocol (which
ignores same-camera matches) keeps every gallery image. Exactly ``round(share × n)`` images of each
split are occluded, chosen by a seeded permutation of the split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .config import SynthOccConfig

SPLITS = ("train", "query", "gallery")
FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
SPLIT_CODE = {"train": 0, "query": 1, "gallery": 2}
FRAME_STEP = 50  # frames between two images of one person; frames increase with the image index


@dataclass(frozen=True, order=True)
class ImageSpec:
    """One image to draw. ``cam`` is 0-based; the file name shows ``cam + 1``."""

    split: str
    pid: int
    index: int  # the image's number among all images of this person (0-based)
    cam: int
    frame: int
    occluded: bool

    @property
    def folder(self) -> str:
        return FOLDERS[self.split]

    @property
    def file_name(self) -> str:
        return f"{self.pid:04d}_c{self.cam + 1}s1_{self.frame:06d}_01.jpg"

    @property
    def seed_key(self) -> tuple[int, int, int]:
        return (SPLIT_CODE[self.split], self.pid, self.index)


def split_ids(cfg: SynthOccConfig) -> tuple[list[int], list[int]]:
    """Sorted train and test person ids: a seeded shuffle of 1..(num_train_ids + num_test_ids)."""
    pids = np.random.default_rng([cfg.seed, 0]).permutation(cfg.num_train_ids + cfg.num_test_ids) + 1
    return sorted(int(p) for p in pids[: cfg.num_train_ids]), sorted(int(p) for p in pids[cfg.num_train_ids:])


def build_plan(cfg: SynthOccConfig) -> list[ImageSpec]:
    """All images of the dataset, in split order (train, query, gallery), then by person and index."""
    train_ids, test_ids = split_ids(cfg)
    draft: dict[str, list[tuple[int, int, int, int]]] = {s: [] for s in SPLITS}  # (pid, index, cam, frame)
    for pid in train_ids:
        cams = _cameras_of(cfg, pid)
        for index, frame in enumerate(_frames(cfg, pid)):
            draft["train"].append((pid, index, cams[index % len(cams)], frame))
    for pid in test_ids:
        cams = _cameras_of(cfg, pid)
        query_cam, others = cams[0], cams[1:]
        for index, frame in enumerate(_frames(cfg, pid)):
            if index < cfg.queries_per_id:
                draft["query"].append((pid, index, query_cam, frame))
            else:
                draft["gallery"].append((pid, index, others[(index - cfg.queries_per_id) % len(others)], frame))
    plan = []
    for split in SPLITS:
        rows = draft[split]
        count = math.floor(cfg.occluded_share(split) * len(rows) + 0.5)
        chosen = set(np.random.default_rng([cfg.seed, 5, SPLIT_CODE[split]]).permutation(len(rows))[:count].tolist())
        plan.extend(ImageSpec(split, pid, index, cam, frame, i in chosen)
                    for i, (pid, index, cam, frame) in enumerate(rows))
    return plan


def _cameras_of(cfg: SynthOccConfig, pid: int) -> list[int]:
    """The cameras that saw ``pid`` (at least two), in a seeded order; a test id's first is its query camera."""
    rng = np.random.default_rng([cfg.seed, 4, pid])
    count = int(rng.integers(2, cfg.num_cameras + 1))
    return [int(c) for c in rng.choice(cfg.num_cameras, size=count, replace=False)]


def _frames(cfg: SynthOccConfig, pid: int) -> list[int]:
    """Increasing, distinct frame numbers of the person's images."""
    offsets = np.random.default_rng([cfg.seed, 7, pid]).integers(0, FRAME_STEP, cfg.images_per_id)
    return [1 + FRAME_STEP * i + int(o) for i, o in enumerate(offsets)]
