"""Test helpers for DPM++: a tiny person dataset (64×32, clip_tiny's 4×2 patch grid), random stage-1 text
features and a seeded random partner table, written the way the prompts and spt_sets stages write them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from occreid.augment.config import SptConfig
from occreid.augment.partners import SptSets, build_partner_table, save_spt_sets
from occreid.data.datasets import create_dataset
from occreid.data.records import Record
from occreid.methods import create_method
from occreid.methods.dpmpp import DPMPPMethod
from occreid.saliency.geometry import PatchGeometry
from occreid.saliency.store import relative_paths
from saliency_fixtures import build_person_dataset

H, W, GRID, PROJ_DIM, NUM_CAMS = 64, 32, (4, 2), 32, 3  # clip_tiny: width 64, projection 32
BACKBONE = {"name": "clip_tiny", "pretrained": None, "img_size": [H, W], "stride": None, "sie": True,
            "sie_coef": 1.0, "sie_mode": "cls"}


def person_records(root: Path, ids: int = 4, per_id: int = 4) -> list[Record]:
    """Training records of a Market-layout folder of coloured person boxes (see saliency_fixtures)."""
    build_person_dataset(root, ids=ids, per_id=per_id, size=(H, W))
    return create_dataset("synthocc", root).train


def write_text_features(folder: Path, num_ids: int, seed: int = 0) -> Path:
    """A prompts-stage output folder holding random text features [num_ids, 32]."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    torch.save(torch.randn(num_ids, PROJ_DIM, generator=g), folder / "text_features.pt")
    return folder


def write_partner_table(path: Path, records: list[Record], root: Path, seed: int = 0) -> SptSets:
    """Random person masks on the 4×2 grid (each at least 3 patches) and their partner table, saved as the
    spt_sets stage does; every image gets partners (α1 0.0 admits any pair)."""
    rng = np.random.default_rng(seed)
    masks = rng.random((len(records), *GRID)) < 0.6
    masks[:, 1:3, :] = True
    pids = np.array([r.pid for r in records], np.int64)
    table = build_partner_table(masks, pids, SptConfig(alpha1=0.0, candidates=3, max_roll=1))
    geometry = PatchGeometry((H, W), GRID, (16, 16), (16, 16))
    sets = SptSets(table, masks, geometry, relative_paths([r.path for r in records], root), pids, {})
    save_spt_sets(path, sets)
    return sets


def make_method(num_ids: int, *, seed: int = 0, **cfg) -> DPMPPMethod:
    """A clip_tiny DPM++ built from a fixed seed (``cfg``: DPMPPConfig overrides)."""
    torch.manual_seed(seed)
    return create_method("dpmpp", {"backbone": dict(BACKBONE), **cfg}, num_ids, NUM_CAMS)


def paired_batch(num_ids: int = 4, k: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch shaped like the pairing sampler's: per identity K images, then one view of its first image
    (pair_id shared, ``is_transferred`` on the view); random pixels."""
    g = torch.Generator().manual_seed(seed)
    pid, index, pair_id, moved = [], [], [], []
    for p in range(num_ids):
        for j in range(k):
            pid.append(p), index.append(p * k + j), pair_id.append(p if j == 0 else -1), moved.append(False)
        pid.append(p), index.append(p * k), pair_id.append(p), moved.append(True)
    n = len(pid)
    return {"image": torch.randn(n, 3, H, W, generator=g), "pid": torch.tensor(pid),
            "camid": torch.arange(n) % NUM_CAMS, "index": torch.tensor(index), "pair_id": torch.tensor(pair_id),
            "is_transferred": torch.tensor(moved)}
