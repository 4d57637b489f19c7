"""Images per second of the training loader at a paper preset's size, beside the model's own step rate.

Renders a synthocc training split at Market-1501's crop size (128×64 JPEGs, which the presets' transforms
resize to 256×128, as on the real datasets), builds the engine's P×K training loader with the preset's
training transforms and batch (``train`` of its experiment), and times full epochs for each worker count and
with the decoded-image cache off and on (``train.loader.cache``; on: decoded once, then whole batches are
augmented at once). Workers persist across epochs (``train.loader.persistent_workers``) unless
``--no-persistent``; ``--prefetch`` sets their prefetch depth. "setup" is the time to build the loader (the
cache decodes the split there), "first epoch" includes starting the workers.

Then times the preset's model (random weights; ``benchmarks/train_step_bench.py``'s step) on this machine, so
the last column says which side bounds a training epoch here: a loader rate above the model's means the model
is the bottleneck. On a GPU node compare the loader rates with the GPU's step rate instead (e.g. from
``benchmarks/paper_smoke.py`` run there).

    python benchmarks/loader_bench.py --preset dpm_occluded_duke --workers 0 1 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from occreid.data.datasets import create_dataset  # noqa: E402
from occreid.data.loader import LoaderConfig, build_train_loader  # noqa: E402
from occreid.data.synthocc import SynthOccConfig, generate  # noqa: E402
from occreid.data.transforms import build_train_transform  # noqa: E402
from occreid.engine import TrainConfig  # noqa: E402
from stages.params import from_dict  # noqa: E402


def preset_train(name: str) -> tuple[TrainConfig, dict]:
    """The training config and backbone of the preset's first experiment (its own overrides + code defaults,
    as ``inherit: defaults`` resolves them)."""
    doc = yaml.safe_load((ROOT / "workflow" / "presets" / f"{name}.yaml").read_text(encoding="utf-8"))
    spec = next(iter(doc["experiments"].values()))
    over = spec.get("overrides") or {}
    cfg = from_dict(TrainConfig, over.get("train") or {}, key="train")
    backbone = (over.get("methods") or {}).get(spec["method"], {}).get("backbone") or {}
    return cfg, backbone


def time_loader(records, cfg: TrainConfig, workers: int, cache: str, epochs: int, persistent: bool,
                prefetch: int | None) -> dict:
    options = LoaderConfig(cache=cache, persistent_workers=persistent, prefetch_factor=prefetch)
    start = time.perf_counter()
    loader, sampler, gen = build_train_loader(records, build_train_transform(cfg.transforms),
                                              ids_per_batch=cfg.ids_per_batch, images_per_id=cfg.images_per_id,
                                              seed=0, num_workers=workers, options=options)
    setup = time.perf_counter() - start
    rates = []
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        gen.manual_seed(epoch)
        start = time.perf_counter()
        images = sum(len(batch["pid"]) for batch in loader)
        rates.append(images / (time.perf_counter() - start))
    del loader  # persistent workers end with their loader
    return {"setup": setup, "first": rates[0], "steady": statistics.median(rates[1:] or rates)}


def model_rate(backbone: dict, size: tuple[int, int], batch: int, repeats: int) -> float:
    """Images per second of the preset's model training step on this machine (random batch, no loading)."""
    from benchmarks.train_step_bench import time_steps

    sec, _ = time_steps(backbone.get("name", "vit_base_patch16_224"), size, backbone.get("stride"), 1, batch,
                        repeats, 1)
    return batch / sec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="dpm_occluded_duke", help="a workflow/presets/*.yaml name")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per setting (steady rate: median of 2..)")
    ap.add_argument("--ids", type=int, default=32, help="training identities (x 16 images each)")
    ap.add_argument("--no-persistent", action="store_true", help="workers restart every epoch")
    ap.add_argument("--prefetch", type=int, default=None, help="batches each worker prepares ahead (torch: 2)")
    ap.add_argument("--model-batch", type=int, default=4, help="images per timed model step (0: skip the model)")
    ap.add_argument("--model-repeats", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="reuse a rendered dataset folder (else a temporary one)")
    args = ap.parse_args()

    cfg, backbone = preset_train(args.preset)
    tmp = None
    root = args.data
    if root is None or not (root / "bounding_box_train").is_dir():
        if root is None:
            tmp = tempfile.TemporaryDirectory(prefix="occreid-loader-")
            root = Path(tmp.name) / "synthocc"
        generate(root, SynthOccConfig(num_train_ids=args.ids, num_test_ids=2, images_per_id=16, queries_per_id=1,
                                      contact_sheet_ids=1, contact_sheet_gallery=1))
    records = create_dataset("synthocc", root, check_counts=False).train
    t = cfg.transforms
    print(f"preset {args.preset}: {len(records)} training JPEGs of 128x64 -> {t.size[0]}x{t.size[1]} "
          f"({t.interpolation}, flip {t.flip_p}, pad {t.pad}, erasing {t.random_erasing_p}, jitter {t.color_jitter}), "
          f"batch {cfg.ids_per_batch}x{cfg.images_per_id}, preset num_workers {cfg.num_workers}, "
          f"persistent workers {not args.no_persistent}, prefetch {args.prefetch or 'torch default'}; "
          f"{torch.get_num_threads()} torch thread(s), {torch.multiprocessing.cpu_count()} CPUs\n")
    print("| decoded-image cache | workers | setup s | first epoch images/s | steady images/s |")
    print("|---|---:|---:|---:|---:|")
    results = {}
    for cache in ("off", "on"):
        for workers in args.workers:
            r = time_loader(records, cfg, workers, cache, args.epochs, not args.no_persistent, args.prefetch)
            results[(cache, workers)] = r
            print(f"| {cache} | {workers} | {r['setup']:.2f} | {r['first']:.0f} | {r['steady']:.0f} |", flush=True)
    if args.model_batch:
        size = tuple(t.size)
        rate = model_rate(backbone, size, args.model_batch, args.model_repeats)
        name = f"{backbone.get('name', 'vit_base_patch16_224')} stride {backbone.get('stride') or 'patch'}"
        best = max(results.values(), key=lambda r: r["steady"])["steady"]
        print(f"\nmodel: {name} at {size[0]}x{size[1]}, training step on this machine: {rate:.1f} images/s "
              f"(batch {args.model_batch}, median of {args.model_repeats})")
        side, factor = ("the model", best / rate) if rate < best else ("the loader", rate / best)
        print(f"fastest loader {best:.0f} images/s vs model {rate:.1f} images/s: {side} bounds an epoch here "
              f"(by {factor:.1f}x)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
