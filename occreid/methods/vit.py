"""``vit``: the TransReID-style ViT baseline (the baseline of the DPM paper).

ViT (optionally overlapping patches and SIE) → CLS feature → BNNeck. Losses: ID cross-entropy on the
BN feature's logits (optional label smoothing) and batch-hard triplet on the pre-BN feature, each with
its weight. The retrieval feature is the pre-BN CLS (``neck_feat: before``, TransReID/DPM) or the BN one.
Default triplet is the soft-margin form DPM's code base trains with; set ``triplet_margin: 0.3`` for the
hard-margin TransReID/CLIP-ReID form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from occreid.errors import OccreidError
from occreid.losses import batch_hard_triplet, id_loss
from occreid.methods.base import METHODS, Batch, ReIDMethod
from occreid.models.base import Embedding
from occreid.models.factory import BackboneConfig
from occreid.models.heads import BNNeck


@dataclass
class VitConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck_feat: Literal["before", "after"] = "before"
    id_loss_weight: float = 1.0
    triplet_loss_weight: float = 1.0
    label_smoothing: float = 0.0
    triplet_margin: float | None = None  # None: soft margin (DPM); 0.3: TransReID / CLIP-ReID

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise OccreidError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.id_loss_weight < 0 or self.triplet_loss_weight < 0:
            raise OccreidError("loss weights must be >= 0")


@METHODS.register("vit")
class VitMethod(ReIDMethod):
    name = "vit"
    config_cls = VitConfig

    def __init__(self, cfg: VitConfig, num_classes: int, num_cams: int):
        super().__init__(cfg, num_classes, num_cams)
        self.backbone = cfg.backbone.build(num_cams)
        self.neck = BNNeck(self.backbone.embed_dim, num_classes)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        out = self.backbone(batch["image"], batch["camid"])
        _, logits = self.neck(out.cls)
        terms: dict[str, torch.Tensor] = {}
        if cfg.id_loss_weight > 0:
            terms["id"] = cfg.id_loss_weight * id_loss(logits, batch["pid"], cfg.label_smoothing)
        if cfg.triplet_loss_weight > 0:
            terms["triplet"] = cfg.triplet_loss_weight * batch_hard_triplet(out.cls, batch["pid"], cfg.triplet_margin)
        return terms

    def embed(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> Embedding:
        feat = self.backbone(images, camids).cls
        if self.cfg.neck_feat == "after":
            feat = self.neck.bn(feat)
        return Embedding(feat=feat)
