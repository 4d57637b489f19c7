"""Prepare a dataset: obtain it (URL + mirrors, local archive, folder, or the synthetic generator), check its
sha256, extract it safely, convert it to the layout the parsers read, parse it (bounds and published sizes)
and write ``<out_dir>/<name>/`` with ``manifest.json`` — the whole folder renamed into place at the end, so
a prepared folder is always complete.

Downloads and extractions are cached under ``<raw_dir>/<name>/`` (``.partial`` downloads resume, extractions
are keyed by the archive's sha256), so a failed run costs nothing already done.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from occreid.data.archive import safe_extract
from occreid.data.convert import (
    OCC_DUKE_LISTS,
    arrange_market_layout,
    arrange_msmt17,
    convert_occluded_duke,
    convert_occluded_reid,
)
from occreid.data.datasets import DATASETS, create_dataset
from occreid.data.download import DownloadOptions, fetch, verify_sha256
from occreid.data.manifest import build_manifest, write_manifest
from occreid.errors import OccreidError
from occreid.io import atomic_path

log = logging.getLogger(__name__)

SourceKind = Literal["synthetic", "url", "archive", "folder"]
_VOLATILE_SUMMARY_KEYS = frozenset({"seconds", "elapsed", "duration", "time"})


@dataclass
class DatasetSource:
    """Where one dataset comes from (params section ``datasets.<name>``; defaults in :data:`DEFAULT_SOURCES`).

    ``source``: ``synthetic`` (synthocc's generator, with ``generator`` params), ``url`` (``urls``: primary
    first, then mirrors; saved as ``filename`` or the URL's basename), ``archive`` (a local zip/tar at
    ``archive``) or ``folder`` (an extracted tree at ``folder``). ``sha256`` pins the archive; without it the
    hash is printed and accepted only with ``accept_unknown_hash``. ``check_counts`` compares split sizes
    with the published ones; ``verify_images`` decodes every image.
    Occluded-Duke only: ``duke`` is the DukeMTMC-reID source it is built from (set it to null to use an
    already converted Occluded-Duke given by the fields above), ``split_lists`` maps train/query/gallery to
    the URLs of the authors' name lists and ``split_list_sha256`` optionally pins them.
    """

    source: SourceKind = "url"
    urls: list[str] = field(default_factory=list)
    filename: str = ""
    archive: str = ""
    folder: str = ""
    sha256: str = ""
    accept_unknown_hash: bool = False
    check_counts: bool = True
    verify_images: bool = False
    split_lists: dict[str, list[str]] = field(default_factory=dict)
    split_list_sha256: dict[str, str] = field(default_factory=dict)
    duke: DatasetSource | None = None
    generator: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrepareConfig:
    """Settings of the ``prepare_data`` stage (params section ``prepare_data``)."""

    raw_dir: str = "data/raw"  # downloads, partial downloads and extractions (a cache)
    out_dir: str = "data/prepared"  # one prepared folder per dataset
    timeout: float = 60.0  # seconds without data before a download attempt fails
    retries: int = 3  # extra attempts per URL before the next mirror
    chunk_size: int = 1 << 20  # bytes per read while downloading
    retry_wait: float = 2.0  # seconds before the first retry (doubles each time)

    def download_options(self) -> DownloadOptions:
        return DownloadOptions(timeout=self.timeout, retries=self.retries, chunk_size=self.chunk_size,
                               retry_wait=self.retry_wait)


_LISTS_RAW = "https://raw.githubusercontent.com/lightas/{repo}/master/{folder}/{name}"
_DUKE = {
    "source": "url",
    # The official host withdrew DukeMTMC in 2019: usually set `archive:` to your own copy of this zip.
    "urls": ["http://vision.cs.duke.edu/DukeMTMC/data/misc/DukeMTMC-reID.zip"],
    "filename": "DukeMTMC-reID.zip",
}
# Defaults under each `datasets.<name>` params section (params values are merged over these).
DEFAULT_SOURCES: dict[str, dict[str, Any]] = {
    "market1501": {
        "source": "url",
        "urls": [
            "http://188.138.127.15:81/Datasets/Market-1501-v15.09.15.zip",
            "https://www.dropbox.com/s/5gypc42z6vdbbtu/Market-1501-v15.09.15.zip?dl=1",
        ],
        "filename": "Market-1501-v15.09.15.zip",
    },
    "dukemtmc": dict(_DUKE),
    "occluded_duke": {
        "duke": dict(_DUKE),
        # The split lists of Miao et al. (ICCV 2019), fetched at run time, never committed.
        "split_lists": {
            split: [
                _LISTS_RAW.format(repo="Occluded-DukeMTMC-Dataset", folder="Occluded_Duke", name=name),
                _LISTS_RAW.format(repo="ICCV19_Pose_Guided_Occluded_Person_ReID", folder="dataset/Occluded_Duke",
                                  name=name),
            ]
            for split, name in OCC_DUKE_LISTS.items()
        },
    },
    # No stable public download: obtain the archives from the authors and set `archive:`.
    "occluded_reid": {"source": "archive"},
    "msmt17": {"source": "archive"},
    "synthocc": {"source": "synthetic"},
}


def _url_filename(url: str) -> str:
    name = unquote(urlparse(url).path.rsplit("/", 1)[-1])
    return name or "download"


def obtain_tree(src: DatasetSource, raw: Path, key: str, cfg: PrepareConfig) -> tuple[Path, dict, dict[str, str]]:
    """The extracted folder for ``src`` (downloading/checking/extracting as needed), a description of the
    source for the manifest, and the sha256 of each archive used."""
    if src.source == "folder":
        if not src.folder:
            raise OccreidError("source is 'folder' but no folder is set", path=key, fix=f"set {key}.folder")
        folder = Path(src.folder)
        if not folder.is_dir():
            raise OccreidError("source folder not found", path=folder, fix=f"check {key}.folder")
        return folder, {"kind": "folder", "folder": str(folder)}, {}
    if src.source == "archive":
        if not src.archive:
            raise OccreidError(
                "source is 'archive' but no archive path is set (this dataset has no public download)",
                path=key,
                fix=f"obtain the archive from the dataset's authors and set {key}.archive to its path",
            )
        archive = Path(src.archive)
        if not archive.is_file():
            raise OccreidError("archive not found", path=archive, fix=f"check {key}.archive")
        sha = verify_sha256(archive, src.sha256, accept_unknown=src.accept_unknown_hash, where=f"{key}.sha256")
        info = {"kind": "archive", "archive": str(archive)}
    elif src.source == "url":
        dest = raw / (src.filename or _url_filename(src.urls[0] if src.urls else ""))
        sha, used = fetch(src.urls, dest, sha256=src.sha256, accept_unknown_hash=src.accept_unknown_hash,
                          where=f"{key}.sha256", opts=cfg.download_options())
        log.info("%s: %s (from %s)", key, dest, used)
        archive = dest
        # not the URL used: a cached file would record "cache" and change the manifest for nothing
        info = {"kind": "url", "urls": list(src.urls), "file": dest.name}
    else:
        raise OccreidError(f"source '{src.source}' is only for synthocc", path=key,
                           fix=f"set {key}.source to url, archive or folder")
    extracted = raw / "extracted" / f"{archive.name}-{sha[:12]}"
    if extracted.is_dir():
        log.info("using the earlier extraction %s", extracted)
    else:
        safe_extract(archive, extracted)
    return extracted, info, {archive.name: sha}


def fetch_split_lists(src: DatasetSource, raw: Path, cfg: PrepareConfig) -> tuple[dict[str, Path], dict[str, str]]:
    """Download Occluded-Duke's three name lists (mirror fallback); their hashes go to the manifest.

    Unpinned lists are accepted: their content is checked by name parsing and the published split sizes.
    """
    paths, shas = {}, {}
    for split, name in OCC_DUKE_LISTS.items():
        key = f"datasets.occluded_duke.split_lists.{split}"
        urls = src.split_lists.get(split, [])
        if not urls:
            raise OccreidError(f"no URL for the '{split}' split list", path=key, fix=f"set {key} to a list of URLs")
        dest = raw / "lists" / name
        pinned = src.split_list_sha256.get(split, "")
        shas[name], _ = fetch(urls, dest, sha256=pinned, accept_unknown_hash=not pinned,
                              where=f"datasets.occluded_duke.split_list_sha256.{split}", opts=cfg.download_options())
        paths[split] = dest
    return paths, shas


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj, default=str))


def prepare_dataset(
    name: str, src: DatasetSource, cfg: PrepareConfig, *, generator_config: Any | None = None
) -> Path:
    """Build ``<cfg.out_dir>/<name>/`` (replacing an older one only once the new one is complete).

    ``generator_config`` is the ``SynthOccConfig`` for ``source: synthetic`` (default config when None).
    """
    spec = DATASETS.get(name)
    key = f"datasets.{name}"
    raw = Path(cfg.raw_dir) / name
    target = Path(cfg.out_dir) / name
    params: dict[str, Any] = {"source": _jsonable(src)}
    shas: dict[str, str] = {}
    with atomic_path(target) as tmp:
        if src.source == "synthetic" and name == "synthocc":
            info, params["generator"] = _generate(tmp, generator_config)
        else:
            tmp.mkdir()
            if name == "occluded_duke" and src.duke is not None:
                if src.urls or src.archive or src.folder:
                    raise OccreidError("both a DukeMTMC-reID source (duke) and a converted Occluded-Duke are set",
                                       path=key, fix=f"set {key}.duke: null to use the converted one, or remove it")
                duke_tree, duke_info, shas = obtain_tree(src.duke, Path(cfg.raw_dir) / "dukemtmc", f"{key}.duke", cfg)
                lists, list_shas = fetch_split_lists(src, raw, cfg)
                shas.update(list_shas)
                convert_occluded_duke(duke_tree, lists, tmp)
                info = {"kind": "converted", "duke": duke_info}  # the list URLs are in params, their hashes in sha256
            else:
                tree, info, shas = obtain_tree(src, raw, key, cfg)
                if name == "msmt17":
                    arrange_msmt17(tree, tmp)
                elif name == "occluded_reid":
                    convert_occluded_reid(tree, tmp)
                else:
                    arrange_market_layout(tree, tmp, what=spec.title or name, has_train=spec.has_train)
        splits = create_dataset(name, tmp, check_counts=src.check_counts, verify_images=src.verify_images)
        write_manifest(tmp, build_manifest(splits, source=info, sha256=shas, params=params))
    log.info("prepared %s in %s: %s (manifest: %s)", name, target, splits.summary(), target / "manifest.json")
    return target


def _generate(out: Path, generator_config: Any | None) -> tuple[dict, dict]:
    try:
        from occreid.data.synthocc import SynthOccConfig, generate
    except ImportError as e:
        raise OccreidError(f"the synthocc generator cannot be imported ({e})", path="occreid/data/synthocc",
                           fix="install the package completely (pip install -e .)") from None
    config = generator_config if generator_config is not None else SynthOccConfig()
    log.info("generating synthocc into %s", out)
    summary = _jsonable(generate(out, config))
    # timings differ run to run: kept out so the same config gives the same manifest bytes
    if isinstance(summary, dict):
        summary = {k: v for k, v in summary.items() if k not in _VOLATILE_SUMMARY_KEYS}
    return {"kind": "synthetic", "summary": summary}, _jsonable(config)
