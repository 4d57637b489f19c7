"""A stage run as its own process ends through stages.common.exit_now: exit status 0, its atexit handlers run and
its buffered output reaches the pipe; run in-process (tests, the occreid CLI) it returns normally."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stages import common

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import atexit, sys
from stages import common

def main(argv):
    atexit.register(lambda: open(sys.argv[1], "w").write("atexit ran"))
    sys.stdout.write("no newline, still buffered")

common.run(main)
raise SystemExit(3)  # not reached: run() ends the process
"""


def test_a_stage_process_ends_fast_with_its_atexit_handlers_and_output(tmp_path):
    marker = tmp_path / "marker"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(marker)], cwd=ROOT, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "no newline, still buffered"
    assert marker.read_text() == "atexit ran"


def test_in_process_run_returns():
    seen = []
    common.run(seen.append, ["--x"])  # a main defined outside __main__: no exit
    assert seen == [["--x"]]
