"""Write a whole synthocc dataset: Market-1501 folders, ``occlusion.csv`` and ``contact_sheet.png``.

The dataset is written into a temporary folder beside ``out_dir`` and renamed onto it only when complete
(:func:`occreid.io.atomic_path`), so a crash never leaves a folder that looks like a finished dataset.
Same config, same bytes: every image comes from its own seed and the JPEG/PNG encoders are deterministic.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from occreid.io import atomic_path

from .cameras import sample_cameras
from .compose import render_image
from .config import SynthOccConfig
from .contact_sheet import draw_contact_sheet
from .plan import FOLDERS, SPLITS, ImageSpec, build_plan

log = logging.getLogger(__name__)
OCCLUSION_CSV = "occlusion.csv"
CONTACT_SHEET = "contact_sheet.png"


def generate(out_dir: Path, cfg: SynthOccConfig) -> dict:
    """Generate the dataset of ``cfg`` into ``out_dir`` (replacing it when complete) and return a summary:
    per split the number of images, identities, cameras, occluded images, occluded share and mean hidden
    share of the occluded images; plus the seed, image size, kinds of occluders used and the seconds taken."""
    if not isinstance(cfg, SynthOccConfig):
        raise TypeError(f"cfg must be a SynthOccConfig, got {type(cfg).__name__}")
    start = time.perf_counter()
    out_dir = Path(out_dir)
    plan = build_plan(cfg)
    cameras = sample_cameras(cfg.seed, cfg.num_cameras, (cfg.height, cfg.width))
    shares: dict[ImageSpec, float] = {}
    kinds: dict[str, int] = {}
    with atomic_path(out_dir) as tmp:
        for folder in FOLDERS.values():
            (tmp / folder).mkdir(parents=True)
        for spec in tqdm(plan, desc="synthocc", unit="img", leave=False):
            pixels, share, kind = render_image(spec, cfg, cameras[spec.cam])
            _save_jpeg(pixels, tmp / spec.folder / spec.file_name, cfg.jpeg_quality)
            shares[spec] = share
            if kind:
                kinds[kind] = kinds.get(kind, 0) + 1
        (tmp / OCCLUSION_CSV).write_text(occlusion_csv(plan, shares), encoding="utf-8")
        draw_contact_sheet(tmp, plan, shares, cfg).save(tmp / CONTACT_SHEET, format="PNG")
    summary = _summary(plan, shares, cfg)
    summary["occluder_kinds"] = dict(sorted(kinds.items()))
    summary["seconds"] = round(time.perf_counter() - start, 3)
    log.info("synthocc: wrote %d images (%s) to %s in %.1f s; contact sheet %s", len(plan),
             ", ".join(f"{s} {summary['splits'][s]['images']}" for s in SPLITS), out_dir, summary["seconds"],
             out_dir / CONTACT_SHEET)
    return summary


def occlusion_csv(plan: list[ImageSpec], shares: dict[ImageSpec, float]) -> str:
    """The occlusion sidecar: ``split,file,occluded,occlusion`` per image, in plan order (split, pid, index)."""
    lines = ["split,file,occluded,occlusion"]
    lines += [f"{s.split},{s.file_name},{int(s.occluded)},{shares[s]:.4f}" for s in plan]
    return "\n".join(lines) + "\n"


def _save_jpeg(pixels: np.ndarray, path: Path, quality: int) -> None:
    Image.fromarray(pixels).save(path, format="JPEG", quality=quality)


def _summary(plan: list[ImageSpec], shares: dict[ImageSpec, float], cfg: SynthOccConfig) -> dict:
    splits = {}
    for split in SPLITS:
        specs = [s for s in plan if s.split == split]
        occluded = [shares[s] for s in specs if s.occluded]
        splits[split] = {
            "images": len(specs),
            "ids": len({s.pid for s in specs}),
            "cameras": len({s.cam for s in specs}),
            "occluded": len(occluded),
            "occluded_share": round(len(occluded) / len(specs), 4),
            "mean_occlusion": round(sum(occluded) / len(occluded), 4) if occluded else 0.0,
        }
    return {"seed": cfg.seed, "size": [cfg.height, cfg.width], "num_cameras": cfg.num_cameras, "splits": splits}
