"""Stage ``saliency``: ``python -m stages.saliency --dataset NAME [--params params.yaml] [--device auto]``.

Reads ``saliency`` — or ``dataset_stages.NAME.saliency`` when the dataset has its own settings — (a
:class:`~occreid.saliency.SaliencyConfig`: backend classical | attention | sps, image
size, grid, backend knobs, and ``backbone`` / ``dataset_backbones.NAME``: the backbone whose patch grid the
maps live on and which the attention/sps backends run — the one of the dpmpp experiments training on NAME)
through the declared-keys gate of :mod:`stages.common`, computes the per-patch saliency of the
training split of ``data/prepared/NAME`` and writes ``data/saliency/NAME/``: ``saliency.npz`` (float16
maps [N, h, w], relative image paths, patch geometry, backend), ``overlay.png`` (images beside their
heat-maps) and ``saliency.json`` (summary). A user error prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from occreid.data.datasets import DATASETS, create_dataset
from occreid.errors import OccreidError
from occreid.io import write_json
from occreid.models.factory import BackboneConfig
from occreid.saliency import SaliencyConfig, compute_saliency, load_rgb, overlay_sheet, save_png, save_saliency
from occreid.saliency.geometry import PatchGeometry
from occreid.saliency.store import evenly_spaced
from stages import common
from stages.params import PARAMS_FILE

log = logging.getLogger("stages.saliency")
PREPARED = Path("data/prepared")
OUT = Path("data/saliency")


def load_params(dataset: str, path: str | Path = PARAMS_FILE) -> tuple[SaliencyConfig, BackboneConfig]:
    """The typed ``saliency`` section and the backbone it names for ``dataset`` (after validating the whole
    params file)."""
    cfg = common.load("saliency", dataset, path).dataset_section(SaliencyConfig)  # or dataset_stages.NAME.saliency
    return cfg, cfg.backbone_of(dataset)


def summary(maps: np.ndarray, dataset: str, backend: str, geometry: PatchGeometry) -> dict:
    """saliency.json: what was computed and how much of each image is salient (deterministic content)."""
    m = maps.astype(np.float64)
    person = (m >= 0.5).reshape(len(m), -1).mean(axis=1) if len(m) else np.zeros(0)
    return {
        "dataset": dataset, "backend": backend, "images": int(len(m)),
        "img_size": list(geometry.img_size), "grid": list(geometry.grid),
        "patch": list(geometry.patch), "stride": list(geometry.stride),
        "mean_saliency": round(float(m.mean()), 6) if len(m) else 0.0,
        "mean_share_at_0.5": round(float(person.mean()), 6) if len(m) else 0.0,
        "empty_at_0.5": int((person == 0).sum()),
    }


def run(dataset: str, cfg: SaliencyConfig, model: BackboneConfig, *, prepared: Path = PREPARED,
        out_root: Path = OUT, device: str = "auto") -> Path:
    """Compute and write the saliency of ``dataset``'s training split; returns the output folder."""
    DATASETS.get(dataset)
    root = Path(prepared) / dataset
    splits = create_dataset(dataset, root, check_counts=False)  # prepare_data checked the counts
    sal = compute_saliency(splits.train, root, cfg, model, device=device)
    out = Path(out_root) / dataset
    save_saliency(out / "saliency.npz", sal)
    pick = evenly_spaced(len(sal), cfg.overlay_images)
    images = [load_rgb(splits.train[i].path, sal.geometry.img_size) for i in pick]
    save_png(out / "overlay.png", overlay_sheet(images, sal.maps[pick], sal.geometry))
    write_json(out / "saliency.json", summary(sal.maps, dataset, sal.backend, sal.geometry))
    log.info("saliency of %s (%d images, %s) written to %s (saliency.npz, overlay.png, saliency.json)",
             dataset, len(sal), sal.backend, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.saliency", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS.names())}")
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--prepared", default=str(PREPARED), help=argparse.SUPPRESS)  # tests: other roots
    parser.add_argument("--out", default=str(OUT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    DATASETS.get(args.dataset)  # a clearer message than "no job saliency@..." for a typo
    cfg, model = load_params(args.dataset, args.params)
    run(args.dataset, cfg, model, prepared=Path(args.prepared), out_root=Path(args.out), device=args.device)


if __name__ == "__main__":
    common.run(main)
