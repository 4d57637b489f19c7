"""CPU time of one training step of the ``vit`` method (forward + losses + backward + SGD step).

Prints a Markdown table: median milliseconds per step over ``--repeats`` timed steps (after warm-up) and
images per second, for each input size × patch stride × thread count. Data loading is excluded (random
tensors), so the numbers are the model's cost; compare them with the seconds per epoch in a run's history
to see how much time goes to the input pipeline.

    python benchmarks/train_step_bench.py --backbone vit_tiny --sizes 128x64 256x128 --strides 16 12 --threads 1 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from occreid.engine import TrainConfig, TrainContext, build_optimizer, seed_everything
from occreid.methods import create_method


def time_steps(
    backbone: str, size: tuple[int, int], stride: int | None, p: int, k: int, repeats: int, warmup: int
) -> tuple[float, int]:
    """Median seconds per train_step and the number of patch tokens."""
    seed_everything(0)
    num_ids = 2 * p
    backbone_cfg = {"name": backbone, "img_size": list(size), "stride": stride}
    method = create_method("vit", {"backbone": backbone_cfg}, num_ids, 2)
    grid = method.backbone.grid
    return median_step_seconds(method, random_batch(p, k, size), p, k, repeats, warmup), grid[0] * grid[1]


def random_batch(p: int, k: int, size) -> dict:
    """A P×K batch of random images (two cameras): the model's cost without any loading."""
    return {"image": torch.randn(p * k, 3, *size), "pid": torch.arange(p).repeat_interleave(k),
            "camid": torch.arange(p * k) % 2}


def median_step_seconds(method, batch: dict, p: int, k: int, repeats: int, warmup: int) -> float:
    """Median seconds of ``method.train_step`` on ``batch`` (its own optimisers, CPU) after ``warmup`` steps."""
    optimizers = {s.name: build_optimizer(s) for s in method.optimizers(TrainConfig(ids_per_batch=p, images_per_id=k))}
    ctx = TrainContext(device=torch.device("cpu"), optimizers=optimizers)
    method.train()
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        method.train_step(batch, ctx)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="vit_tiny")
    ap.add_argument("--sizes", nargs="+", default=["128x64", "256x128"], help="HxW")
    ap.add_argument("--strides", nargs="+", type=int, default=[16, 12])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--p", type=int, default=16, help="identities per batch")
    ap.add_argument("--k", type=int, default=4, help="images per identity")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()

    print(f"backbone {args.backbone}, batch {args.p}x{args.k} = {args.p * args.k} images, "
          f"median of {args.repeats} steps after {args.warmup} warm-up, torch {torch.__version__}\n")
    print("| input | stride | tokens | threads | ms/step | images/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for size_text in args.sizes:
        size = tuple(int(v) for v in size_text.lower().split("x"))
        for stride in args.strides:
            for threads in args.threads:
                torch.set_num_threads(threads)
                sec, tokens = time_steps(args.backbone, size, stride, args.p, args.k, args.repeats, args.warmup)
                rate = args.p * args.k / sec
                print(f"| {size[0]}×{size[1]} | {stride} | {tokens} | {threads} | {sec * 1e3:.1f} | {rate:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
