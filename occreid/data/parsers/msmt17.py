"""The MSMT17 layout: images under ``train/`` and ``test/``, splits given by four list files.

``list_train.txt``, ``list_val.txt``, ``list_query.txt``, ``list_gallery.txt`` hold lines ``<relpath> <pid>``
(e.g. ``0000/0000_000_01_0303morning_0015_0.jpg 0``); train and val together form the training set (the
usual 32,621 images). The camera is the third ``_`` field of the basename (1..15). V1 names the image folders
``train``/``test``; V2 names them ``mask_train_v2``/``mask_test_v2`` — both are read.
"""

from __future__ import annotations

from pathlib import Path

from occreid.data.parsers.common import DatasetSpec, check_bounds, relabel_train
from occreid.data.parsers.market_layout import check_root
from occreid.data.parsers.sidecar import attach_occlusion, read_sidecar_if_present
from occreid.data.records import Record, Splits
from occreid.errors import OccreidError

LISTS = {"train": ("list_train.txt", "list_val.txt"), "query": ("list_query.txt",), "gallery": ("list_gallery.txt",)}
IMAGE_DIRS = {
    "train": ("train", "mask_train_v2"),
    "query": ("test", "mask_test_v2"),
    "gallery": ("test", "mask_test_v2"),
}


def msmt17_camera(path: Path) -> int:
    """Camera (1-based) from an MSMT17 basename ``<pid>_<idx>_<cam>_<date>_<frame>_<n>.jpg``."""
    fields = path.name.split("_")
    if len(fields) < 3 or not fields[2].isdigit():
        raise OccreidError(
            "MSMT17 file name lacks the camera field '<pid>_<idx>_<cam>_...'",
            path=path,
            fix="the list files and images must come from the original MSMT17 release",
        )
    return int(fields[2])


def _image_dir(root: Path, split: str) -> Path:
    for name in IMAGE_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    raise OccreidError(
        f"missing image folder for split '{split}' (one of {', '.join(IMAGE_DIRS[split])})",
        path=root,
        fix="root must be the MSMT17 folder holding the list files and train/ test/; "
        "run `python -m stages.prepare_data --dataset msmt17`",
    )


def read_list(spec: DatasetSpec, list_path: Path, image_dir: Path) -> list[Record]:
    """Records of one list file; malformed lines, missing images and out-of-range ids are errors."""
    if not list_path.is_file():
        raise OccreidError(
            "MSMT17 list file not found",
            path=list_path,
            fix="root must hold list_train.txt, list_val.txt, list_query.txt and list_gallery.txt",
        )
    records, missing = [], []
    for line_no, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise OccreidError(
                f"line {line_no} is not '<relative path> <pid>': {line!r}",
                path=list_path,
                fix="the list file is damaged: re-extract the MSMT17 archive",
            )
        path = image_dir / fields[0]
        pid = int(fields[1])
        cam = msmt17_camera(path)
        check_bounds(spec, path, pid, cam)
        if not path.is_file():
            missing.append(fields[0])
            continue
        records.append(Record(str(path), pid, cam - 1))
    if missing:
        raise OccreidError(
            f"{len(missing)} images listed here are missing under {image_dir} (first: {missing[0]})",
            path=list_path,
            fix="the extraction is incomplete: delete the prepared folder and re-run prepare_data",
        )
    return records


def parse_msmt17(spec: DatasetSpec, root: Path) -> tuple[Splits, dict[str, int]]:
    """Parse an MSMT17 folder; the image count per split is the number of listed images."""
    root = Path(root)
    check_root(root, spec.name)
    facts, sidecar = read_sidecar_if_present(root)
    parts: dict[str, list[Record]] = {}
    files: dict[str, int] = {}
    for split, list_names in LISTS.items():
        image_dir = _image_dir(root, split)
        records = sorted(r for name in list_names for r in read_list(spec, root / name, image_dir))
        files[split] = len(records)
        parts[split] = attach_occlusion(
            records, split, facts, spec.occluded_by_split.get(split), sidecar if facts else None
        )
    train, train_pids = relabel_train(parts["train"])
    meta = {"root": str(root), "layout": "msmt17", "train_pids": train_pids, "files": files,
            "sidecar": sidecar is not None}
    return Splits(spec.name, train, parts["query"], parts["gallery"], meta), files
