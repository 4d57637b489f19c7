"""Batched feature (and mask) extraction for evaluation, with optional flip averaging.

Features go to host memory as they are produced, in the requested dtype (float16 halves the footprint of
a large gallery — MSMT17's 82,161 × 768 is 252 MB in float32), into a buffer allocated once when the
loader's dataset has a length, so no list of batches is concatenated at the end (the copy that doubles
peak memory and killed Occluded-Duke gallery extraction in keypoint_promptable_reidentification #1).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import torch
from tqdm import tqdm

from ..errors import OccreidError
from ..models.base import Embedding

log = logging.getLogger(__name__)

EmbedFn = Callable[[torch.Tensor, torch.Tensor], Any]  # (images, camids) -> Embedding | Tensor


def _embedding(out: Any, batch_size: int, step: int) -> Embedding:
    """Check one embed_fn output: an Embedding (or a bare feature tensor) of finite [B, D] features."""
    emb = out if isinstance(out, Embedding) else Embedding(out) if isinstance(out, torch.Tensor) else None
    if emb is None:
        raise OccreidError(f"embed_fn returned {type(out).__name__}, expected an Embedding(feat, mask)",
                           fix="return occreid.models.base.Embedding from the method's embed()")
    feat, mask = emb.feat, emb.mask
    if feat.ndim != 2 or feat.shape[0] != batch_size:
        raise OccreidError(f"batch {step}: features have shape {tuple(feat.shape)}, expected [{batch_size}, D]",
                           fix="embed_fn must return one feature vector per image")
    if mask is not None and mask.shape != feat.shape:
        raise OccreidError(f"batch {step}: mask shape {tuple(mask.shape)} differs from feature shape "
                           f"{tuple(feat.shape)}", fix="return one channel mask per feature vector")
    for name, t in (("features", feat), ("masks", mask)):
        if t is not None and not bool(torch.isfinite(t).all()):
            raise OccreidError(f"batch {step}: {name} contain NaN or infinite values",
                               fix="check the checkpoint (a diverged model) or disable AMP for evaluation")
    return emb


def _mean(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return None if a is None else (a.float() + b.float()) / 2


def extract_features(embed_fn: EmbedFn, loader: Iterable[dict], flip: bool, *,
                     out_dtype: torch.dtype = torch.float32,
                     desc: str = "extract") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``embed_fn(images, camids)`` over ``loader`` (dicts with "image" [B,C,H,W] and "camid" [B]).

    With ``flip`` each batch is also embedded mirrored left-right (last axis) and features and masks are
    averaged — before any normalisation, so the pair counts as one image. Returns (feats [N, D], masks
    [N, D] or None) on the CPU in ``out_dtype``. Runs under ``torch.no_grad``; putting the model in eval
    mode is the caller's job (``embed_fn`` is usually ``method.embed``).
    """
    total = len(loader.dataset) if hasattr(loader, "dataset") and hasattr(loader.dataset, "__len__") else None
    feats: torch.Tensor | list[torch.Tensor] = []
    masks: torch.Tensor | list[torch.Tensor] | None = []
    n = 0
    with torch.no_grad(), tqdm(total=total, desc=desc, unit="img", leave=False) as bar:
        for step, batch in enumerate(loader):
            if not isinstance(batch, dict) or "image" not in batch or "camid" not in batch:
                raise OccreidError(f"loader batch {step} is not a dict with 'image' and 'camid'",
                                   fix="use occreid.data.loader.ImageDataset items with a default DataLoader")
            images, camids = batch["image"], torch.as_tensor(batch["camid"])
            b = images.shape[0]
            emb = _embedding(embed_fn(images, camids), b, step)
            feat, mask = emb.feat, emb.mask
            if flip:
                mirror = _embedding(embed_fn(torch.flip(images, dims=[-1]), camids), b, step)
                if (mask is None) != (mirror.mask is None):
                    raise OccreidError("embed_fn returned a mask for only one of an image and its mirror",
                                       fix="make embed() return masks always or never")
                feat, mask = _mean(feat, mirror.feat), _mean(mask, mirror.mask)
            if step == 0:
                has_mask = mask is not None
                if total is not None:  # preallocate: no concatenation copy at the end
                    feats = torch.empty(total, feat.shape[1], dtype=out_dtype)
                    masks = torch.empty(total, feat.shape[1], dtype=out_dtype) if has_mask else None
            elif (mask is not None) != has_mask:
                raise OccreidError(f"batch {step}: embed_fn returned masks for some batches only",
                                   fix="make embed() return masks always or never")
            if isinstance(feats, torch.Tensor):
                if n + b > feats.shape[0] or feat.shape[1] != feats.shape[1]:
                    raise OccreidError(f"batch {step}: loader yields more images or another feature size than "
                                       f"its dataset ({feats.shape[0]} x {feats.shape[1]})",
                                       fix="use a loader without drop_last/sampler that changes the count")
                feats[n:n + b] = feat.to("cpu", out_dtype)
                if masks is not None:
                    masks[n:n + b] = mask.to("cpu", out_dtype)
            else:
                feats.append(feat.to("cpu", out_dtype))
                if has_mask:
                    masks.append(mask.to("cpu", out_dtype))
            n += b
            bar.update(b)
    if n == 0:
        raise OccreidError("the loader yielded no images", fix="check the split: it has no records")
    if isinstance(feats, list):
        feats = torch.cat(feats)
        masks = torch.cat(masks) if has_mask else None
    elif n != feats.shape[0]:
        raise OccreidError(f"loader yielded {n} images but its dataset has {feats.shape[0]}",
                           fix="use a loader without drop_last so every image is embedded once")
    log.info("extracted %d features of dimension %d%s", n, feats.shape[1], " with masks" if masks is not None else "")
    return feats, masks
