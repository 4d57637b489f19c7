"""Build the occluder library: photographs → candidate masks → filtered, tight RGBA crops → a library folder.

Deterministic by construction: sources in sorted order, masks of an image ordered by score (ties by area and
position), the optional total cap a seeded sample, the tiny SAM seeded, PNG bytes free of timestamps — the
same config gives a byte-identical folder.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from occreid.errors import OccreidError

from .backends import Candidate, create_mask_backend
from .config import FilterConfig, OccludersConfig
from .library import library_writer
from .sheet import contact_sheet, evenly_spaced
from .sources import list_sources, pixel_sha256, read_sources

log = logging.getLogger(__name__)


def measure(c: Candidate, image_hw: tuple[int, int]) -> dict:
    """The manifest facts of a candidate: bbox [x, y, w, h], area (pixels), its share of the image, aspect
    (box height / width), fill (share of the box), score (rounded: stable JSON)."""
    x, y, w, h = c.box
    area = int(np.count_nonzero(c.mask))
    return {"bbox": [int(x), int(y), int(w), int(h)], "area": area,
            "area_fraction": round(area / (image_hw[0] * image_hw[1]), 6), "aspect": round(h / w, 6),
            "fill": round(area / (w * h), 6), "score": round(float(c.score), 6)}


def passes(meta: dict, image_hw: tuple[int, int], f: FilterConfig) -> bool:
    """Whether a measured candidate is kept by the filters."""
    x, y, w, h = meta["bbox"]
    H, W = image_hw
    if f.exclude_border and (x == 0 or y == 0 or x + w == W or y + h == H):
        return False
    return (f.min_area <= meta["area_fraction"] <= f.max_area and f.aspect[0] <= meta["aspect"] <= f.aspect[1]
            and meta["fill"] >= f.min_fill and min(w, h) >= f.min_side)


def cut_object(rgb: np.ndarray, c: Candidate, max_side: int | None) -> Image.Image:
    """The RGBA object of ``c``: RGB = the photograph inside the box, A = the mask; downscaled (RGB and alpha
    separately, so no colour leaks from outside the mask) to a longest side of at most ``max_side``."""
    x, y, w, h = c.box
    crop = Image.fromarray(np.ascontiguousarray(rgb[y:y + h, x:x + w]))
    alpha = Image.fromarray(np.where(c.mask, 255, 0).astype(np.uint8))
    if max_side is not None and max(w, h) > max_side:
        s = max_side / max(w, h)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        crop, alpha = crop.resize(size, Image.BOX), alpha.resize(size, Image.BILINEAR)
    return Image.merge("RGBA", (*crop.split(), alpha))


def select_masks(candidates: list[Candidate], image_hw: tuple[int, int],
                 f: FilterConfig) -> list[tuple[Candidate, dict]]:
    """The candidates the filters keep, best first (score, then area, then position), at most ``max_per_image``."""
    kept = [(c, m) for c in candidates if passes(m := measure(c, image_hw), image_hw, f)]
    kept.sort(key=lambda cm: (-cm[1]["score"], -cm[1]["area"], cm[1]["bbox"][1], cm[1]["bbox"][0],
                              cm[1]["bbox"][3], cm[1]["bbox"][2]))
    return kept[:f.max_per_image] if f.max_per_image is not None else kept


def build_library(cfg: OccludersConfig, out: str | Path, *, device: str = "cpu") -> dict:
    """Build the library of ``cfg`` at ``out`` (atomically); returns a summary (counts, seconds)."""
    start = time.perf_counter()
    sources = list_sources(cfg.source, cfg.max_images)
    backend = create_mask_backend(cfg, device)
    facts = []
    with library_writer(out) as writer:
        bar = tqdm(read_sources(sources, cfg.image_max_side), total=len(sources), desc=f"occluders ({cfg.backend})",
                   mininterval=5.0)
        for src, rgb in bar:
            candidates = backend(rgb)
            kept = select_masks(candidates, rgb.shape[:2], cfg.filters)
            for c, meta in kept:
                writer.add(cut_object(rgb, c, cfg.filters.object_max_side), {"source": src.name, **meta})
            facts.append({"name": src.name, "sha256": pixel_sha256(rgb), "size": list(rgb.shape[:2]),
                          "candidates": len(candidates), "kept": len(kept)})
            bar.set_postfix(objects=len(writer.entries), refresh=False)
        total = len(writer.entries)
        cap = cfg.filters.max_objects
        if cap is not None and total > cap:
            writer.keep(sorted(np.random.default_rng(cfg.seed).choice(total, cap, replace=False).tolist()))
        if not writer.entries:
            raise OccreidError(f"no mask of the {len(sources)} source image(s) passed occluders.filters "
                               f"({sum(f['candidates'] for f in facts)} candidates, backend {cfg.backend})",
                               fix="loosen occluders.filters (min_area, aspect, min_fill, exclude_border), or use "
                                   "other source images / another backend")
        shown = evenly_spaced(len(writer.entries), cfg.sheet_objects)
        sheet = contact_sheet([writer.image(i) for i in shown], cfg.sheet_cell)
        build = {"backend": cfg.backend, "config": dataclasses.asdict(cfg), "sources": facts,
                 "candidates": sum(f["candidates"] for f in facts), "before_cap": total}
        writer.close(build, sheet)
        count = len(writer.entries)
    seconds = time.perf_counter() - start
    log.info("occluder library: %d objects from %d images (%d candidate masks, backend %s) in %.1f s -> %s",
             count, len(sources), build["candidates"], cfg.backend, seconds, out)
    return {"objects": count, "images": len(sources), "candidates": build["candidates"], "seconds": seconds}
