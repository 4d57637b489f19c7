"""How much a demo training iteration costs beyond the bare model step: the input pipeline's share.

For each experiment of params.yaml (built exactly as the train stage builds it: resolved config, method,
its own dataset and sampler for DPM++), measures in one process

- the bare step: median seconds of ``method.train_step`` on one fixed batch from the experiment's loader
  (the cost of benchmarks/train_step_bench.py, on the experiment's real model and batch),
- a real epoch through :func:`occreid.engine.fit` (loader + step + bookkeeping, what history.csv's
  ``seconds`` holds) per iteration, with the decoded-image cache (``train.loader.cache: on``, the default
  for small datasets) and without it (``off``: decode + per-image transforms every epoch),

and prints their ratio (the issue's target: a demo iteration within 1.3× of the bare step). Timings on a
shared machine are noisy; the ratios are measured in the same run. The CLIP rows need the prompts (and
DPM++ the partner table): ``dvc repro prompts@synthocc spt_sets@synthocc-default`` first.

    python benchmarks/step_overhead_bench.py --experiments vit clipreid dpm dpmpp --epochs 3 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(experiment: str, params_path: str):
    """(method, train config, training records) of ``experiment`` as stages/train.py builds them."""
    from occreid.data.datasets import create_dataset
    from occreid.engine.seeding import seed_everything
    from occreid.methods import create_method
    from stages import common
    from stages.registry import variant_sections
    from stages.train import PREPARED, with_inputs

    params = common.load("train", experiment, params_path)
    spec = params.get(f"experiments.{experiment}")
    resolved = params.experiment(experiment, ("methods", "train"))
    variants = {s: params.job.ctx[f"{s}_variant"] for s in variant_sections()}
    method_cfg = with_inputs(resolved["methods"], spec["dataset"], variants)
    for name in ("text_features", "spt_partners"):
        path = getattr(method_cfg, name, None)
        if path is not None and not Path(path).exists():
            raise SystemExit(f"{experiment}: {path} is missing; run its DAG inputs first (dvc repro prompts@... "
                             "spt_sets@...)")
    splits = create_dataset(spec["dataset"], PREPARED / spec["dataset"], check_counts=False)
    seed_everything(resolved["train"].seed)
    method = create_method(spec["method"], method_cfg, splits.num_train_pids, splits.num_cams)
    return method, resolved["train"], splits.train


def bare_step(method, cfg, records, repeats: int, warmup: int) -> tuple[float, int]:
    """Median seconds of train_step on the loader's first batch, and that batch's size."""
    from occreid.engine import TrainContext, build_optimizer
    from occreid.engine.loop import method_train_loader

    method.before_training(records, cfg)  # as fit does (e.g. DPEFormer's memory bank)
    loader, sampler, _ = method_train_loader(method, records, cfg)
    sampler.set_epoch(1)
    batch = next(iter(loader))
    optimizers = {s.name: build_optimizer(s) for s in method.optimizers(cfg)}
    ctx = TrainContext(device=torch.device("cpu"), optimizers=optimizers)
    method.train()
    times = []
    for i in range(warmup + repeats):
        ctx.epoch, ctx.iteration = 1 + i, 0  # past DPM++'s anchoring period after the first steps, as most epochs
        start = time.perf_counter()
        method.train_step(batch, ctx)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:]), len(batch["pid"])


def epoch_step(experiment: str, params_path: str, cache: str, epochs: int) -> float:
    """Seconds per iteration of real epochs through fit (median over epochs 2..; epoch 1 warms up)."""
    from occreid.engine import fit

    method, cfg, records = build(experiment, params_path)
    cfg = dataclasses.replace(cfg, epochs=epochs, loader=dataclasses.replace(cfg.loader, cache=cache),
                              checkpoint_period=10**6, log_period=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        history = fit(method, records, cfg, tmp, resume=False)
    per_it = [h["seconds"] / h["iterations"] for h in history]
    return statistics.median(per_it[1:] or per_it)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--experiments", nargs="+", default=["vit", "clipreid", "dpm", "dpmpp"])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per measured fit (the first is not counted)")
    ap.add_argument("--repeats", type=int, default=15, help="timed bare steps")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    logging.disable(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); bare step: median of {args.repeats} "
          f"after {args.warmup} warm-up; epochs: median s/iteration of epochs 2..{args.epochs} through fit\n")
    print("| experiment | batch | bare step ms | iteration ms, cache on | ratio | iteration ms, cache off | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.experiments:
        method, cfg, records = build(name, args.params)
        step, batch = bare_step(method, cfg, records, args.repeats, args.warmup)
        on = epoch_step(name, args.params, "on", args.epochs)
        off = epoch_step(name, args.params, "off", args.epochs)
        print(f"| {name} | {batch} | {step * 1e3:.1f} | {on * 1e3:.1f} | {on / step:.2f} | {off * 1e3:.1f} | "
              f"{off / step:.2f} |", flush=True)


if __name__ == "__main__":
    main()
