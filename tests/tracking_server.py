"""Test helper: a real ``mlflow server`` on a free loopback port, with a SQLite backend and a served artifact
folder, stopped (its whole process group) when the block ends.

The server's background job runner (a handful of huey consumer processes, for GenAI jobs) is switched off
with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: it does nothing for tracking and would double the start-up
time on a small machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MLFLOW = Path(sys.executable).parent / "mlflow"


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it; closed again before returning)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass
class Server:
    uri: str
    backend: Path  # the SQLite file
    artifacts: Path  # where the server stores artifacts (--artifacts-destination)
    log: Path


@contextlib.contextmanager
def mlflow_server(folder: Path, start_timeout: float = 120.0) -> Iterator[Server]:
    """Start ``mlflow server`` for ``folder`` and yield it once ``/health`` answers; a port taken between
    choosing and binding it is retried with another one."""
    folder.mkdir(parents=True, exist_ok=True)
    backend, artifacts, log = folder / "mlflow.db", folder / "artifacts", folder / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for _ in range(3):
        port = free_port()
        uri = f"http://127.0.0.1:{port}"
        cmd = [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{backend}", "--artifacts-destination",
               str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder,
                                    start_new_session=True)
        try:
            deadline = time.monotonic() + start_timeout
            while proc.poll() is None and not healthy(uri):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"mlflow server not healthy after {start_timeout:g} s:\n"
                                       f"{log.read_text()[-3000:]}")
                time.sleep(0.25)
            if proc.poll() is None:
                yield Server(uri, backend, artifacts, log)
                return
            if "already in use" not in log.read_text():
                raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        finally:
            stop(proc)
    raise RuntimeError("no free port for mlflow server after 3 tries")


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the server's process group (uvicorn runs as a child), SIGKILL what is left after ``grace``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
