"""``clipreid``: CLIP-ReID's second stage (Li et al., AAAI 2023) on the shared engine.

The CLIP image encoder (+ optional camera embedding) is fine-tuned with: two BNNecks, one on the D-dim CLS
and one on the projected CLS, each with its own linear ID classifier; ID loss = label-smoothed CE of both
(weight 0.25); batch-hard triplet (margin 0.3) on the penultimate-block CLS, the CLS and the projected CLS;
and the image-to-text loss: label-smoothed CE of the logits ``proj · text_featuresᵀ`` against the
per-identity text features learned in stage 1 (``stages.prompts``; raw dot products, no temperature, as
the reference). The text features are a frozen buffer saved with the model, so evaluation needs no
prompts. Retrieval feature: concat(pre-BN CLS, pre-BN proj) (``neck_feat: before``).

CLIP-ReID trains with its own optimiser (Adam, lr 5e-6, wd 1e-4, bias lr ×2), the default of
``optimizer`` here; its schedule and batch (60 epochs, warm-up 10 from 0.1×, ×0.1 at 30 and 50, 16×4) are
``train`` settings, given as :data:`TRAIN_PRESET` for params.yaml.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Literal

import torch

from occreid.engine.config import OptimizerConfig
from occreid.engine.optim import OptimizerSpec, param_groups
from occreid.errors import OccreidError
from occreid.losses import batch_hard_triplet, id_loss
from occreid.methods.base import METHODS, Batch, ReIDMethod
from occreid.models import clip_backbone  # noqa: F401  (registers the clip backbones)
from occreid.models.base import Embedding
from occreid.models.factory import BACKBONES, BackboneConfig
from occreid.models.heads import BNNeck
from occreid.prompts.store import load_text_features

log = logging.getLogger(__name__)

#: ``train`` section of CLIP-ReID's stage 2 (method-facts §3.3), to use as an experiment's overrides.
TRAIN_PRESET: dict = {
    "epochs": 60,
    "ids_per_batch": 16,
    "images_per_id": 4,
    "scheduler": {"name": "multistep", "warmup_epochs": 10, "warmup_factor": 0.1, "milestones": [30, 50], "gamma": 0.1},
    "transforms": {"size": [256, 128], "flip_p": 0.5, "pad": 10, "random_erasing_p": 0.5,
                   "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
}


def _clip_backbone() -> BackboneConfig:
    return BackboneConfig(name="clip_vit_b16", pretrained="default", img_size=[256, 128], stride=16,
                          sie=False, sie_coef=1.0, sie_mode="cls", taps=[])


def _clipreid_adam() -> OptimizerConfig:
    return OptimizerConfig(name="adam", lr=5e-6, weight_decay=1e-4, bias_lr_factor=2.0, weight_decay_bias=1e-4)


@dataclass
class ClipReIDConfig:
    """Params of ``methods.clipreid``. ``text_features``: stage-1 output (``data/prompts/<dataset>`` or its
    ``text_features.pt``), set by the train stage; None builds the model without them (to load a trained
    state dict). ``optimizer`` None uses ``train.optimizer``. SIE+OLP variant: ``backbone.sie: true``,
    ``backbone.stride: 12``."""

    backbone: BackboneConfig = field(default_factory=_clip_backbone)
    text_features: str | None = None
    optimizer: OptimizerConfig | None = field(default_factory=_clipreid_adam)
    neck_feat: Literal["before", "after"] = "before"
    id_loss_weight: float = 0.25
    triplet_loss_weight: float = 1.0
    i2t_loss_weight: float = 1.0
    label_smoothing: float = 0.1
    triplet_margin: float | None = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise OccreidError(f"methods.clipreid.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if min(self.id_loss_weight, self.triplet_loss_weight, self.i2t_loss_weight) < 0:
            raise OccreidError("methods.clipreid loss weights must be >= 0")
        if self.backbone.name in BACKBONES and BACKBONES.get(self.backbone.name).family != "clip":
            raise OccreidError(f"methods.clipreid.backbone.name '{self.backbone.name}' is not a CLIP backbone",
                               fix=f"use one of {clip_backbone.clip_backbone_names()}")


@METHODS.register("clipreid")
class ClipReIDMethod(ReIDMethod):
    name = "clipreid"
    config_cls = ClipReIDConfig

    def __init__(self, cfg: ClipReIDConfig, num_classes: int, num_cams: int):
        super().__init__(cfg, num_classes, num_cams)
        self.backbone = cfg.backbone.build(num_cams)
        self.neck = BNNeck(self.backbone.embed_dim, num_classes)
        self.neck_proj = BNNeck(self.backbone.proj_dim, num_classes)
        self.register_buffer("text_features", torch.zeros(num_classes, self.backbone.proj_dim))
        if cfg.text_features is not None:
            feats = load_text_features(
                cfg.text_features, num_ids=num_classes, embed_dim=self.backbone.proj_dim,
                backbone=dataclasses.asdict(cfg.backbone),
            )
            self.text_features.copy_(feats)

    def optimizers(self, train_cfg) -> list[OptimizerSpec]:
        """CLIP-ReID's Adam over every trainable parameter (text features are a buffer, never trained)."""
        opt = self.cfg.optimizer or train_cfg.optimizer
        if self.cfg.optimizer is not None:
            log.info("clipreid: optimiser from methods.clipreid.optimizer (%s, lr %g); train.optimizer unused",
                     opt.name, opt.lr)
        return [OptimizerSpec("main", param_groups(self.named_parameters(), opt), opt)]

    def _require_text(self) -> None:
        if self.cfg.i2t_loss_weight > 0 and not bool(self.text_features.any()):
            raise OccreidError(
                "clipreid has no text features: its image-to-text loss needs the prompts stage's output",
                fix="run `python -m stages.prompts --dataset NAME` and set methods.clipreid.text_features",
            )

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, pids = self.cfg, batch["pid"]
        out = self.backbone(batch["image"], batch["camid"])
        proj = out.extra["proj"]
        terms: dict[str, torch.Tensor] = {}
        if cfg.id_loss_weight > 0:
            _, logits = self.neck(out.cls)
            _, logits_proj = self.neck_proj(proj)
            ce = id_loss(logits, pids, cfg.label_smoothing) + id_loss(logits_proj, pids, cfg.label_smoothing)
            terms["id"] = cfg.id_loss_weight * ce
        if cfg.triplet_loss_weight > 0:
            tri = sum(batch_hard_triplet(f, pids, cfg.triplet_margin) for f in (out.extra["cls_prev"], out.cls, proj))
            terms["triplet"] = cfg.triplet_loss_weight * tri
        if cfg.i2t_loss_weight > 0:
            self._require_text()
            terms["i2t"] = cfg.i2t_loss_weight * id_loss(self.i2t_logits(proj), pids, cfg.label_smoothing)
        return terms

    def i2t_logits(self, proj: torch.Tensor) -> torch.Tensor:
        """Image-to-text logits ``[B, num_ids]``: projected image feature · every identity's text feature."""
        return proj.float() @ self.text_features.t()

    def embed(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> Embedding:
        out = self.backbone(images, camids)
        cls, proj = out.cls, out.extra["proj"]
        if self.cfg.neck_feat == "after":
            cls, proj = self.neck.bn(cls), self.neck_proj.bn(proj)
        return Embedding(feat=torch.cat([cls, proj], dim=1))
