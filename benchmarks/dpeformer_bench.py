"""CPU cost of one training step of ``dpeformer`` (two views per image) against ``dpm`` and ``vit``, same batch.

The demo asks DPEFormer's rows to train no slower than DPM's (DPM runs two forward passes per step, DPEFormer
one over twice the images). Prints a Markdown table: median milliseconds per ``train_step`` over ``--repeats``
timed steps (after warm-up; random tensors, so data loading and the paste are excluded), and the ratio to
``dpm`` measured in the same run. Also the DPEFormer ablations that change the cost (one view, no DPSM, no FBM).

    python benchmarks/dpeformer_bench.py                       # the demo: vit_tiny_p8 at 64x32, 8 x 4, 1 thread
    python benchmarks/dpeformer_bench.py --backbone vit_base_patch16_224 --size 256x128 --p 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import torch  # noqa: E402

from occreid.engine import seed_everything  # noqa: E402
from occreid.methods import create_method  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.train_step_bench import median_step_seconds, random_batch  # noqa: E402

ROWS = {  # row → (method, config overrides)
    "vit": ("vit", {}),
    "dpm": ("dpm", {}),
    "dpeformer (two views)": ("dpeformer", {}),
    "dpeformer, one view (augment none)": ("dpeformer", {"augment": {"mode": "none"}}),
    "dpeformer without DPSM": ("dpeformer", {"dpsm": False}),
    "dpeformer without FBM": ("dpeformer", {"fbm": False}),
}


def time_steps(method_name: str, over: dict, backbone: dict, p: int, k: int, repeats: int, warmup: int,
               k_min: int) -> float:
    """Median seconds per train_step on random images."""
    seed_everything(0)
    cfg = {"backbone": backbone, **over}
    if method_name == "dpeformer":
        cfg.setdefault("selection", {"k_min": k_min})
    method = create_method(method_name, cfg, 2 * p, 2)
    if method_name == "dpeformer" and method.memory is not None:
        method.memory.initialize(torch.randn(2 * p, method.memory.bank.shape[1]), torch.arange(2 * p))
    batch = random_batch(p, k, backbone["img_size"])
    if method_name == "dpeformer" and method.cfg.augment.mode != "none":  # the occluded view
        batch["image_aug"] = torch.randn_like(batch["image"])
    return median_step_seconds(method, batch, p, k, repeats, warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbone", default="vit_tiny_p8")
    ap.add_argument("--size", default="64x32", help="HxW")
    ap.add_argument("--p", type=int, default=8, help="identities per batch")
    ap.add_argument("--k", type=int, default=4, help="images per identity")
    ap.add_argument("--k-min", type=int, default=12, help="dpeformer's selection.k_min (the demo: 12 of 32 tokens)")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    size = [int(v) for v in args.size.lower().split("x")]
    backbone = {"name": args.backbone, "img_size": size, "pretrained": None}
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(f"{args.backbone} at {size[0]}x{size[1]}, batch {args.p}x{args.k} = {args.p * args.k} images, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} steps after {args.warmup} warm-up\n")
    results = {row: time_steps(m, over, backbone, args.p, args.k, args.repeats, args.warmup, args.k_min)
               for row, (m, over) in ROWS.items()}
    print("| method | ms / step | × dpm |")
    print("|---|---:|---:|")
    for row, sec in results.items():
        print(f"| {row} | {sec * 1e3:.1f} | {sec / results['dpm']:.2f} |")


if __name__ == "__main__":
    main()
