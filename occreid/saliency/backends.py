"""The saliency backends behind one call: :func:`compute_saliency` (records → :class:`SaliencyMaps`).

Each backend is registered in :data:`BACKENDS` under its ``saliency.backend`` name and returns the maps of
the records, in order, on its :class:`PatchGeometry`. The geometry is the model's patch grid at the
saliency image size, so that one mask bit corresponds to one patch token of the model that trains on the
transferred images; ``classical`` may instead use any ``grid`` (non-overlapping cells tiling the image).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from occreid.data.loader import build_test_loader
from occreid.data.records import Record
from occreid.data.transforms import TransformConfig, build_test_transform
from occreid.engine.context import resolve_device
from occreid.errors import OccreidError
from occreid.models.factory import BackboneConfig, skip_pretrained
from occreid.registry import Registry
from occreid.saliency.attention import attention_maps
from occreid.saliency.classical import classical_saliency
from occreid.saliency.config import SaliencyConfig
from occreid.saliency.geometry import PatchGeometry
from occreid.saliency.sps import sps_maps, train_sps
from occreid.saliency.store import SaliencyMaps, load_rgb, relative_paths

log = logging.getLogger(__name__)
Backend = Callable[[Sequence[Record], SaliencyConfig, BackboneConfig, tuple[int, int], str],
                   tuple[np.ndarray, PatchGeometry]]
BACKENDS: Registry[Backend] = Registry("saliency backend")


def _model_geometry(model: BackboneConfig, img_size: tuple[int, int]) -> PatchGeometry:
    """The model's patch geometry at ``img_size`` (builds it at random init: no weights are read)."""
    with skip_pretrained():
        backbone = dataclasses.replace(model, img_size=list(img_size), taps=[]).build(0)
    return PatchGeometry.of_backbone(backbone)


def _check_grid(cfg: SaliencyConfig, geometry: PatchGeometry) -> None:
    if cfg.grid is not None and tuple(cfg.grid) != geometry.grid:
        raise OccreidError(f"saliency.grid {cfg.grid} differs from the model's patch grid {list(geometry.grid)} "
                           f"for backend '{cfg.backend}'", fix="set saliency.grid to null")


def _loader(records: Sequence[Record], cfg: SaliencyConfig, img_size: tuple[int, int]):
    transform = build_test_transform(TransformConfig(size=list(img_size), mean=list(cfg.mean), std=list(cfg.std)))
    return build_test_loader(records, transform, batch_size=cfg.batch_size, num_workers=cfg.num_workers)


@BACKENDS.register("classical")
def _classical(records, cfg, model, img_size, device):
    geometry = (PatchGeometry.tiling(img_size, cfg.grid) if cfg.grid is not None
                else _model_geometry(model, img_size))
    maps = np.zeros((len(records), *geometry.grid), np.float32)
    for i, rec in enumerate(tqdm(records, desc="classical saliency", leave=False, mininterval=1.0)):
        maps[i] = classical_saliency(load_rgb(rec.path, img_size), geometry, cfg.classical)
    return maps, geometry


@BACKENDS.register("attention")
def _attention(records, cfg, model, img_size, device):
    backbone = dataclasses.replace(model, img_size=list(img_size)).build(0, return_attn=True)
    geometry = PatchGeometry.of_backbone(backbone)
    _check_grid(cfg, geometry)
    return attention_maps(backbone, _loader(records, cfg, img_size), resolve_device(device)), geometry


@BACKENDS.register("sps")
def _sps(records, cfg, model, img_size, device):
    pids = sorted({r.pid for r in records})
    if pids != list(range(len(pids))):
        raise OccreidError("the sps backend trains an ID classifier: record pids must be 0..N-1 (a training split)",
                           fix="compute saliency on the relabelled training split (create_dataset(...).train)")
    method, _ = train_sps(records, len(pids), model, cfg.sps, img_size=img_size, mean=cfg.mean, std=cfg.std,
                          device=device)
    geometry = PatchGeometry.of_backbone(method.backbone)
    _check_grid(cfg, geometry)
    return sps_maps(method, _loader(records, cfg, img_size), resolve_device(device)), geometry


def compute_saliency(records: Sequence[Record], root: str | Path, cfg: SaliencyConfig, model: BackboneConfig,
                     *, device: str = "auto") -> SaliencyMaps:
    """Saliency of ``records`` (images inside the prepared folder ``root``) with backend ``cfg.backend``.

    ``model`` is the backbone the attention/sps backends run and whose patch grid every backend uses by
    default; ``cfg.img_size`` (default ``model.img_size``) is the size images are resized to.
    """
    if not records:
        raise OccreidError("no images to compute saliency for", path=root,
                           fix="saliency is computed on the training split: use a dataset that has one")
    img_size = tuple(cfg.img_size if cfg.img_size is not None else model.img_size)
    maps, geometry = BACKENDS.get(cfg.backend)(list(records), cfg, model, img_size, device)
    if not np.isfinite(maps).all():
        raise OccreidError(f"the {cfg.backend} backend produced non-finite saliency",
                           fix="check the model weights, or use backend: classical")
    maps = np.clip(maps, 0.0, 1.0)
    log.info("%s saliency of %d images on grid %s: mean %.3f", cfg.backend, len(records), geometry.grid,
             float(maps.mean()))
    return SaliencyMaps(maps, relative_paths([r.path for r in records], root), geometry, cfg.backend)
