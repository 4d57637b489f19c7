"""Stage ``occluders``: ``python -m stages.occluders --dataset NAME [--params params.yaml] [--device auto]``.

Reads ``occluders`` — or ``dataset_stages.NAME.occluders`` when the dataset has its own settings (stages/registry.py
"Per-dataset sections"): the papers' presets state a SAM ViT-H library there, while the demo's synthocc keeps the
shared section's weight-free one — as an :class:`~occreid.occluders.OccludersConfig` (source photographs — a
folder, or null for scikit-image's —, mask backend sam | classical with its settings, filters, seed) through the
declared-keys gate of :mod:`stages.common`, and builds DPEFormer's occluder library that the experiments training
on NAME paste from: ``data/occluders/NAME/`` with ``objects/*.png`` (RGBA crops), ``manifest.json`` (one entry per
object: source, bbox, area, aspect, file, sha256) and ``contact_sheet.png``. The library does not read NAME's
images. In the DAG it runs for the datasets some experiment's method needs it on (stages/registry.py
METHOD_NEEDS); run by hand it builds the library all the same (to look at the contact sheet before training).
A user error prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from occreid.errors import OccreidError, did_you_mean
from stages import common
from stages.params import PARAMS_FILE, read_yaml
from stages.registry import STAGES, Job, build_plan, dataset_job_contexts, fill

log = logging.getLogger("stages.occluders")
OUT = STAGES.get("occluders").outs[0].path  # data/occluders/{dataset}


def job_of(raw: dict, dataset: str, path: str | Path) -> Job:
    """The ``occluders@dataset`` job of the DAG, or — when no experiment training on ``dataset`` needs the
    library — the job it would be (same params keys), so that it can be built by hand."""
    plan = build_plan(raw, str(path))
    jobs = [j for j in plan.jobs_of("occluders") if j.key == dataset]
    if jobs:
        return jobs[0]
    stage = STAGES.get("occluders")
    contexts = {c["dataset"]: c for c in dataset_job_contexts(stage, raw, plan.experiments)}
    if dataset not in contexts:
        raise OccreidError(f"dataset {dataset!r} has no entry under 'datasets'", path=path,
                           fix=did_you_mean(dataset, contexts))
    return Job(stage, dataset, contexts[dataset], ())


def load_params(dataset: str, path: str | Path = PARAMS_FILE):
    """The typed occluders settings of ``dataset``'s library (after validating the whole params file)."""
    from occreid.occluders import OccludersConfig

    raw = read_yaml(path)
    common.validate(raw, path)
    return common.StageParams(raw, job_of(raw, dataset, path), path).dataset_section(OccludersConfig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.occluders", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="the training dataset whose library to build")
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)  # tests: another folder
    args = parser.parse_args(argv)
    from occreid.engine.context import resolve_device
    from occreid.occluders import build_library

    cfg = load_params(args.dataset, args.params)
    out = Path(args.out or fill(OUT, {"dataset": args.dataset}))
    summary = build_library(cfg, out, device=str(resolve_device(args.device)))
    log.info("occluders stage done: %d objects for %s in %s (contact sheet: %s)", summary["objects"], args.dataset,
             out, out / "contact_sheet.png")


if __name__ == "__main__":
    common.run(main)
