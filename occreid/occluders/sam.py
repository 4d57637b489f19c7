"""SAM for the occluder library: the real models with their checkpoints, and a tiny random one for tests.

Real types (``vit_b``, ``vit_l``, ``vit_h``) are built by ``segment_anything.sam_model_registry`` with
``checkpoint=None`` (its own loader calls ``torch.load`` without ``weights_only``); the weights are then
loaded here with ``weights_only=True``, strictly, so a checkpoint of another type fails with the names that
differ. The checkpoint is a local file, or is downloaded (resumable, mirrors, sha256-checked) with the
dataset downloader :func:`occreid.data.download.fetch`.

``tiny`` is SAM's own architecture assembled from ``segment_anything.modeling`` at a toy width
(:data:`TINY_SAM`: 64 px input, 16 px patches, width 32, two blocks): ~0.1 M parameters, random weights,
a forward pass in milliseconds. It exercises the real automatic mask generator end to end; with random
weights its masks are noise (a few fragmented blobs per image, stability 0), so tests relax the thresholds
and the CPU demo uses the classical backend instead.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from occreid.errors import OccreidError

from .backends import Candidate
from .config import SamConfig

log = logging.getLogger(__name__)

# Meta's release of segment-anything (README "Model Checkpoints").
OFFICIAL_URLS = {
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
}


@dataclass(frozen=True)
class SamSpec:
    """The sizes of a SAM assembled from ``segment_anything.modeling`` (the real ones are in its builders)."""

    img_size: int
    patch: int
    embed_dim: int
    depth: int
    heads: int
    window: int
    global_attn: tuple[int, ...]
    prompt_dim: int  # prompt encoder, mask decoder and image-encoder output width
    decoder_mlp: int
    decoder_heads: int
    iou_hidden: int


TINY_SAM = SamSpec(img_size=64, patch=16, embed_dim=32, depth=2, heads=2, window=2, global_attn=(1,),
                   prompt_dim=32, decoder_mlp=64, decoder_heads=2, iou_hidden=32)


def assemble_sam(spec: SamSpec) -> torch.nn.Module:
    """A randomly initialised ``segment_anything.modeling.Sam`` of the sizes in ``spec`` (eval mode)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = spec.img_size // spec.patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=spec.depth, embed_dim=spec.embed_dim, img_size=spec.img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=spec.heads, patch_size=spec.patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=spec.global_attn, window_size=spec.window,
            out_chans=spec.prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=spec.prompt_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(spec.img_size, spec.img_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=spec.prompt_dim, mlp_dim=spec.decoder_mlp,
                                          num_heads=spec.decoder_heads),
            transformer_dim=spec.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=spec.iou_hidden),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def default_cache_dir() -> Path:
    """Where downloaded SAM checkpoints go: ``$OCCREID_CACHE/sam``, else ``~/.cache/occreid/sam``."""
    root = os.environ.get("OCCREID_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "occreid") / "sam"


def checkpoint_path(cfg: SamConfig) -> Path:
    """The local checkpoint of ``cfg.model_type``: ``cfg.checkpoint``, or a verified download."""
    from occreid.data.download import DownloadOptions, fetch, verify_sha256

    where = "occluders.sam.sha256"
    if cfg.checkpoint is not None:
        path = Path(cfg.checkpoint)
        if not path.is_file():
            raise OccreidError("SAM checkpoint not found", path=path,
                               fix=f"download the {cfg.model_type} checkpoint ({OFFICIAL_URLS[cfg.model_type]}) "
                                   "there, or set occluders.sam.checkpoint: null to download it")
        verify_sha256(path, cfg.sha256 or "", accept_unknown=cfg.accept_unknown_hash, where=where)
        return path
    urls = list(cfg.urls) or [OFFICIAL_URLS[cfg.model_type]]
    dest = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    dest = dest / Path(urls[0].split("?")[0]).name
    sha, used = fetch(urls, dest, sha256=cfg.sha256 or "", accept_unknown_hash=cfg.accept_unknown_hash,
                      where=where, opts=DownloadOptions())
    log.info("SAM %s checkpoint %s (sha256 %s, from %s)", cfg.model_type, dest, sha, used)
    return dest


def load_state(model: torch.nn.Module, path: Path, model_type: str) -> None:
    """Load a SAM state dict into ``model`` (``weights_only``, strict; mismatches are listed)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file or a pickle that is not plain tensors
        raise OccreidError(f"cannot read the SAM checkpoint: {e}", path=path,
                           fix="download it again (delete the file), or check it is a segment-anything .pth") from None
    state = state.get("model", state) if isinstance(state, dict) else state
    mine = model.state_dict()
    missing = sorted(set(mine) - set(state))
    unexpected = sorted(set(state) - set(mine))
    shaped = sorted(k for k in set(mine) & set(state) if tuple(mine[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shaped:
        show = lambda names: ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")  # noqa: E731
        raise OccreidError(
            f"the checkpoint does not fit SAM {model_type}: {len(missing)} missing ({show(missing)}), "
            f"{len(unexpected)} unexpected ({show(unexpected)}), {len(shaped)} of another shape ({show(shaped)})",
            path=path, fix="set occluders.sam.model_type to the checkpoint's type (vit_b / vit_l / vit_h)")
    model.load_state_dict(state, strict=True)


def build_sam(cfg: SamConfig, seed: int = 0) -> torch.nn.Module:
    """The SAM of ``cfg.model_type`` in eval mode: ``tiny`` at random (seeded, without touching the global
    RNG), the others from ``segment_anything.sam_model_registry`` with their checkpoint."""
    if cfg.model_type == "tiny":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return assemble_sam(TINY_SAM)
    from segment_anything import sam_model_registry

    path = checkpoint_path(cfg)
    model = sam_model_registry[cfg.model_type](checkpoint=None)
    load_state(model, path, cfg.model_type)
    return model.eval()


class SamMasks:
    """Image → candidate masks with SAM's automatic mask generator (a grid of point prompts, NMS)."""

    def __init__(self, cfg: SamConfig, seed: int = 0, device: str = "cpu"):
        from segment_anything import SamAutomaticMaskGenerator

        model = build_sam(cfg, seed).to(device)
        self.generator = SamAutomaticMaskGenerator(
            model, points_per_side=cfg.points_per_side, points_per_batch=cfg.points_per_batch,
            pred_iou_thresh=cfg.pred_iou_thresh, stability_score_thresh=cfg.stability_score_thresh,
            stability_score_offset=cfg.stability_score_offset, box_nms_thresh=cfg.box_nms_thresh,
            crop_n_layers=cfg.crop_n_layers, output_mode="binary_mask")

    def __call__(self, rgb: np.ndarray) -> list[Candidate]:
        """One candidate per mask SAM keeps; the score is SAM's predicted IoU."""
        with torch.inference_mode():
            records = self.generator.generate(np.ascontiguousarray(rgb))
        found = (Candidate.from_full(np.asarray(r["segmentation"], bool), r["predicted_iou"]) for r in records)
        return [c for c in found if c is not None]
