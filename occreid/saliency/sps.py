"""SPT's learned saliency ("SPS" model): a 1×1 convolution over the backbone's block taps, trained with ID losses.

Our reading of SPT (AAAI 2024, the same authors as DPM++; its released code is a description, not a runnable
reference — see docs/ARCHITECTURE.md and the method facts):

- Head: the patch tokens after the tapped blocks (ViT-B: 2, 4, 10, 12) are **detached** and concatenated on
  channels, a 1×1 convolution maps them to one channel, a sigmoid gives a saliency in (0, 1) per patch.
  Detaching keeps the head from reshaping the features it reads: the backbone learns re-ID, the head
  learns where the identity is.
- Three forward passes per batch: the full image; the *salient-only* view, whose patch embeddings are
  multiplied by the saliency; the *non-salient* view, multiplied by (1 − saliency).
- Loss: CE(full) + CE(salient-only) + soft-margin batch-hard triplet(full CLS)
  + ``usage_weight``·(mean saliency − ``usage_target``)² (default 50·(m − 0.3)²: keep about 30 % of the
  patches, or the head would call everything salient) + ``rest_weight``·Σ_batch ⟨softmax(full logits),
  softmax(non-salient logits)⟩ (default 0.1: the remainder must not predict the identity the full image
  predicts). The full view's probabilities are detached in that last term, so it moves the saliency and the
  non-salient view, and never pushes the full prediction away from the truth.

Training runs on the shared engine (:func:`occreid.engine.fit`): P×K batches, seeded, tqdm, checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from occreid.data.records import Record
from occreid.data.transforms import TransformConfig
from occreid.errors import OccreidError
from occreid.losses import batch_hard_triplet, id_loss
from occreid.methods.base import Batch, ReIDMethod
from occreid.models.base import Embedding
from occreid.models.factory import BackboneConfig
from occreid.models.heads import BNNeck
from occreid.saliency.config import SpsConfig
from occreid.saliency.geometry import patch_tokens_hook

log = logging.getLogger(__name__)


class SaliencyHead(nn.Module):
    """Detached taps ``[B, N, D]`` × T → 1×1 conv over the T·D channels → sigmoid → ``[B, h, w]``."""

    def __init__(self, dim: int, num_taps: int):
        super().__init__()
        if num_taps < 1:
            raise OccreidError("the saliency head needs at least one tapped block",
                               fix="give the backbone taps (model.taps, e.g. [2, 4, 10, 12] for ViT-B)")
        self.dim, self.num_taps = dim, num_taps
        self.conv = nn.Conv2d(dim * num_taps, 1, kernel_size=1)

    def forward(self, taps: Sequence[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        if len(taps) != self.num_taps:
            raise ValueError(f"expected {self.num_taps} taps, got {len(taps)}")
        x = torch.cat([t.detach() for t in taps], dim=-1)  # [B, N, T·D]
        b, n, c = x.shape
        if n != grid[0] * grid[1]:
            raise ValueError(f"{n} tokens do not fill the grid {grid}")
        x = x.transpose(1, 2).reshape(b, c, *grid)
        return torch.sigmoid(self.conv(x)).squeeze(1)


def sps_loss_terms(
    full_logits: torch.Tensor,
    salient_logits: torch.Tensor,
    rest_logits: torch.Tensor,
    saliency: torch.Tensor,
    pids: torch.Tensor,
    full_feat: torch.Tensor,
    cfg: SpsConfig,
) -> dict[str, torch.Tensor]:
    """SPT's stage-1 loss terms, already weighted (terms with weight 0 are left out)."""
    terms: dict[str, torch.Tensor] = {}
    if cfg.id_weight > 0:
        terms["id"] = cfg.id_weight * id_loss(full_logits, pids)
    if cfg.salient_id_weight > 0:
        terms["id_salient"] = cfg.salient_id_weight * id_loss(salient_logits, pids)
    if cfg.triplet_weight > 0:
        terms["triplet"] = cfg.triplet_weight * batch_hard_triplet(full_feat.float(), pids, margin=None)
    if cfg.usage_weight > 0:
        terms["usage"] = cfg.usage_weight * (saliency.float().mean() - cfg.usage_target) ** 2
    if cfg.rest_weight > 0:
        p_full = F.softmax(full_logits.float().detach(), dim=1)
        p_rest = F.softmax(rest_logits.float(), dim=1)
        terms["rest"] = cfg.rest_weight * (p_full * p_rest).sum()
    return terms


@dataclass
class SpsMethodConfig:
    """What the engine fingerprints and checkpoints: the backbone and the head's training knobs."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    sps: SpsConfig = field(default_factory=SpsConfig)


class SpsMethod(ReIDMethod):
    """Backbone + BNNeck classifier + :class:`SaliencyHead`, trained with :func:`sps_loss_terms`."""

    name = "sps"
    config_cls = SpsMethodConfig

    def __init__(self, cfg: SpsMethodConfig, num_classes: int, num_cams: int = 0):
        super().__init__(cfg, num_classes, num_cams)
        self.backbone = cfg.backbone.build(0)  # no camera embedding: saliency must not depend on the camera
        self.neck = BNNeck(self.backbone.embed_dim, num_classes)
        self.head = SaliencyHead(self.backbone.embed_dim, len(self.backbone.taps))

    def _logits(self, images: torch.Tensor, weights: torch.Tensor | None = None):
        if weights is None:
            out = self.backbone(images, None)
        else:
            with patch_tokens_hook(self.backbone, lambda t: t * weights.unsqueeze(-1).to(t.dtype)):
                out = self.backbone(images, None)
        return out, self.neck(out.cls)[1]

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = batch["image"]
        full, full_logits = self._logits(images)
        saliency = self.head(full.taps, tuple(full.grid))
        weights = saliency.flatten(1)  # [B, N]
        _, salient_logits = self._logits(images, weights)
        _, rest_logits = self._logits(images, 1.0 - weights)
        return sps_loss_terms(full_logits, salient_logits, rest_logits, saliency, batch["pid"], full.cls, self.cfg.sps)

    def saliency(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, h, w]`` saliency in (0, 1) (call under ``torch.no_grad()`` in eval mode)."""
        out = self.backbone(images, None)
        return self.head(out.taps, tuple(out.grid))

    def embed(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> Embedding:
        return Embedding(feat=self.backbone(images, None).cls)


def train_sps(
    records: Sequence[Record],
    num_classes: int,
    backbone: BackboneConfig,
    cfg: SpsConfig,
    *,
    img_size: Sequence[int],
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    device: str = "auto",
    work_dir: str | Path | None = None,
) -> tuple[SpsMethod, list[dict]]:
    """Train the saliency head (and the backbone) on ``records``; returns the model and its per-epoch history.

    ``work_dir`` keeps the engine's resumable checkpoints; None trains in a temporary folder. Random
    erasing is off: erased blocks would look like occluders inside the person and blur what the head learns.
    """
    from occreid.engine import fit, seed_everything
    from occreid.engine.config import SchedulerConfig, TrainConfig

    seed_everything(cfg.seed, True)  # the head's and the classifier's init
    bb = dataclasses.replace(backbone, img_size=list(img_size), sie=False)
    method = SpsMethod(SpsMethodConfig(backbone=bb, sps=cfg), num_classes)
    train_cfg = TrainConfig(
        epochs=cfg.epochs, ids_per_batch=cfg.ids_per_batch, images_per_id=cfg.images_per_id,
        optimizer=cfg.optimizer, scheduler=SchedulerConfig(warmup_epochs=cfg.warmup_epochs), seed=cfg.seed,
        device=device, checkpoint_period=cfg.epochs, keep_checkpoints=1,
        transforms=TransformConfig(size=list(img_size), mean=list(mean), std=list(std), random_erasing_p=0.0),
    )
    if work_dir is not None:
        history = fit(method, records, train_cfg, work_dir, resume=True)
    else:
        with tempfile.TemporaryDirectory(prefix="occreid-sps-") as tmp:
            history = fit(method, records, train_cfg, tmp, resume=False)
    log.info("saliency head trained for %d epochs, last losses: %s", cfg.epochs,
             {k: round(v, 4) for k, v in history[-1].items() if k in ("loss", "usage", "rest")})
    return method, history


@torch.no_grad()
def sps_maps(method: SpsMethod, loader: DataLoader, device: torch.device) -> np.ndarray:
    """Saliency of every image of ``loader`` (in order), ``[N, h, w]`` float32."""
    method.eval().to(device)
    maps = [method.saliency(b["image"].to(device)).float().cpu().numpy()
            for b in tqdm(loader, desc="sps saliency", leave=False, mininterval=1.0)]
    return np.concatenate(maps).astype(np.float32) if maps else np.zeros((0, 0, 0), np.float32)
