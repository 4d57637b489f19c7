"""Safe extraction of zip and tar(.gz/.bz2/.xz) archives.

An archive from a mirror is untrusted input: a member named ``../../.bashrc`` or ``/etc/passwd``, or a
symlink pointing out of the target, would write outside the data folder. Every member is checked *before*
anything is written (absolute paths, ``..``, links leaving the target, device files and FIFOs are refused),
then the archive is extracted into a temporary folder that is renamed onto the target only when complete —
an interrupted extraction never looks finished.
"""

from __future__ import annotations

import logging
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from occreid.errors import OccreidError
from occreid.io import atomic_path

log = logging.getLogger(__name__)


def _unsafe(archive: Path, member: str, why: str) -> OccreidError:
    return OccreidError(
        f"unsafe archive member '{member}': {why}; nothing was extracted",
        path=archive,
        fix="do not use this archive: it would write outside its folder. Download it again from the "
        "official source and check its sha256",
    )


def _check_member_path(archive: Path, name: str) -> PurePosixPath:
    """The member's path, or an error when it is absolute or climbs out with ``..``."""
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if posix.startswith("/") or path.is_absolute() or (len(posix) > 1 and posix[1] == ":"):
        raise _unsafe(archive, name, "absolute path")
    if ".." in path.parts:
        raise _unsafe(archive, name, "path with '..'")
    return path


def _inside(base: PurePosixPath, target: str) -> bool:
    """Whether ``target`` (relative to folder ``base`` of the archive) stays inside the archive root."""
    if target.startswith("/"):
        return False
    depth = len(base.parts)
    for part in PurePosixPath(target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part != ".":
            depth += 1
    return True


def _check_tar(archive: Path, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        path = _check_member_path(archive, m.name)
        if m.issym() and not _inside(path.parent, m.linkname):
            raise _unsafe(archive, m.name, f"symlink to '{m.linkname}' leaves the archive")
        if m.islnk():
            _check_member_path(archive, m.linkname)
            if not _inside(PurePosixPath(), m.linkname):
                raise _unsafe(archive, m.name, f"hard link to '{m.linkname}' leaves the archive")
        if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
            raise _unsafe(archive, m.name, "device file or FIFO")
    return members


def _check_zip(archive: Path, zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = zf.infolist()
    for m in members:
        _check_member_path(archive, m.filename)
        mode = m.external_attr >> 16
        if stat.S_ISLNK(mode):
            # zipfile would write the link target as a file's text; no dataset ships links in a zip.
            raise _unsafe(archive, m.filename, "symbolic link in a zip archive")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            raise _unsafe(archive, m.filename, "device file or FIFO")
    return members


def archive_kind(archive: Path) -> str:
    """``"zip"`` or ``"tar"``, from the content (not the name); an error for anything else."""
    if not archive.is_file():
        raise OccreidError("archive not found", path=archive, fix="check the archive path in params")
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise OccreidError(
        "not a zip or tar archive (or it is truncated)",
        path=archive,
        fix="download it again (a truncated file or an HTML error page saved as the archive looks like this)",
    )


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract ``archive`` into ``dest`` (created atomically; an existing ``dest`` is replaced)."""
    archive, dest = Path(archive), Path(dest)
    kind = archive_kind(archive)
    log.info("extracting %s -> %s", archive, dest)
    try:
        with atomic_path(dest) as tmp:
            tmp.mkdir()
            if kind == "zip":
                with zipfile.ZipFile(archive) as zf:
                    for m in tqdm(_check_zip(archive, zf), desc=f"extract {archive.name}", unit="file", leave=False):
                        zf.extract(m, tmp)
            else:
                with tarfile.open(archive) as tar:
                    for m in tqdm(_check_tar(archive, tar), desc=f"extract {archive.name}", unit="file", leave=False):
                        tar.extract(m, tmp, filter="data")  # second line of defence; also drops odd modes
    except tarfile.FilterError as e:
        raise _unsafe(archive, e.tarinfo.name, str(e)) from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise OccreidError(
            f"cannot extract ({type(e).__name__}: {e})",
            path=archive,
            fix="the archive is damaged or incomplete: delete it and download it again",
        ) from None
    except OSError as e:
        raise OccreidError(
            f"cannot write the extracted files ({e})",
            path=dest,
            fix="check free disk space and permissions of the raw data folder (prepare_data.raw_dir)",
        ) from None
    return dest
