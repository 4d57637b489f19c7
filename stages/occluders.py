"""Stage ``occluders``: ``python -m stages.occluders [--params params.yaml] [--device auto] [--out data/occluders]``.

Reads the ``occluders`` section (an :class:`~occreid.occluders.OccludersConfig`: source photographs — a folder,
or null for scikit-image's —, mask backend sam | classical with its settings, filters, seed) through the
declared-keys gate of :mod:`stages.common`, and builds DPEFormer's occluder library once:
``data/occluders/`` with ``objects/*.png`` (RGBA crops), ``manifest.json`` (one entry per object: source,
bbox, area, aspect, file, sha256) and ``contact_sheet.png``. In the DAG it runs only when some experiment's
method needs it (stages/registry.py METHOD_NEEDS); run by hand it builds the library all the same (to look
at the contact sheet before training). A user error prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from stages import common
from stages.params import PARAMS_FILE, read_yaml
from stages.registry import STAGES, Job, build_plan

log = logging.getLogger("stages.occluders")
OUT = Path(STAGES.get("occluders").outs[0].path)


def load_params(path: str | Path = PARAMS_FILE):
    """The typed ``occluders`` section (after validating the whole params file). The stage's job comes from
    the DAG when some experiment needs it, else it is the stage's lone job outside the DAG."""
    from occreid.occluders import OccludersConfig

    raw = read_yaml(path)
    common.validate(raw, path)
    jobs = [j for j in build_plan(raw, str(path)).jobs if j.stage.name == "occluders"]
    job = jobs[0] if jobs else Job(STAGES.get("occluders"), None, {}, ())
    return common.StageParams(raw, job, path).section(OccludersConfig, "occluders")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.occluders", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--out", default=str(OUT), help=argparse.SUPPRESS)  # tests: another folder
    args = parser.parse_args(argv)
    from occreid.engine.context import resolve_device
    from occreid.occluders import build_library

    cfg = load_params(args.params)
    summary = build_library(cfg, Path(args.out), device=str(resolve_device(args.device)))
    log.info("occluders stage done: %d objects in %s (contact sheet: %s)", summary["objects"], args.out,
             Path(args.out) / "contact_sheet.png")


if __name__ == "__main__":
    common.run(main)
