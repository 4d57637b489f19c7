"""Stage ``spt_sets``: ``python -m stages.spt_sets --dataset NAME [--params params.yaml]``.

Reads ``spt`` — or ``dataset_stages.NAME.spt`` when the dataset has its own settings — (an
:class:`~occreid.augment.SptConfig`: binarising threshold, OIoU threshold α1, rolling
threshold α2, max_roll, candidates, seed; through the declared-keys gate of :mod:`stages.common`), the saliency of ``data/saliency/NAME/saliency.npz`` and the
training split of ``data/prepared/NAME``; binarises the maps into person masks, builds the OIoU partner
table and writes ``data/spt/NAME/VARIANT/`` (``--variant``: ``default`` is the ``spt`` section as it is;
an experiment that overrides ``spt`` — an α1/α2 sweep row — trains on the variant named after its change,
made by the same command with that override merged in): ``partners.npz`` (partner table + packed masks + geometry + paths +
pids: all a training run needs), ``transfer_sheet.png`` (rows: source i | partner j | j's pasted region |
result) and ``spt.json`` (summary). A user error prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np

from occreid.augment import SptConfig, SptSets, binarise, build_partner_table, save_spt_sets, transfer_image
from occreid.augment.transfer import transfer_sheet
from occreid.data.datasets import DATASETS, create_dataset
from occreid.errors import OccreidError
from occreid.io import write_json
from occreid.saliency import load_rgb, load_saliency, save_png
from occreid.saliency.store import evenly_spaced, relative_paths
from stages import common
from stages.params import PARAMS_FILE
from stages.registry import DEFAULT_VARIANT, STAGES

log = logging.getLogger("stages.spt_sets")
PREPARED = Path("data/prepared")
SALIENCY = Path("data/saliency")
OUT = Path("data/spt")


def load_params(dataset: str, variant: str = DEFAULT_VARIANT, path: str | Path = PARAMS_FILE) -> SptConfig:
    """The typed ``spt`` section of one variant (after validating the whole params file): the dataset's section
    (``spt`` or ``dataset_stages.NAME.spt``), with the override of the experiments that use ``variant``
    (stages/registry.py "Variants")."""
    params = common.load("spt_sets", STAGES.get("spt_sets").key_of({"dataset": dataset, "spt_variant": variant}), path)
    return common.spt_section(params)


def summary(sets: SptSets, dataset: str) -> dict:
    """spt.json: coverage of the partner table and the masks it was built from."""
    counts = sets.table.counts()
    filled = sets.table.partner >= 0
    person = sets.masks.reshape(len(sets.masks), -1).mean(axis=1) if len(sets.masks) else np.zeros(0)
    with_partner = counts > 0
    other = (sets.pids[np.where(filled, sets.table.partner, 0)] != sets.pids[:, None]) & filled
    return {
        "dataset": dataset, "images": int(len(counts)),
        "with_partners": int(with_partner.sum()),
        "mean_partners": round(float(counts.mean()), 4) if len(counts) else 0.0,
        "other_identity_share": round(float(other.sum() / max(int(filled.sum()), 1)), 4),
        "mean_oiou": round(float(sets.table.score[filled].astype(np.float64).mean()), 4) if filled.any() else 0.0,
        "mean_person_share": round(float(person.mean()), 4) if len(person) else 0.0,
        "rolled_share": round(float((sets.table.roll[filled] != 0).mean()), 4) if filled.any() else 0.0,
        "config": sets.config,
    }


def run(dataset: str, cfg: SptConfig, *, variant: str = DEFAULT_VARIANT, prepared: Path = PREPARED,
        saliency_root: Path = SALIENCY, out_root: Path = OUT) -> Path:
    """Build and write the partner sets of ``dataset`` into ``<out_root>/<dataset>/<variant>``; returns it."""
    DATASETS.get(dataset)
    root = Path(prepared) / dataset
    splits = create_dataset(dataset, root, check_counts=False)
    sal = load_saliency(Path(saliency_root) / dataset / "saliency.npz")
    if relative_paths([r.path for r in splits.train], root) != sal.paths:
        raise OccreidError(f"the saliency maps were computed for other images than the training split of {dataset}",
                           path=Path(saliency_root) / dataset / "saliency.npz",
                           fix=f"re-run the saliency stage: python -m stages.saliency --dataset {dataset}")
    masks = binarise(sal.maps, cfg.threshold)
    pids = np.array([r.pid for r in splits.train], np.int64)
    table = build_partner_table(masks, pids, cfg)
    sets = SptSets(table, masks, sal.geometry, sal.paths, pids, dataclasses.asdict(cfg))
    out = Path(out_root) / dataset / variant
    save_spt_sets(out / "partners.npz", sets)

    rows = []
    have = np.flatnonzero(table.counts() > 0)
    for i in have[evenly_spaced(len(have), cfg.sheet_samples)].tolist():
        j, r, _ = table.of(i)[0]
        x_i = load_rgb(splits.train[i].path, sal.geometry.img_size)
        x_j = load_rgb(splits.train[j].path, sal.geometry.img_size)
        rows.append((x_i, x_j, masks[j], transfer_image(x_i, x_j, masks[j], r, sal.geometry)[0]))
    save_png(out / "transfer_sheet.png", transfer_sheet(rows, sal.geometry))
    info = {**summary(sets, dataset), "variant": variant}
    write_json(out / "spt.json", info)
    log.info("%s: %d/%d training images have partners (mean %.2f); written to %s (partners.npz, "
             "transfer_sheet.png, spt.json)", dataset, info["with_partners"], info["images"],
             info["mean_partners"], out)
    if info["with_partners"] == 0:
        log.warning("no image has a partner: lower spt.alpha1 or spt.threshold, or check the saliency overlay")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.spt_sets", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS.names())}")
    parser.add_argument("--variant", default=DEFAULT_VARIANT,
                        help="the partner-table setting: 'default' (the spt section) or the name the DAG gives an "
                             "experiment's overrides.spt (occreid dag lists them)")
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    parser.add_argument("--prepared", default=str(PREPARED), help=argparse.SUPPRESS)  # tests: other roots
    parser.add_argument("--saliency", default=str(SALIENCY), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(OUT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    DATASETS.get(args.dataset)  # a clearer message than "no job spt_sets@..." for a typo
    cfg = load_params(args.dataset, args.variant, args.params)
    run(args.dataset, cfg, variant=args.variant, prepared=Path(args.prepared), saliency_root=Path(args.saliency),
        out_root=Path(args.out))


if __name__ == "__main__":
    common.run(main)
