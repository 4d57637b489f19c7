"""The Market-1501 folder layout, shared by Market-1501, DukeMTMC-reID, Occluded-Duke, Occluded-REID and synthocc.

``bounding_box_train/``, ``query/`` and ``bounding_box_test/`` hold images named ``<pid>_c<cam>...``. Junk
images (pid -1) are dropped; Market's distractors (pid 0) stay in the gallery, as in the standard protocol.
"""

from __future__ import annotations

from pathlib import Path

from occreid.data.parsers.common import (
    JUNK_PID,
    DatasetSpec,
    check_bounds,
    list_images,
    parse_name,
    relabel_train,
)
from occreid.data.parsers.sidecar import attach_occlusion, read_sidecar_if_present
from occreid.data.records import Record, Splits
from occreid.errors import OccreidError

SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def check_root(root: Path, name: str) -> None:
    """A clear error when the dataset folder is missing or is not a folder."""
    if not root.exists():
        raise OccreidError(
            f"{name} dataset folder not found",
            path=root,
            fix=f"run `python -m stages.prepare_data --dataset {name}` first, or pass the prepared folder",
        )
    if not root.is_dir():
        raise OccreidError(
            f"{name} dataset path is a file, not a folder",
            path=root,
            fix="an archive must be prepared first: set it as the archive of "
            f"datasets.{name} and run `python -m stages.prepare_data --dataset {name}`",
        )


def _missing_split_error(root: Path, dirname: str, name: str) -> OccreidError:
    nested = sorted(p.parent for p in root.glob(f"*/{dirname}") if p.is_dir())
    if nested:
        hint = f"the dataset seems nested one level down, in {nested[0]}: pass that folder as root"
    else:
        present = sorted(p.name for p in root.iterdir())[:8]
        hint = (
            f"expected the Market-1501 layout {', '.join(SPLIT_DIRS.values())}; found {present or 'nothing'}. "
            f"Run `python -m stages.prepare_data --dataset {name}` to build it"
        )
    return OccreidError(f"missing folder '{dirname}' ({name}, Market-1501 layout)", path=root / dirname, fix=hint)


def _parse_split(spec: DatasetSpec, folder: Path) -> tuple[list[Record], int, set[str]]:
    images = list_images(folder)
    if not images:
        raise OccreidError(
            "no images in this split folder",
            path=folder,
            fix="the extraction is incomplete: delete the prepared folder and re-run prepare_data",
        )
    records = []
    for path in images:
        pid, cam = parse_name(path)
        check_bounds(spec, path, pid, cam)
        if pid == JUNK_PID:
            continue
        records.append(Record(str(path), pid, cam - 1))
    return sorted(records), len(images), {p.name for p in images}


def parse_market_layout(spec: DatasetSpec, root: Path) -> tuple[Splits, dict[str, int]]:
    """Parse a Market-layout folder into :class:`Splits`; also return the image files per split (junk
    included), which is what the published sizes count."""
    root = Path(root)
    check_root(root, spec.name)
    facts, sidecar = read_sidecar_if_present(root)
    parts: dict[str, list[Record]] = {}
    files: dict[str, int] = {}
    for split, dirname in SPLIT_DIRS.items():
        folder = root / dirname
        if not folder.is_dir():
            if split == "train" and not spec.has_train:
                parts[split], files[split] = [], 0
                continue
            raise _missing_split_error(root, dirname, spec.name)
        records, files[split], present = _parse_split(spec, folder)
        parts[split] = attach_occlusion(
            records,
            split,
            facts,
            spec.occluded_by_split.get(split),
            sidecar if facts else None,
            present,
        )
    train, train_pids = relabel_train(parts["train"])
    meta = {"root": str(root), "layout": "market", "train_pids": train_pids, "files": files,
            "sidecar": sidecar is not None}
    return Splits(spec.name, train, parts["query"], parts["gallery"], meta), files
