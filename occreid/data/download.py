"""Resumable downloads with mirror fallback and sha256 checks, on the standard library's urllib alone.

Dataset archives are gigabytes on slow academic servers: a dropped connection must not cost the part already
received. Bytes go to ``<dest>.partial``, which survives across runs; the next attempt asks for the rest with
an HTTP ``Range`` header and appends. Only a complete file is renamed to ``dest``. Each URL is tried
``retries + 1`` times (with back-off), then the next mirror; a file whose sha256 does not match is deleted and
the next mirror tried, so one corrupt mirror does not stop the run.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from occreid.errors import OccreidError

log = logging.getLogger(__name__)
USER_AGENT = "occreid-prepare/0.1 (+urllib)"


@dataclass(frozen=True)
class DownloadOptions:
    timeout: float = 60.0  # seconds without data before a connection counts as failed
    retries: int = 3  # extra attempts per URL before moving to the next mirror
    chunk_size: int = 1 << 20
    retry_wait: float = 2.0  # seconds before the first retry; doubles each time


class ChecksumMismatch(OccreidError):
    """The file's sha256 differs from the one in params."""


class _Retryable(Exception):
    """A failure worth retrying (truncation, timeout, 5xx)."""


class _Permanent(Exception):
    """A failure that retrying the same URL cannot fix (404, 403, ...)."""


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".partial")


def _content_range_total(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(m.group(1)) if m else None


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"bytes\s+(\d+)-\d+/", value or "")
    return int(m.group(1)) if m else None


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416:
            return e  # the caller decides: complete already, or a changed remote file
        if e.code in (408, 429) or e.code >= 500:
            raise _Retryable(f"HTTP {e.code} {e.reason}") from None
        raise _Permanent(f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Retryable(str(getattr(e, "reason", e))) from None


def _download_once(url: str, dest: Path, opts: DownloadOptions) -> None:
    """One attempt: continue ``<dest>.partial`` from where it stopped; rename to ``dest`` when complete."""
    part = partial_path(dest)
    offset = part.stat().st_size if part.exists() else 0
    resp = _open(url, offset, opts.timeout)
    if isinstance(resp, urllib.error.HTTPError):  # 416: nothing left to send from `offset`
        total = _content_range_total(resp.headers.get("Content-Range"))
        if total == offset:
            os.replace(part, dest)
            return
        part.unlink()
        raise _Retryable(f"partial file ({offset} bytes) does not fit the remote file ({total} bytes); restarting")
    with resp:
        if resp.status == 206:
            if _content_range_start(resp.headers.get("Content-Range")) != offset:
                part.unlink(missing_ok=True)
                raise _Retryable(f"the server sent another byte range than requested; restarting {dest.name}")
            mode, total = "ab", _content_range_total(resp.headers.get("Content-Range"))
            log.info("resuming %s at byte %d", dest.name, offset)
        else:
            if offset:
                log.info("%s ignored the Range request: downloading %s from the start", url, dest.name)
            offset, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        expected = None if total is None else total - offset
        received = 0
        with part.open(mode) as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, leave=False
        ) as bar:
            try:
                while chunk := resp.read(opts.chunk_size):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as e:
                raise _Retryable(f"connection lost after {offset + received} bytes ({e})") from None
    if expected is not None and received < expected:
        raise _Retryable(f"connection closed after {offset + received} of {total} bytes")
    os.replace(part, dest)


def download(url: str, dest: Path, opts: DownloadOptions) -> None:
    """Download ``url`` to ``dest`` with ``opts.retries`` retries, resuming a previous ``.partial``.

    Raises :class:`OccreidError` when every attempt failed; the ``.partial`` file is kept for the next run.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(opts.retries + 1):
        try:
            log.info("downloading %s -> %s (attempt %d/%d)", url, dest, attempt + 1, opts.retries + 1)
            _download_once(url, dest, opts)
            return
        except _Permanent as e:
            last = str(e)
            break
        except _Retryable as e:
            last = str(e)
            log.warning("%s: %s", url, e)
            if attempt < opts.retries:
                time.sleep(opts.retry_wait * 2**attempt)
    part = partial_path(dest)
    kept = f"; {part.stat().st_size} bytes kept in {part.name}, the next run resumes" if part.exists() else ""
    raise OccreidError(
        f"download of {url} failed: {last}{kept}",
        path=dest,
        fix="check the network and the URL (or add a mirror to the urls list), then re-run; or download the "
        "file by hand and set source: archive with its path",
    )


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks with a progress bar (archives are gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=f"sha256 {path.name}", leave=False
    ) as bar:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, *, accept_unknown: bool, where: str) -> str:
    """Check ``path`` against ``expected`` (the value of params key ``where``); with no expected hash, report
    the actual one and accept it only when ``accept_unknown`` — otherwise the error prints the hash to paste."""
    actual = sha256_file(path)
    section = where.rsplit(".", 1)[0]
    if expected:
        if actual != expected.strip().lower():
            raise ChecksumMismatch(
                f"sha256 mismatch: expected {expected.strip().lower()}, got {actual}",
                path=path,
                fix="the file is corrupt or a different release: delete it and download it again; if it is a "
                f"genuine new release, update {where}",
            )
        log.info("sha256 of %s verified (%s)", path.name, actual)
        return actual
    if not accept_unknown:
        raise OccreidError(
            f"no sha256 in params to check this file against; its sha256 is {actual}",
            path=path,
            fix=f"paste it into params.yaml as {where}: {actual}   (or set {section}.accept_unknown_hash: true)",
        )
    log.warning("no sha256 given for %s; accepted with sha256 %s (pin it as %s)", path, actual, where)
    return actual


def fetch(
    urls: Sequence[str],
    dest: Path,
    *,
    sha256: str,
    accept_unknown_hash: bool,
    where: str,
    opts: DownloadOptions,
) -> tuple[str, str]:
    """Make ``dest`` a verified copy of the file at the first URL (then mirrors) that delivers it.

    A complete ``dest`` from an earlier run is re-checked, not re-downloaded. Returns ``(sha256, source)``
    where source is the URL used (or ``"cache"``).
    """
    if not urls:
        raise OccreidError(
            "no URL to download from",
            path=dest,
            fix=f"set {where.rsplit('.', 1)[0]}.urls (primary first, then mirrors), "
            "or source: archive with a local file",
        )
    if dest.is_file():
        try:
            return verify_sha256(dest, sha256, accept_unknown=accept_unknown_hash, where=where), "cache"
        except ChecksumMismatch as e:
            log.warning("%s; downloading it again", e.problem)
            dest.unlink()
    failures = []
    for url in urls:
        try:
            download(url, dest, opts)
            return verify_sha256(dest, sha256, accept_unknown=accept_unknown_hash, where=where), url
        except ChecksumMismatch as e:
            dest.unlink()
            failures.append(f"{url}: {e.problem} (file deleted)")
        except OccreidError as e:
            if dest.is_file():  # downloaded, but the hash is unknown and not accepted: keep it, stop here
                raise
            failures.append(f"{url}: {e.problem}")
        log.warning("%s", failures[-1])
    raise OccreidError(
        "every source failed:\n    " + "\n    ".join(failures),
        path=dest,
        fix="re-run to resume partial downloads; if the checksum fails everywhere, check "
        f"{where}; or download the file by hand and set source: archive",
    )
