"""Stage ``prepare_data``: ``python -m stages.prepare_data --dataset NAME [--params params.yaml]``.

Reads ``datasets.<NAME>`` (a :class:`~occreid.data.prepare.DatasetSource`, merged over the documented
defaults in :data:`~occreid.data.prepare.DEFAULT_SOURCES`; for synthocc, ``datasets.synthocc.generator`` is
its ``SynthOccConfig``) and ``prepare_data`` (a :class:`~occreid.data.prepare.PrepareConfig`) through the
declared-keys gate of :mod:`stages.common`, then writes ``<out_dir>/<NAME>/`` with its ``manifest.json``.
A user error prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from occreid.data.datasets import DATASETS
from occreid.data.prepare import DEFAULT_SOURCES, DatasetSource, PrepareConfig, prepare_dataset
from occreid.errors import OccreidError
from stages.common import load, run
from stages.params import PARAMS_FILE, from_dict, merge

log = logging.getLogger("occreid.stages.prepare_data")


def load_params(
    name: str, section: Any, prepare: Any, path: str | Path = PARAMS_FILE
) -> tuple[DatasetSource, PrepareConfig, Any]:
    """Typed settings of dataset ``name`` from its ``datasets.<name>`` section and the ``prepare_data``
    section (unknown or mistyped keys are errors naming the dotted key); the synthocc generator config when
    the source is synthetic, else None."""
    DATASETS.get(name)  # an unknown name fails here, listing the valid ones
    if section is not None and not isinstance(section, dict):
        raise OccreidError(f"'datasets.{name}' must be a mapping", path=path)
    merged = merge(DEFAULT_SOURCES.get(name, {}), section or {})
    src = from_dict(DatasetSource, merged, key=f"datasets.{name}", source=path)
    cfg = from_dict(PrepareConfig, prepare, key="prepare_data", source=path)
    generator = None
    if name == "synthocc" and src.source == "synthetic":
        try:
            from occreid.data.synthocc import SynthOccConfig
        except ImportError as e:
            raise OccreidError(f"the synthocc generator cannot be imported ({e})", path="occreid/data/synthocc",
                               fix="install the package completely (pip install -e .)") from None
        generator = from_dict(SynthOccConfig, src.generator, key="datasets.synthocc.generator", source=path)
    return src, cfg, generator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.prepare_data", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS.names())}")
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    DATASETS.get(args.dataset)  # a clearer message than "no job prepare_data@..." for a typo
    params = load("prepare_data", args.dataset, args.params)
    src, cfg, generator = load_params(
        args.dataset, params.get(f"datasets.{args.dataset}", {}), params.get("prepare_data", {}), args.params
    )
    out = prepare_dataset(args.dataset, src, cfg, generator_config=generator)
    log.info("done: %s is in %s", args.dataset, out)


if __name__ == "__main__":
    run(main)
