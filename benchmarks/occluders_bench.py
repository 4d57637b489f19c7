"""What does each mask backend yield on the demo's photographs, and how fast? A Markdown table.

    python benchmarks/occluders_bench.py                # scikit-image's 8 photographs at 256 px, 3 runs
    python benchmarks/occluders_bench.py --repeats 5 --max-side 512 --points 16

Rows: the random tiny SAM with SAM's own quality thresholds (what a real run would use), the tiny SAM with
the thresholds at 0 (the tests' setting), and the classical Felzenszwalb backend (the CPU demo's). Columns:
candidate masks per image, objects kept by the demo's filters per image, connected components per candidate
(8-connected; a real object is one or a few, noise is many), the candidates' mean fill of their box, and seconds
per image (median over runs, after a warm-up call). The numbers back the choice of the demo's
backend (docs/DPEFORMER.md, "Occlusion augmentation").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from occreid.config import from_dict, read_yaml  # noqa: E402
from occreid.occluders import OccludersConfig, SamConfig, create_mask_backend  # noqa: E402
from occreid.occluders.build import select_masks  # noqa: E402
from occreid.occluders.sources import list_sources, read_sources  # noqa: E402


def rows(demo: OccludersConfig, points: int) -> list[tuple[str, OccludersConfig]]:
    tiny = SamConfig(model_type="tiny", points_per_side=points)
    relaxed = dataclasses.replace(tiny, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    return [("sam tiny (random), SAM's thresholds", dataclasses.replace(demo, backend="sam", sam=tiny)),
            ("sam tiny (random), thresholds 0", dataclasses.replace(demo, backend="sam", sam=relaxed)),
            (f"classical {demo.classical.method}", dataclasses.replace(demo, backend="classical"))]


def measure(cfg: OccludersConfig, images: list[np.ndarray], repeats: int) -> dict:
    backend = create_mask_backend(cfg)
    backend(images[0])  # warm-up (lazy initialisation)
    seconds, found = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        found = [backend(im) for im in images]
        seconds.append((time.perf_counter() - start) / len(images))
    cands = [c for per in found for c in per]
    kept = sum(len(select_masks(per, im.shape[:2], cfg.filters)) for per, im in zip(found, images))
    parts = [ndimage.label(c.mask, structure=np.ones((3, 3)))[1] for c in cands]  # 8-connected
    return {"candidates": len(cands) / len(images), "kept": kept / len(images),
            "components": float(np.mean(parts)) if parts else float("nan"),
            "fill": float(np.mean([c.mask.mean() for c in cands])) if cands else float("nan"),
            "s": statistics.median(seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-side", type=int, default=None, help="default: params.yaml occluders.image_max_side")
    parser.add_argument("--points", type=int, default=8, help="SAM points_per_side")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    demo = from_dict(OccludersConfig, read_yaml(args.params).get("occluders"), key="occluders")
    if args.max_side:
        demo = dataclasses.replace(demo, image_max_side=args.max_side)
    images = [rgb for _, rgb in read_sources(list_sources(demo.source, demo.max_images), demo.image_max_side)]
    print(f"occluder mask backends on {len(images)} photographs (longest side {demo.image_max_side}), "
          f"{args.repeats} runs, 1 thread, the demo's filters; SAM with {args.points}x{args.points} points")
    print()
    print("| backend | candidates / image | kept / image | components / candidate | fill | s / image |")
    print("|---|---|---|---|---|---|")
    for label, cfg in rows(demo, args.points):
        m = measure(cfg, images, args.repeats)
        print(f"| {label} | {m['candidates']:.1f} | {m['kept']:.1f} | {m['components']:.1f} | {m['fill']:.2f} "
              f"| {m['s']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
