"""Downloads against a loopback HTTP server: resume after truncation, mirrors, sha256 checks."""

from __future__ import annotations

import hashlib
import os

import pytest
from data_fixtures import LoopbackServer, Served, forbid_real_network

from occreid.data.download import (
    ChecksumMismatch,
    DownloadOptions,
    download,
    fetch,
    partial_path,
    sha256_file,
    verify_sha256,
)
from occreid.errors import OccreidError

DATA = bytes(range(256)) * 40  # 10,240 bytes
SHA = hashlib.sha256(DATA).hexdigest()
FAST = DownloadOptions(timeout=5, retries=0, chunk_size=1000, retry_wait=0)
KEY = "datasets.market1501.sha256"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    forbid_real_network(monkeypatch)


def test_sha256_file_known_answer(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    assert sha256_file(p, chunk_size=1) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_verify_sha256_mismatch_and_case(tmp_path):
    p = tmp_path / "abc"
    p.write_bytes(b"abc")
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert verify_sha256(p, abc.upper(), accept_unknown=False, where=KEY) == abc
    with pytest.raises(ChecksumMismatch, match=f"expected {'0' * 64}, got {abc}") as e:
        verify_sha256(p, "0" * 64, accept_unknown=True, where=KEY)  # a given hash is always enforced
    assert e.value.path == str(p) and KEY in e.value.fix


def test_plain_download(tmp_path):
    with LoopbackServer({"/a.zip": Served(DATA)}) as srv:
        download(srv.url("/a.zip"), tmp_path / "a.zip", FAST)
    assert (tmp_path / "a.zip").read_bytes() == DATA
    assert not partial_path(tmp_path / "a.zip").exists()
    assert srv.requests == [("/a.zip", None)]


def test_truncated_download_resumes_on_next_attempt(tmp_path):
    dest = tmp_path / "a.zip"
    with LoopbackServer({"/a.zip": Served(DATA, cut_after=3000, cuts=1)}) as srv:
        with pytest.raises(OccreidError, match="connection closed after 3000 of 10240 bytes") as e:
            download(srv.url("/a.zip"), dest, FAST)
        assert "3000 bytes kept in a.zip.partial, the next run resumes" in e.value.message
        assert not dest.exists() and partial_path(dest).stat().st_size == 3000
        download(srv.url("/a.zip"), dest, FAST)  # the next run
    assert srv.requests == [("/a.zip", None), ("/a.zip", "bytes=3000-")]
    assert dest.read_bytes() == DATA


def test_retries_within_one_call_resume(tmp_path):
    opts = DownloadOptions(timeout=5, retries=3, chunk_size=500, retry_wait=0)
    with LoopbackServer({"/a": Served(DATA, cut_after=2000, cuts=2)}) as srv:
        download(srv.url("/a"), tmp_path / "a", opts)
    # 2000 bytes, then 2000 more from 2000, then the rest from 4000
    assert [r for _, r in srv.requests] == [None, "bytes=2000-", "bytes=4000-"]
    assert (tmp_path / "a").read_bytes() == DATA


def test_server_ignoring_range_restarts_from_zero(tmp_path):
    dest = tmp_path / "a"
    partial_path(dest).write_bytes(b"garbage that must not be kept")
    with LoopbackServer({"/a": Served(DATA, ranges=False)}) as srv:
        download(srv.url("/a"), dest, FAST)
    assert srv.requests[0][1] == "bytes=29-"
    assert dest.read_bytes() == DATA


def test_complete_partial_gets_416_and_is_accepted(tmp_path):
    dest = tmp_path / "a"
    partial_path(dest).write_bytes(DATA)
    with LoopbackServer({"/a": Served(DATA)}) as srv:
        download(srv.url("/a"), dest, FAST)
    assert dest.read_bytes() == DATA


def test_404_is_not_retried(tmp_path):
    opts = DownloadOptions(timeout=5, retries=3, retry_wait=0)
    with LoopbackServer() as srv:
        with pytest.raises(OccreidError, match="HTTP 404"):
            download(srv.url("/missing"), tmp_path / "m", opts)
    assert len(srv.requests) == 1


def test_fetch_mirror_fallback_after_404(tmp_path):
    with LoopbackServer({"/mirror/a": Served(DATA)}) as srv:
        sha, used = fetch([srv.url("/a"), srv.url("/mirror/a")], tmp_path / "a", sha256=SHA,
                          accept_unknown_hash=False, where=KEY, opts=FAST)
    assert (sha, used) == (SHA, srv.url("/mirror/a"))


def test_fetch_checksum_mismatch_clear_message(tmp_path):
    corrupt = DATA[:-1] + b"\0"
    with LoopbackServer({"/a": Served(corrupt)}) as srv:
        with pytest.raises(OccreidError) as e:
            fetch([srv.url("/a")], tmp_path / "a", sha256=SHA, accept_unknown_hash=False, where=KEY, opts=FAST)
    msg = e.value.message
    assert f"sha256 mismatch: expected {SHA}, got {hashlib.sha256(corrupt).hexdigest()}" in msg
    assert "file deleted" in msg and not (tmp_path / "a").exists()


def test_fetch_corrupt_primary_good_mirror(tmp_path):
    with LoopbackServer({"/a": Served(b"corrupt"), "/m/a": Served(DATA)}) as srv:
        sha, used = fetch([srv.url("/a"), srv.url("/m/a")], tmp_path / "a", sha256=SHA.upper(),
                          accept_unknown_hash=False, where=KEY, opts=FAST)
    assert used.endswith("/m/a") and (tmp_path / "a").read_bytes() == DATA


def test_fetch_unknown_hash_reported_and_refused_then_accepted(tmp_path):
    dest = tmp_path / "a"
    with LoopbackServer({"/a": Served(DATA)}) as srv:
        with pytest.raises(OccreidError, match=f"its sha256 is {SHA}") as e:
            fetch([srv.url("/a")], dest, sha256="", accept_unknown_hash=False, where=KEY, opts=FAST)
        assert f"{KEY}: {SHA}" in e.value.fix and "datasets.market1501.accept_unknown_hash: true" in e.value.fix
        assert dest.read_bytes() == DATA  # kept: pasting the hash must not cost a new download
        sha, used = fetch([srv.url("/a")], dest, sha256="", accept_unknown_hash=True, where=KEY, opts=FAST)
        assert (sha, used) == (SHA, "cache")
        assert len(srv.requests) == 1


def test_fetch_cached_corrupt_file_is_downloaded_again(tmp_path):
    dest = tmp_path / "a"
    dest.write_bytes(b"stale")
    with LoopbackServer({"/a": Served(DATA)}) as srv:
        assert fetch([srv.url("/a")], dest, sha256=SHA, accept_unknown_hash=False, where=KEY, opts=FAST)[0] == SHA
    assert dest.read_bytes() == DATA


def test_fetch_without_urls(tmp_path):
    with pytest.raises(OccreidError, match="no URL") as e:
        fetch([], tmp_path / "a", sha256="", accept_unknown_hash=True, where=KEY, opts=FAST)
    assert "datasets.market1501.urls" in e.value.fix


def test_real_network_is_refused_in_tests(tmp_path):
    with pytest.raises(OccreidError, match="tests must not use the real network"):
        download("http://example.org/a.zip", tmp_path / "a", FAST)


def test_unreachable_host_keeps_nothing(tmp_path):
    # a port nobody listens on (bind then close) -> connection refused, reported per URL
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(OccreidError, match="every source failed"):
        fetch([f"http://127.0.0.1:{port}/a"], tmp_path / "a", sha256=SHA, accept_unknown_hash=False,
              where=KEY, opts=FAST)
    assert os.listdir(tmp_path) == []
