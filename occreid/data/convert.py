"""Turn extracted archives into the layouts the parsers read.

- Market-1501 / DukeMTMC-reID: the three split folders are taken from wherever the archive nests them.
- MSMT17: the four list files and the ``train/``, ``test/`` image folders.
- Occluded-Duke: the authors publish only name lists (``train.list``, ``query.list``, ``gallery.list``); the
  images come from DukeMTMC-reID. An image is taken from its own split folder, else from any Duke folder
  (the query moves occluded images out of Duke's gallery).
- Occluded-REID: ``occluded_body_images/<pid>/*.tif`` become the query, renamed ``<pid>_c1s1_<j*50>_00``,
  and ``whole_body_images/<pid>/*.tif`` the gallery, renamed ``<pid>_c3s3_<j*50>_00`` — the reference
  renaming (DPM's ``Rename.py``): query camera 0 and gallery camera 2, so the same-camera rule of the
  Market protocol removes no gallery image.

Files are hard-linked when source and target share a filesystem (no second copy of tens of GB), copied
otherwise. Conversions that know split-level occlusion facts write them to ``occlusion.csv``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from occreid.data.parsers.common import NAME_PATTERN, list_images
from occreid.data.parsers.market_layout import SPLIT_DIRS
from occreid.data.parsers.msmt17 import IMAGE_DIRS as MSMT_IMAGE_DIRS, LISTS as MSMT_LISTS
from occreid.data.parsers.sidecar import SIDECAR_NAME, write_sidecar
from occreid.errors import OccreidError

log = logging.getLogger(__name__)
OCC_DUKE_LISTS = {"train": "train.list", "query": "query.list", "gallery": "gallery.list"}
OCC_REID_DIRS = {"query": ("occluded_body_images", 1), "gallery": ("whole_body_images", 3)}


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst``, falling back to a copy across filesystems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _metadata_dir(path: Path) -> bool:
    """Folders archivers add beside the data (macOS resource forks, hidden folders): never the dataset."""
    return path.name == "__MACOSX" or path.name.startswith(".")


def find_layout_root(tree: Path, required: Sequence[str], what: str, max_depth: int = 3) -> Path:
    """The shallowest folder under ``tree`` (itself included) holding every name in ``required``.

    Archives nest their content differently (``Market-1501-v15.09.15/``, ``DukeMTMC-reID/``, ...).
    """
    if not tree.is_dir():
        raise OccreidError(f"{what} folder not found", path=tree, fix="check the folder path in params")
    level = [tree]
    for _ in range(max_depth + 1):
        found = [d for d in level if all((d / r).exists() for r in required)]
        if len(found) > 1:
            raise OccreidError(
                f"{what}: several folders hold {', '.join(required)}: {', '.join(map(str, found))}",
                path=tree,
                fix="point the source at the one folder to use",
            )
        if found:
            return found[0]
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir() and not _metadata_dir(c))
    raise OccreidError(
        f"{what}: no folder holding {', '.join(required)} within {max_depth} levels",
        path=tree,
        fix="this is not the expected dataset (or a different release): check the archive or folder in params",
    )


def _copy_images(images: list[Path], target: Path, desc: str, names: list[str] | None = None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(tqdm(images, desc=desc, unit="img", leave=False)):
        link_or_copy(src, target / (names[i] if names else src.name))


def arrange_market_layout(source: Path, out: Path, *, what: str, has_train: bool = True) -> Path:
    """Copy the split folders of a Market-layout tree (found anywhere under ``source``) into ``out``,
    images only; an ``occlusion.csv`` beside them is kept."""
    required = list(SPLIT_DIRS.values()) if has_train else [SPLIT_DIRS["query"], SPLIT_DIRS["gallery"]]
    root = find_layout_root(source, required, what)
    log.info("%s: Market layout found at %s", what, root)
    for dirname in SPLIT_DIRS.values():
        if (root / dirname).is_dir():
            _copy_images(list_images(root / dirname), out / dirname, f"{what}/{dirname}")
    if (root / SIDECAR_NAME).is_file():
        shutil.copy2(root / SIDECAR_NAME, out / SIDECAR_NAME)
    return root


def arrange_msmt17(source: Path, out: Path) -> Path:
    """Copy MSMT17's list files and image folders (V1 ``train``/``test`` or V2 ``mask_*_v2``)."""
    lists = [name for names in MSMT_LISTS.values() for name in names]
    root = find_layout_root(source, lists, "MSMT17")
    out.mkdir(parents=True, exist_ok=True)
    for name in lists:
        shutil.copy2(root / name, out / name)
    dirs = sorted({d for names in MSMT_IMAGE_DIRS.values() for d in names if (root / d).is_dir()})
    if not dirs:
        raise OccreidError("MSMT17 image folders train/ and test/ are missing", path=root,
                           fix="the archive is incomplete: download it again")
    for d in dirs:
        log.info("MSMT17: copying %s", root / d)
        shutil.copytree(root / d, out / d, copy_function=link_or_copy)
    return root


def read_split_list(path: Path) -> list[str]:
    """Basenames from an Occluded-Duke ``.list`` file (one per line), each checked against the name pattern."""
    names = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = line.strip().replace("\\", "/").rsplit("/", 1)[-1]
        if not name or name.startswith("#"):
            continue
        if not NAME_PATTERN.match(name):
            raise OccreidError(
                f"line {line_no}: '{name}' is not a DukeMTMC-reID image name",
                path=path,
                fix="the list file is not an Occluded-Duke split list (an HTML page saved instead?): delete it "
                "and re-run, or check datasets.occluded_duke.split_lists",
            )
        names.append(name)
    if not names:
        raise OccreidError("the split list is empty", path=path, fix="delete it and re-run to fetch it again")
    return names


def convert_occluded_duke(duke_source: Path, lists: dict[str, Path], out: Path) -> dict[str, int]:
    """Build Occluded-Duke in ``out`` from a DukeMTMC-reID tree and the three split lists."""
    duke = find_layout_root(duke_source, list(SPLIT_DIRS.values()), "DukeMTMC-reID")
    by_name: dict[str, Path] = {}
    for dirname in SPLIT_DIRS.values():
        for p in list_images(duke / dirname):
            by_name.setdefault(p.name, p)
    counts, rows = {}, []
    for split, dirname in SPLIT_DIRS.items():
        names = read_split_list(lists[split])
        sources, missing = [], []
        for name in names:
            own = duke / dirname / name
            src = own if own.is_file() else by_name.get(name)
            (sources if src is not None else missing).append(src or name)
        if missing:
            raise OccreidError(
                f"{len(missing)} of the {len(names)} images in {lists[split].name} are not in DukeMTMC-reID "
                f"(first: {missing[0]})",
                path=duke,
                fix="the DukeMTMC-reID archive is incomplete or another release: check datasets.occluded_duke.duke",
            )
        _copy_images(sources, out / dirname, f"occluded_duke/{dirname}", names)
        counts[split] = len(names)
        if split == "query":  # every Occluded-Duke query is occluded, by construction of the split
            rows += [("query", name, True, None) for name in names]
    write_sidecar(out / SIDECAR_NAME, rows)
    return counts


def _occluded_reid_pid(folder: Path) -> int:
    if not folder.name.isdigit():
        raise OccreidError(
            "Occluded-REID identity folders must be numbers (e.g. 001)",
            path=folder,
            fix="use the original Occluded-REID release (occluded_body_images/<pid>/, whole_body_images/<pid>/)",
        )
    return int(folder.name)


def convert_occluded_reid(source: Path, out: Path) -> dict[str, int]:
    """Arrange Occluded-REID as query (occluded, camera 1) and gallery (whole body, camera 3).

    A tree already arranged (``query/`` and ``bounding_box_test/``) is copied as it is.
    """
    try:
        root = find_layout_root(source, [d for d, _ in OCC_REID_DIRS.values()], "Occluded-REID")
    except OccreidError:
        try:
            arrange_market_layout(source, out, what="Occluded-REID", has_train=False)
        except OccreidError:
            raise OccreidError(
                "neither the original Occluded-REID layout (occluded_body_images/, whole_body_images/) nor an "
                "arranged one (query/, bounding_box_test/) was found",
                path=source,
                fix="point datasets.occluded_reid at the Occluded-REID archive or folder",
            ) from None
        return {}
    counts, rows = {}, []
    for split, (dirname, cam) in OCC_REID_DIRS.items():
        sources, names = [], []
        for person in sorted(p for p in (root / dirname).iterdir() if p.is_dir()):
            pid = _occluded_reid_pid(person)
            for j, img in enumerate(list_images(person)):
                sources.append(img)
                names.append(f"{pid:04d}_c{cam}s{cam}_{j * 50:06d}_00{img.suffix.lower()}")
        if not sources:
            raise OccreidError("no images", path=root / dirname, fix="the extraction is incomplete: re-extract")
        target = SPLIT_DIRS[split]
        _copy_images(sources, out / target, f"occluded_reid/{target}", names)
        counts[split] = len(names)
        rows += [(split, name, split == "query", None) for name in names]
    write_sidecar(out / SIDECAR_NAME, rows)
    return counts
