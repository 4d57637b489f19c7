"""The occlusion sidecar ``occlusion.csv``: per-image occlusion facts that file names cannot carry.

Header ``split,file,occluded,occlusion``; ``split`` in train/query/gallery, ``file`` a basename, ``occluded``
0/1 and ``occlusion`` the hidden fraction in [0, 1] (empty when only the split-level fact is known, as for
Occluded-Duke and Occluded-REID). synthocc writes it with exact fractions; the conversions write split facts.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

from occreid.data.records import Record
from occreid.errors import OccreidError

SIDECAR_NAME = "occlusion.csv"
SIDECAR_HEADER = ("split", "file", "occluded", "occlusion")
Facts = dict[tuple[str, str], tuple[bool, float | None]]


def read_sidecar(path: Path) -> Facts:
    """``{(split, basename): (occluded, occlusion|None)}``; every malformed row is an error naming its line."""
    fix = "the sidecar is written by prepare_data: delete the prepared folder and re-run it"
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != SIDECAR_HEADER:
            raise OccreidError(f"header must be {','.join(SIDECAR_HEADER)}, got {header}", path=path, fix=fix)
        facts: Facts = {}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            where = f"{path}:{line}"
            if len(row) != 4:
                raise OccreidError(f"expected 4 fields, got {len(row)}: {row}", path=where, fix=fix)
            split, name, occluded, occlusion = (c.strip() for c in row)
            if split not in ("train", "query", "gallery"):
                raise OccreidError(f"split '{split}' is not train/query/gallery", path=where, fix=fix)
            if occluded not in ("0", "1"):
                raise OccreidError(f"occluded must be 0 or 1, got '{occluded}'", path=where, fix=fix)
            fraction: float | None = None
            if occlusion:
                try:
                    fraction = float(occlusion)
                except ValueError:
                    fraction = -1.0
                if not 0.0 <= fraction <= 1.0:
                    raise OccreidError(f"occlusion must be a number in [0, 1], got '{occlusion}'", path=where, fix=fix)
            if (split, name) in facts:
                raise OccreidError(f"'{name}' appears twice in split '{split}'", path=where, fix=fix)
            facts[(split, name)] = (occluded == "1", fraction)
    return facts


def write_sidecar(path: Path, rows: list[tuple[str, str, bool, float | None]]) -> None:
    """Write rows ``(split, file, occluded, occlusion|None)`` sorted, so the bytes are reproducible."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(SIDECAR_HEADER)
        for split, name, occluded, occlusion in sorted(rows, key=lambda r: (r[0], r[1])):
            w.writerow([split, name, int(bool(occluded)), "" if occlusion is None else f"{occlusion:.6g}"])


def attach_occlusion(
    records: list[Record],
    split: str,
    facts: Facts,
    default: bool | None,
    sidecar: Path | None,
    present: set[str] | None = None,
) -> list[Record]:
    """Give each record its sidecar facts, else the dataset's split-level ``default``.

    A sidecar row naming a file the split does not hold (``present``: every basename of the split, junk
    included; default the records' names) means the sidecar is stale: an error.
    """
    names = present if present is not None else {Path(r.path).name for r in records}
    if sidecar is not None:
        stale = sorted(name for (s, name) in facts if s == split and name not in names)
        if stale:
            raise OccreidError(
                f"{len(stale)} rows of split '{split}' name files that are not there (first: {stale[0]})",
                path=sidecar,
                fix="the sidecar does not match the images: delete the prepared folder and re-run prepare_data",
            )
    out = []
    for r in records:
        occluded, occlusion = facts.get((split, Path(r.path).name), (default, None))
        out.append(replace(r, occluded=occluded, occlusion=occlusion))
    return out


def read_sidecar_if_present(root: Path) -> tuple[Facts, Path | None]:
    """The occlusion facts of a prepared folder and the sidecar's path, or ({}, None) when it has none."""
    sidecar = Path(root) / SIDECAR_NAME
    return (read_sidecar(sidecar), sidecar) if sidecar.is_file() else ({}, None)
