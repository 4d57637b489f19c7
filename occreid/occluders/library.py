"""The occluder library on disk: RGBA object PNGs, ``manifest.json`` and ``contact_sheet.png`` in one folder.

Layout (written atomically: a temporary folder renamed into place, so a crash never leaves a library that
looks complete)::

    <folder>/manifest.json        {"version", "count", "build": {...}, "objects": [entry, ...]}
    <folder>/contact_sheet.png    the objects on a checkerboard, for checking by eye
    <folder>/objects/00000.png    RGBA: RGB = the photograph inside the object's bounding box, A = its mask

The RGB channels keep the whole bounding box of the photograph (not only the masked pixels): the alpha
paste (ROA) uses the mask, the paper's Cut&Paste comparison pastes the same box without it, and resizing
RGB and alpha separately leaves no dark fringe at the mask's edge. Each manifest entry says where the object
comes from (source image, bounding box, area, aspect, fill, score) and pins its file by sha256;
:meth:`OccluderLibrary.load` checks the folder against it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from PIL import Image

from occreid.errors import OccreidError
from occreid.io import atomic_path

MANIFEST = "manifest.json"
SHEET = "contact_sheet.png"
OBJECTS = "objects"
VERSION = 1
ENTRY_KEYS = ("file", "source", "bbox", "area", "aspect", "sha256")


def png_bytes(image: Image.Image) -> bytes:
    """PNG bytes of ``image`` (PIL writes no timestamps: the same pixels give the same bytes)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class LibraryWriter:
    """Writes a library into a (temporary) folder one object at a time, so that building one from thousands
    of masks never holds them all in memory. :meth:`keep` thins it out to a subset (a total cap) and
    renumbers; :meth:`close` writes the manifest. Use it through :func:`library_writer`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        (self.folder / OBJECTS).mkdir(parents=True)
        self.entries: list[dict] = []

    def add(self, image: Image.Image, meta: dict) -> int:
        """Write RGBA ``image`` with manifest entry ``meta`` (``file``, ``size`` and ``sha256`` are added)."""
        if image.mode != "RGBA":
            raise ValueError(f"an occluder object must be RGBA, got {image.mode}")
        data = png_bytes(image)
        name = f"{OBJECTS}/{len(self.entries):05d}.png"
        (self.folder / name).write_bytes(data)
        self.entries.append({**meta, "file": name, "size": [image.height, image.width],
                             "sha256": hashlib.sha256(data).hexdigest()})
        return len(self.entries) - 1

    def keep(self, indices: Sequence[int]) -> None:
        """Keep only objects ``indices`` (in increasing order), renumbered 0..k-1."""
        indices = sorted(set(int(i) for i in indices))
        keep = set(indices)
        for i, entry in enumerate(self.entries):
            if i not in keep:
                (self.folder / entry["file"]).unlink()
        entries = []
        for new, old in enumerate(indices):
            entry = dict(self.entries[old], file=f"{OBJECTS}/{new:05d}.png")
            (self.folder / self.entries[old]["file"]).rename(self.folder / entry["file"])
            entries.append(entry)
        self.entries = entries

    def image(self, index: int) -> Image.Image:
        with Image.open(self.folder / self.entries[index]["file"]) as f:
            return f.convert("RGBA")

    def close(self, build: dict, sheet: Image.Image | None = None) -> None:
        manifest = {"version": VERSION, "count": len(self.entries), "build": build, "objects": self.entries}
        (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if sheet is not None:
            sheet.save(self.folder / SHEET, format="PNG")


@contextlib.contextmanager
def library_writer(folder: str | Path) -> Iterator[LibraryWriter]:
    """A :class:`LibraryWriter` on a temporary folder beside ``folder``, renamed onto it when the block ends
    without error (the caller must have called ``close``)."""
    with atomic_path(folder) as tmp:
        writer = LibraryWriter(tmp)
        yield writer
        if not (tmp / MANIFEST).is_file():
            raise RuntimeError("library_writer: close() was not called")


def write_library(folder: str | Path, objects: Sequence[tuple[Image.Image, dict]], build: dict,
                  sheet: Image.Image | None = None) -> Path:
    """Write ``objects`` (RGBA image, manifest entry) as a library at ``folder`` atomically; ``build``
    (JSON-able) records how it was made."""
    with library_writer(folder) as writer:
        for image, meta in objects:
            writer.add(image, meta)
        writer.close(build, sheet)
    return Path(folder)


class OccluderLibrary:
    """A loaded library: ``len(lib)`` objects, ``lib.entries[i]`` their manifest entries and
    ``lib.object(i)`` the RGBA image (read on first use, then cached; picklable, so DataLoader workers
    each read what they use)."""

    def __init__(self, folder: Path, entries: list[dict], build: dict, cache_size: int = 4096):
        self.folder = Path(folder)
        self.entries = entries
        self.build = build
        self.cache_size = cache_size
        self._cache: dict[int, Image.Image] = {}

    @classmethod
    def load(cls, folder: str | Path, *, verify: bool = True) -> "OccluderLibrary":
        """Open the library at ``folder``: the manifest must be readable and agree with the folder (every
        listed file present, and with ``verify`` its sha256 equal to the manifest's), with at least one
        object. Errors name the file and say how to rebuild."""
        folder = Path(folder)
        rebuild = "rebuild it: `dvc repro occluders` (or `python -m stages.occluders --dataset NAME`)"
        path = folder / MANIFEST
        if not folder.is_dir():
            raise OccreidError("occluder library folder not found", path=folder, fix=rebuild)
        if not path.is_file():
            raise OccreidError(f"no {MANIFEST} in the occluder library folder", path=folder, fix=rebuild)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise OccreidError(f"unreadable manifest: {e}", path=path, fix=rebuild) from None
        if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
            raise OccreidError(f"not an occluder manifest of version {VERSION}", path=path, fix=rebuild)
        objects = manifest.get("objects")
        if not isinstance(objects, list) or manifest.get("count") != len(objects):
            raise OccreidError("manifest 'objects' is not a list of 'count' entries", path=path, fix=rebuild)
        if not objects:
            raise OccreidError("the occluder library is empty (no mask passed the filters)", path=path,
                               fix="loosen occluders.filters or add source images, then rebuild")
        for i, entry in enumerate(objects):
            missing = [k for k in ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
            if missing:
                raise OccreidError(f"manifest entry {i} lacks {missing}", path=path, fix=rebuild)
            file = folder / entry["file"]
            if not file.is_file():
                raise OccreidError(f"object {i} listed in the manifest is missing", path=file, fix=rebuild)
            if verify and hashlib.sha256(file.read_bytes()).hexdigest() != entry["sha256"]:
                raise OccreidError(f"object {i} differs from the manifest (sha256)", path=file, fix=rebuild)
        return cls(folder, objects, manifest.get("build", {}))

    def __len__(self) -> int:
        return len(self.entries)

    def object(self, index: int) -> Image.Image:
        """Object ``index`` as an RGBA PIL image."""
        image = self._cache.get(index)
        if image is None:
            with Image.open(self.folder / self.entries[index]["file"]) as f:
                image = f.convert("RGBA")
            if len(self._cache) < self.cache_size:
                self._cache[index] = image
        return image

    def size(self, index: int) -> tuple[int, int]:
        """(height, width) of object ``index`` as stored."""
        h, w = self.entries[index].get("size") or self.object(index).size[::-1]
        return int(h), int(w)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}}  # workers start with an empty cache
