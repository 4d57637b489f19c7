"""``manifest.json``: what a prepared dataset folder holds and where it came from.

Written last into a prepared folder, it records the counts per split (images, ids, cameras, occluded
images), the source (kind, URLs, archive), the sha256 of every archive and list used, and the params — so a
result can be traced to the exact bytes it was computed from. No timestamps: the same inputs give the same
bytes, which keeps DVC from seeing a change where there is none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from occreid.data.records import Record, Splits
from occreid.errors import OccreidError
from occreid.io import write_json

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def _split_stats(records: list[Record]) -> dict[str, Any]:
    return {
        "images": len(records),
        "ids": len({r.pid for r in records}),
        "cameras": sorted({r.camid for r in records}),
        "occluded": sum(1 for r in records if r.occluded),
        "occlusion_known": sum(1 for r in records if r.occluded is not None),
    }


def build_manifest(
    splits: Splits,
    *,
    source: dict[str, Any],
    sha256: dict[str, str],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The manifest of a parsed dataset; ``source`` says how it was obtained, ``sha256`` maps each input file
    name to its hash, ``params`` are the settings used (dataset source and generator params)."""
    counts = {name: _split_stats(getattr(splits, name)) for name in ("train", "query", "gallery")}
    records = (*splits.train, *splits.query, *splits.gallery)
    return {
        "manifest_version": MANIFEST_VERSION,
        "dataset": splits.name,
        "layout": splits.meta.get("layout"),
        "counts": counts,
        "files": splits.meta.get("files", {}),
        "num_train_ids": splits.num_train_pids,
        "num_cameras": splits.num_cams if records else 0,
        "source": source,
        "sha256": dict(sorted(sha256.items())),
        "params": params,
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    return write_json(Path(folder) / MANIFEST_NAME, manifest)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a prepared folder, with a clear error when it is missing or damaged."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise OccreidError(
            "no manifest.json: this folder was not (completely) prepared",
            path=path,
            fix="run `python -m stages.prepare_data --dataset NAME`",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise OccreidError(f"manifest is not valid JSON ({e})", path=path, fix="re-run prepare_data") from None
