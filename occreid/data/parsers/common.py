"""Pieces every re-ID parser shares: image listing, name parsing, bounds, relabelling, image checks.

Kept apart from the layouts (:mod:`.market_layout`, :mod:`.msmt17`) so that each rule — what a valid file
name is, what counts as an image, how train ids are relabelled — is written once and tested once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from occreid.data.records import Record
from occreid.errors import OccreidError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
# "<pid>_c<cam>": Market "0002_c1s1_000451_03.jpg", Duke "0005_c2_f0046985.jpg", junk "-1_c3s2_...".
NAME_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")
JUNK_PID = -1
SPLITS = ("train", "query", "gallery")


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset's files must look like: id and camera bounds, published sizes, occlusion facts.

    ``cam_range`` is 1-based, as written in file names; records store ``cam - 1``. ``occluded_by_split``
    gives the split-level occlusion fact a dataset guarantees (Occluded-Duke: every query is occluded).
    """

    name: str
    layout: str  # "market" | "msmt17"
    pid_range: tuple[int, int]
    cam_range: tuple[int, int]
    expected: "ExpectedCounts | None" = None
    occluded_by_split: dict[str, bool] = field(default_factory=dict)
    has_train: bool = True
    title: str = ""


@dataclass(frozen=True)
class ExpectedCounts:
    """Published split sizes. ``images`` counts the files of a split as published (junk included);
    ``ids`` counts identities after junk removal, only where the number is well established."""

    images: dict[str, int]
    ids: dict[str, int] = field(default_factory=dict)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name; hidden files and non-images are skipped
    (archives of Market-1501 carry a ``Thumbs.db``)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    skipped = len(files) - len(images)
    if skipped:
        log.debug("%s: skipped %d non-image files", folder, skipped)
    return images


def parse_name(path: Path) -> tuple[int, int]:
    """``(pid, cam)`` from a basename of the form ``<pid>_c<cam>...`` (cam as written, 1-based)."""
    m = NAME_PATTERN.match(path.name)
    if m is None:
        raise OccreidError(
            "file name does not follow the re-ID pattern '<pid>_c<cam>...' (e.g. 0002_c1s1_000451_03.jpg)",
            path=path,
            fix="remove or rename the file; if the whole folder is named differently, the dataset was not "
            "prepared by prepare_data — re-run `python -m stages.prepare_data --dataset NAME`",
        )
    return int(m.group(1)), int(m.group(2))


def check_bounds(spec: DatasetSpec, path: Path, pid: int, cam: int) -> None:
    """Refuse ids and cameras outside the dataset's published ranges (junk pid -1 is allowed)."""
    lo, hi = spec.pid_range
    if pid != JUNK_PID and not lo <= pid <= hi:
        raise OccreidError(
            f"person id {pid} is outside {spec.name}'s range {lo}..{hi}",
            path=path,
            fix=f"this file does not belong to {spec.name}: check that the folder holds the right dataset",
        )
    clo, chi = spec.cam_range
    if not clo <= cam <= chi:
        raise OccreidError(
            f"camera {cam} is outside {spec.name}'s cameras {clo}..{chi}",
            path=path,
            fix=f"this file does not belong to {spec.name}: check that the folder holds the right dataset",
        )


def relabel_train(records: list[Record]) -> tuple[list[Record], list[int]]:
    """Map train pids to 0..N-1 in the order of the sorted unique original pids.

    Returns the relabelled records and the original pids (index = new label), so the mapping is kept.
    """
    pids = sorted({r.pid for r in records})
    new = {pid: i for i, pid in enumerate(pids)}
    return [replace(r, pid=new[r.pid]) for r in records], pids


def verify_images(records: list[Record], what: str) -> None:
    """Open and verify each image with PIL, so a truncated or corrupt file fails here, not mid-training."""
    from PIL import Image, UnidentifiedImageError

    for rec in tqdm(records, desc=f"verify {what}", unit="img", leave=False):
        try:
            with Image.open(rec.path) as im:
                im.verify()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
            raise OccreidError(
                f"image cannot be decoded ({e})",
                path=rec.path,
                fix="the download or extraction is damaged: delete the prepared folder and the raw archive "
                "and re-run prepare_data (or delete just this file if it does not belong to the dataset)",
            ) from None
