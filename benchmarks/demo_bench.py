"""Wall time of the demo and of each of its stages, as a first run on a clean checkout sees them.

Copies the project's pipeline files into a fresh folder (a clean clone: no data, no DVC cache, no MLflow
store), switches it to ``--profile`` (``occreid profile``: fast = ``make demo``, full = ``make demo-full``)
and runs ``dvc repro``, time-stamping every line DVC prints. A stage's wall time runs from its "Running stage"
line to the next one (or the end), so it includes DVC's own bookkeeping for it; "inside" is the time the
stage measured for its own work (train: the epochs of ``history.csv``; evaluate: ``metrics.json`` seconds =
feature extraction + scoring; prompts: ``meta.json`` seconds), and the difference is the stage's overhead
(Python start-up, imports, params validation, MLflow, loading data / model, checkpoints, DVC's bookkeeping). With
``--repeats N`` the demo runs N times in fresh folders and every time is the median over the runs.

Prints a Markdown table per stage, one per stage kind (count, median wall and overhead) and the totals.
``--log FILE`` re-reads the time-stamped log of an earlier run (written next to its folder) instead.

    python benchmarks/demo_bench.py                       # the fast demo once, in a temporary folder
    python benchmarks/demo_bench.py --profile full --keep /tmp/demo_full
    python benchmarks/demo_bench.py --keep /tmp/demo && python benchmarks/demo_bench.py --profile full --reuse /tmp/demo
    python benchmarks/demo_bench.py --log /tmp/demo_full/demo_bench.log --workdir /tmp/demo_full
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dag_fixtures import project_copy  # noqa: E402  (the pipeline files, as a clean clone has them)

RUNNING = re.compile(r"Running stage '([^']+)'")
LOG_NAME = "demo_bench.log"


def run_demo(workdir: Path, profile: str) -> tuple[list[tuple[float, str]], float]:
    """Run ``occreid profile`` + ``dvc repro`` in ``workdir``; (time-stamped output lines, wall seconds). The
    lines are also written to ``workdir/demo_bench.log`` (``<seconds since start>\\t<line>``; in a reused
    folder ``demo_bench.log.<profile>``)."""
    env = {**os.environ, "PYTHONPATH": str(workdir), "OCCREID_PROJECT_ROOT": str(workdir), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the project's own store, as a fresh clone has
    bin_dir = Path(sys.executable).parent
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    if not (workdir / ".dvc").is_dir():
        subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=workdir, env=env, check=True)
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    with open(workdir / f"{LOG_NAME}.{profile}" if (workdir / LOG_NAME).exists() else workdir / LOG_NAME, "w",
              encoding="utf-8") as log:
        for cmd in (["occreid", "profile", profile], ["dvc", "repro"]):
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
            for line in proc.stdout:
                t = time.perf_counter() - start
                for part in line.rstrip("\n").split("\r"):  # tqdm redraws with carriage returns
                    if part.strip():
                        lines.append((t, part))
                        log.write(f"{t:.3f}\t{part}\n")
                if RUNNING.search(line):
                    print(f"{t:7.1f} s  {RUNNING.search(line).group(0)}", flush=True)
            if proc.wait() != 0:
                raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode}); log: {workdir / LOG_NAME}")
        wall = time.perf_counter() - start
        log.write(f"{wall:.3f}\t[demo_bench] end\n")
    return lines, wall


def read_log(path: Path) -> tuple[list[tuple[float, str]], float]:
    lines = []
    for row in path.read_text(encoding="utf-8").split("\n"):  # not splitlines: a line may hold tqdm's \r redraws
        t, _, text = row.partition("\t")
        try:
            lines.append((float(t), text))
        except ValueError:  # not a time-stamped line (e.g. an empty last line)
            continue
    return lines, lines[-1][0] if lines else 0.0


def stage_walls(lines: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Job id → seconds from its "Running stage" line to the next job's (the last one: to ``end``)."""
    starts = [(t, m.group(1)) for t, text in lines if (m := RUNNING.search(text))]
    return {job: (starts[i + 1][0] if i + 1 < len(starts) else end) - t for i, (t, job) in enumerate(starts)}


def inside_seconds(workdir: Path, job: str) -> float | None:
    """The time the job measured for its own work, from its outputs (None when it records none): train, the
    epochs of ``history.csv``; evaluate, ``metrics.json`` seconds; prompts, ``meta.json`` seconds."""
    stage, _, key = job.partition("@")
    if stage == "train":
        path = workdir / f"data/train/{key}/history.csv"
        if not path.is_file():
            return None
        with open(path, newline="", encoding="utf-8") as f:
            return sum(float(row["seconds"]) for row in csv.DictReader(f) if row.get("seconds"))
    files = {"evaluate": workdir / f"reports/eval/{key}/metrics.json",
             "prompts": workdir / f"data/prompts/{key}/meta.json"}
    path = files.get(stage)
    if path is None or not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get("seconds")
    return float(value) if value is not None else None


def median_or_none(values: list[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return statistics.median(have) if have else None


def fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def report(runs: list[dict]) -> None:
    """Print the tables from ``runs`` (each: wall, walls per job, inside per job)."""
    jobs = list(runs[0]["walls"])
    rows = []
    for job in jobs:
        wall = median_or_none([r["walls"].get(job) for r in runs])
        inside = median_or_none([r["inside"].get(job) for r in runs])
        rows.append((job, wall, inside, None if inside is None or wall is None else wall - inside))
    total = statistics.median(r["wall"] for r in runs)
    staged = sum(w for _, w, _, _ in rows if w is not None)
    first = median_or_none([r["first"] for r in runs])
    print(f"\n{len(runs)} run(s); times are medians over runs, in seconds\n")
    print("| job | wall | inside | overhead |")
    print("|---|---:|---:|---:|")
    for job, wall, inside, over in rows:
        print(f"| {job} | {fmt(wall)} | {fmt(inside)} | {fmt(over)} |")
    print("\n| stage | jobs | wall (sum) | wall (median) | inside (median) | overhead (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    kinds: dict[str, list] = {}
    for row in rows:
        kinds.setdefault(row[0].partition("@")[0], []).append(row)
    for kind, group in kinds.items():
        walls = [w for _, w, _, _ in group if w is not None]
        print(f"| {kind} | {len(group)} | {sum(walls):.1f} | {fmt(median_or_none(walls))} | "
              f"{fmt(median_or_none([i for _, _, i, _ in group]))} | {fmt(median_or_none([o for *_, o in group]))} |")
    print(f"\ntotal wall {total:.1f} s ({total / 60:.1f} min): stages {staged:.1f} s, before the first stage "
          f"(occreid profile, dvc start-up) {fmt(first)} s")


def collect(lines, wall, workdir: Path) -> dict:
    walls = stage_walls(lines, wall)
    first = next((t for t, text in lines if RUNNING.search(text)), None)
    return {"wall": wall, "walls": walls, "inside": {j: inside_seconds(workdir, j) for j in walls}, "first": first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="fast", help="params.yaml profile: fast (make demo) or full (make demo-full)")
    ap.add_argument("--repeats", type=int, default=1, help="fresh runs; times are medians over them")
    ap.add_argument("--keep", type=Path, default=None, help="run in this folder (must not exist) and keep it")
    ap.add_argument("--reuse", type=Path, default=None,
                    help="run in this earlier run's folder (e.g. --profile full after the fast demo): only the "
                         "jobs the profile adds run, and only they are timed")
    ap.add_argument("--log", type=Path, default=None, help="re-read the log of an earlier run instead of running")
    ap.add_argument("--workdir", type=Path, default=None, help="with --log: the run's folder (for 'inside' times)")
    args = ap.parse_args()

    if args.log is not None:
        lines, wall = read_log(args.log)
        report([collect(lines, wall, args.workdir or args.log.parent)])
        return
    if args.reuse is not None:
        lines, wall = run_demo(args.reuse, args.profile)
        report([collect(lines, wall, args.reuse)])
        return
    runs = []
    for i in range(args.repeats):
        if args.keep is not None:
            workdir = args.keep if args.repeats == 1 else args.keep / f"run{i + 1}"
            if workdir.exists():
                raise SystemExit(f"{workdir} exists: give --keep a new folder")
            tmp = None
        else:
            tmp = tempfile.TemporaryDirectory(prefix="occreid-demo-")
            workdir = Path(tmp.name)
        project_copy(workdir, change=None)
        print(f"run {i + 1}/{args.repeats}: profile {args.profile} in {workdir}", flush=True)
        lines, wall = run_demo(workdir, args.profile)
        runs.append(collect(lines, wall, workdir))
        print(f"run {i + 1}: {wall:.1f} s", flush=True)
        if tmp is not None:
            tmp.cleanup()
    report(runs)


if __name__ == "__main__":
    main()
