"""Training-step time of the demo's models under torch's thread settings, on an idle and on a busy machine.

Why: torch runs its CPU ops on OpenMP threads (as many as cores). Between ops, idle OpenMP threads *spin*
(GNU OpenMP's default): on an idle 2-core machine that is the fastest, but when other processes want the
cores the two spinning threads fight them and a tiny model's step gets several times slower. Waiting
passively (``OMP_WAIT_POLICY=PASSIVE``, what the Snakefile sets for its jobs, which may run side by side;
``dvc repro`` runs one stage at a time and keeps OpenMP's default: ``stages/__init__.py``) or one thread avoids that. This prints, per setting, the median and the
best step time of the demo's ViT and DPM models (random batch of the demo's size; no data loading), first
on the machine as it is, then with ``--busy N`` CPU-bound background processes running (a loaded machine).
Each setting runs in its own process (OpenMP reads the variables at start-up).

    python benchmarks/threads_bench.py --busy 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # name -> (torch threads, extra environment)
    "1 thread": (1, {}),
    "2 threads, OpenMP's default wait (spin, then sleep; dvc repro)": (2, {}),
    "2 threads, passive wait (Snakemake jobs)": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, short spin (GOMP_SPINCOUNT=20000)": (2, {"GOMP_SPINCOUNT": "20000"}),
    "2 threads, short spin (GOMP_SPINCOUNT=2000)": (2, {"GOMP_SPINCOUNT": "2000"}),
}
DEMO_MODEL = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))["model"]["name"]
METHODS = {  # the demo's models (params.yaml's `model`): ViT baseline and DPM at 64x32, P x K = 8 x 4
    "vit": {"backbone": {"name": DEMO_MODEL, "img_size": [64, 32]}},
    "dpm": {"backbone": {"name": DEMO_MODEL, "img_size": [64, 32]}, "neck_feat": "after", "arc_margin": 0.2},
}


def child(method: str, threads: int, steps: int) -> None:
    """In a fresh process: time ``steps`` train steps, print [seconds...] as JSON."""
    import torch

    from occreid.engine import TrainContext, build_optimizer, seed_everything
    from occreid.engine.config import OptimizerConfig, TrainConfig
    from occreid.methods import create_method

    torch.set_num_threads(threads)
    seed_everything(0)
    model = create_method(method, METHODS[method], 40, 6)
    cfg = TrainConfig(ids_per_batch=8, images_per_id=4, optimizer=OptimizerConfig(name="adamw", lr=1e-3))
    ctx = TrainContext(device=torch.device("cpu"), optimizers={s.name: build_optimizer(s) for s in model.optimizers(cfg)},
                       epoch=5)
    model.train()
    batch = {"image": torch.randn(32, 3, 64, 32), "pid": torch.arange(8).repeat_interleave(4),
             "camid": torch.arange(32) % 6, "index": torch.arange(32)}
    times = []
    for _ in range(steps + 3):
        start = time.perf_counter()
        model.train_step(batch, ctx)
        times.append(time.perf_counter() - start)
    print(json.dumps(times[3:]))


def measure(method: str, threads: int, env: dict, steps: int) -> list[float]:
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):  # only what the setting says
        if name not in env:
            full_env.pop(name, None)
    out = subprocess.run([sys.executable, __file__, "--child", method, str(threads), str(steps)], env=full_env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10000))


def table(title: str, steps: int, repeats: int) -> None:
    print(f"\n{title}\n")
    print("| setting | " + " | ".join(f"{m} median ms | {m} best ms" for m in METHODS) + " |")
    print("|---|" + "---:|---:|" * len(METHODS))
    for name, (threads, env) in SETTINGS.items():
        cells = []
        for method in METHODS:
            times = [t for _ in range(repeats) for t in measure(method, threads, env, steps)]
            cells += [f"{statistics.median(times) * 1e3:.1f}", f"{min(times) * 1e3:.1f}"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=15, help="timed steps per process (after 3 warm-up)")
    ap.add_argument("--repeats", type=int, default=2, help="processes per setting and model")
    ap.add_argument("--busy", type=int, default=2, help="CPU-bound background processes for the second table "
                                                       "(0: skip it)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    print(f"{os.cpu_count()} CPUs; {DEMO_MODEL}, demo batch 32 x 3 x 64 x 32; each setting in its own process")
    table("The machine as it is (idle, if nothing else runs):", args.steps, args.repeats)
    if args.busy:
        stop = multiprocessing.Event()
        burners = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True) for _ in range(args.busy)]
        for p in burners:
            p.start()
        try:
            table(f"With {args.busy} CPU-bound background process(es):", args.steps, args.repeats)
        finally:
            stop.set()
            for p in burners:
                p.join()


if __name__ == "__main__":
    main()
