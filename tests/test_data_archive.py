"""Safe extraction: good zip/tar round trips; path escapes, links out and device files refused before writing."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from data_fixtures import make_tar, make_zip, tar_with_member

from occreid.data.archive import safe_extract
from occreid.errors import OccreidError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "one.txt").write_bytes(b"1")
    (root / "a" / "b" / "two.bin").write_bytes(bytes(range(50)))
    return root


@pytest.mark.parametrize("maker", [make_zip, make_tar])
def test_round_trip(tmp_path, src, maker):
    archive = maker(src, tmp_path / "x.archive", "top")
    out = safe_extract(archive, tmp_path / "out")
    assert _tree(out / "top") == _tree(src)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no temporary left


def test_existing_target_is_replaced_only_when_complete(tmp_path, src):
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    safe_extract(make_zip(src, tmp_path / "x.zip"), out)
    assert not (out / "old").exists() and (out / "a" / "one.txt").read_bytes() == b"1"
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("fine.txt", "x")
        zf.writestr("../evil", "x")
    with pytest.raises(OccreidError):
        safe_extract(bad, out)
    assert (out / "a" / "one.txt").read_bytes() == b"1"  # the old extraction is untouched


@pytest.mark.parametrize("name, why", [("../evil", "'..'"), ("a/../../evil", "'..'"), ("/tmp/evil", "absolute"),
                                       ("C:/evil", "absolute")])
def test_zip_escapes_refused(tmp_path, name, why):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", "ok")
        zf.writestr(name, "pwned")
    with pytest.raises(OccreidError, match=f"unsafe archive member '{name}'.*{why}") as e:
        safe_extract(archive, tmp_path / "dest" / "out")
    assert e.value.path == str(archive)
    assert "nothing was extracted" in e.value.message
    assert not (tmp_path / "dest" / "out").exists() and not (tmp_path / "dest" / "evil").exists()
    assert not (tmp_path / "evil").exists()


def test_zip_symlink_refused(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("data/link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(OccreidError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    "info, match",
    [
        (_member("../evil"), "path with '..'"),
        (_member("/abs/evil"), "absolute path"),
        (_member("data/link", tarfile.SYMTYPE, "../../etc/passwd"), "symlink to '../../etc/passwd' leaves"),
        (_member("data/link", tarfile.SYMTYPE, "/etc/passwd"), "symlink to '/etc/passwd' leaves"),
        (_member("data/hard", tarfile.LNKTYPE, "../outside"), "'..'"),
        (_member("data/dev", tarfile.CHRTYPE), "device file"),
        (_member("data/fifo", tarfile.FIFOTYPE), "device file or FIFO"),
    ],
)
def test_tar_escapes_refused(tmp_path, info, match):
    archive = tar_with_member(tmp_path / "bad.tar.gz", info)
    with pytest.raises(OccreidError, match=match):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz"]


def test_tar_links_inside_are_kept(tmp_path):
    archive = tmp_path / "ok.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        f = tarfile.TarInfo("d/file.txt")
        f.size = 3
        tar.addfile(f, io.BytesIO(b"abc"))
        tar.addfile(_member("d/sub/link", tarfile.SYMTYPE, "../file.txt"))
        tar.addfile(_member("d/hard", tarfile.LNKTYPE, "d/file.txt"))
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "d" / "sub" / "link").read_bytes() == b"abc"
    assert (out / "d" / "hard").read_bytes() == b"abc"


def test_not_an_archive_and_truncated(tmp_path, src):
    html = tmp_path / "page.zip"
    html.write_text("<html>quota exceeded</html>")
    with pytest.raises(OccreidError, match="not a zip or tar archive"):
        safe_extract(html, tmp_path / "out")
    with pytest.raises(OccreidError, match="archive not found"):
        safe_extract(tmp_path / "missing.zip", tmp_path / "out")
    full = make_tar(src, tmp_path / "x.tar.gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(full[: len(full) // 2])
    with pytest.raises(OccreidError, match="damaged|not a zip or tar"):
        safe_extract(cut, tmp_path / "out")
    assert not (tmp_path / "out").exists()
