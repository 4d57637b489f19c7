"""How long does generating a synthocc dataset take? Median of N runs, printed as a Markdown table.

    python benchmarks/synthocc_bench.py                 # the default config, 3 runs
    python benchmarks/synthocc_bench.py --repeats 5 --num-train-ids 200 --num-test-ids 200

The default config must generate in well under 30 s on one core (the embedded demo regenerates it in
``prepare_data``); this prints the numbers to check that claim on the machine at hand. Each run writes
into a fresh temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# one core, as the claim says (set before numpy / torch load their thread pools)
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

from occreid.data.synthocc import SynthOccConfig, generate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    for field in dataclasses.fields(SynthOccConfig):
        if field.name != "seed":
            parser.add_argument(f"--{field.name.replace('_', '-')}", type=float if field.type == "float" else int,
                                default=None, help=f"override SynthOccConfig.{field.name}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(SynthOccConfig)
                 if getattr(args, f.name) is not None}
    cfg = SynthOccConfig(**overrides)
    images = sum(cfg.split_sizes().values())
    seconds = []
    with tempfile.TemporaryDirectory(prefix="synthocc-bench-") as tmp:
        for run in range(args.repeats):
            start = time.perf_counter()
            generate(Path(tmp) / f"run{run}", cfg)
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    label = "default" if not {k: v for k, v in overrides.items() if k != "seed"} else "custom"
    print(f"synthocc generation, {args.repeats} runs, {os.cpu_count()} CPUs visible, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print()
    print("| config | ids (train/test) | images | size | median s | min s | max s | images/s |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {label} | {cfg.num_train_ids}/{cfg.num_test_ids} | {images} | {cfg.height}x{cfg.width} "
          f"| {median:.2f} | {min(seconds):.2f} | {max(seconds):.2f} | {images / median:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
