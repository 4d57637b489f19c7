"""Test helpers for the data part: tiny fake datasets, archives (good and malicious) and a loopback HTTP server.

Everything is built under the test's ``tmp_path`` from 8x4 images, and the server listens on 127.0.0.1 with
an OS-chosen port, so no test touches the real network or real datasets.
"""

from __future__ import annotations

import io
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def forbid_real_network(monkeypatch) -> None:
    """Make any name lookup other than loopback fail, and keep proxies out of loopback requests, so a test
    that would reach the real network fails instead (the download code then reports a failed source)."""
    real = socket.getaddrinfo

    def loopback_only(host, *args, **kwargs):
        if host not in LOOPBACK_HOSTS:
            raise OSError(f"tests must not use the real network (tried {host})")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def jpeg_bytes(color: tuple[int, int, int] = (120, 60, 30)) -> bytes:
    """An 8 (high) x 4 (wide) JPEG."""
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), color).save(buf, format="JPEG")
    return buf.getvalue()


def write_images(folder: Path, names: list[str]) -> list[Path]:
    """Write a distinct tiny JPEG for every name (the colour encodes the index)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        path.write_bytes(jpeg_bytes((i * 37 % 256, i * 91 % 256, 200)))
        paths.append(path)
    return paths


def build_market_tree(root: Path, train: list[str], query: list[str], gallery: list[str]) -> Path:
    """A Market-layout folder with the given basenames."""
    write_images(root / "bounding_box_train", train)
    write_images(root / "query", query)
    write_images(root / "bounding_box_test", gallery)
    return root


# A small Market-1501 look-alike: 3 train ids (with gaps), junk and distractors in the gallery.
MINI_MARKET = {
    "train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s1_000101_01.jpg",
              "0011_c6s2_000201_02.jpg", "0011_c1s2_000301_01.jpg"],
    "query": ["0003_c1s1_000100_00.jpg", "0005_c4s1_000200_00.jpg"],
    "gallery": ["-1_c1s1_000001_00.jpg", "0000_c2s1_000002_00.jpg", "0003_c2s1_000300_01.jpg",
                "0005_c5s1_000400_01.jpg", "0000_c3s1_000003_00.jpg"],
}


def make_zip(folder: Path, archive: Path, prefix: str = "") -> Path:
    """Zip every file under ``folder``, stored under ``prefix/`` (as real archives nest their content)."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, f"{prefix}/{path.relative_to(folder)}" if prefix else str(path.relative_to(folder)))
    return archive


def make_tar(folder: Path, archive: Path, prefix: str = "") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=prefix or ".")
    return archive


def tar_with_member(archive: Path, info: tarfile.TarInfo, data: bytes = b"x") -> Path:
    """A tar.gz holding one harmless file and ``info`` (which may be malicious)."""
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("data/ok.txt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"ok"))
        if info.isreg():
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        else:
            tar.addfile(info)
    return archive


@dataclass
class Served:
    """One file the loopback server serves. ``cut_after`` bytes are sent before the connection is dropped,
    for the first ``cuts`` requests (a truncated transfer); ``ranges`` may be switched off."""

    data: bytes
    cut_after: int | None = None
    cuts: int = 0
    ranges: bool = True


@dataclass
class LoopbackServer:
    """``http.server`` in a thread on 127.0.0.1 (port 0): serves :class:`Served` files by path, honours
    ``Range: bytes=N-``, can cut responses short, and logs ``(path, range header)`` of every request."""

    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def __enter__(self) -> "LoopbackServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                f = server.files.get(self.path)
                if f is None:
                    self.send_error(404, "not found")
                    return
                start = 0
                if rng and f.ranges and rng.startswith("bytes="):
                    start = int(rng[len("bytes="):].split("-")[0])
                    if start >= len(f.data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(f.data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
                else:
                    self.send_response(200)
                body = f.data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if f.cut_after is not None and f.cuts > 0:
                    f.cuts -= 1
                    self.wfile.write(body[: f.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"


def toy_person_records(root: Path, num_ids: int, per_id: int, height: int, width: int, *, band_step: int,
                       band_height: int = 8) -> list:
    """``num_ids`` identities × ``per_id`` noisy images (2 cameras) in Market names under ``root``: each identity
    has its own upper/lower colours and a bright band at its own height (``band_step`` × pid), so a tiny model
    can tell them apart within a few steps. Seeded: the same arguments give the same pixels."""
    import numpy as np

    from occreid.data.records import Record

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for pid in range(num_ids):
        top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        for j in range(per_id):
            img = np.empty((height, width, 3))
            img[: height // 2], img[height // 2:] = top, bottom
            img[band_step * pid: band_step * pid + band_height] = 255
            img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
            path = root / f"{pid:04d}_c{j % 2 + 1}s1_{j:06d}_00.png"
            Image.fromarray(img).save(path)
            out.append(Record(str(path), pid, j % 2))
    return out


def noise_records(root: Path, num_ids: int, per_id: int, height: int, width: int, *, seed: int,
                  suffix: str = ".png") -> list:
    """``num_ids`` × ``per_id`` images of uniform noise (cameras alternate 0, 1) named ``<pid>_<j><suffix>``
    under ``root`` (JPEGs at quality 90): for loader tests, where only the pixels' path through the pipeline
    matters. Seeded: the same arguments give the same files."""
    import numpy as np

    from occreid.data.records import Record

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for pid in range(num_ids):
        for j in range(per_id):
            path = root / f"{pid}_{j}{suffix}"
            image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            image.save(path, **({"quality": 90} if suffix == ".jpg" else {}))
            out.append(Record(str(path), pid, j % 2))
    return out
