"""``dpm``: Dynamic Prototype Mask (Tan et al., ACM MM 2022) on any backbone that returns ``BackboneOutput``.

Parts (each its own module): the hierarchical mask generator (:mod:`occreid.models.mask_generator`) reads the
tapped patch tokens and gives one channel mask per image; the shared prototype matrix
(:mod:`occreid.losses.masked_arcface`) is trained by a plain branch and by a masked branch that compares the
feature with the prototypes inside the image's own mask; the head-enrich loss
(:mod:`occreid.losses.head_enrich`) decorrelates the last block's CLS attention heads; a soft-margin
batch-hard triplet trains the pre-BN CLS.

    loss = w_cls·L_cls + w_mask·L_mask + w_hem·L_hem + w_triplet·L_tri        (0.5 / 0.5 / 0.1 / 1.0)

Training step (released code): step A — forward, full loss, backward, step every parameter except the mask
generator's ("main"); step B — a second forward with the updated weights, backward, step only the mask
generator ("mask"). In step B the main parameters are temporarily frozen: the mask generator's gradient is the
same (its inputs are the backbone's activations, not its weights), the backbone's backward is skipped.

Evaluation: ``embed`` returns the pre-BN CLS and the mask, for the query-masked distance.
Switch meanings and where we follow the code rather than the paper: docs/DPM.md.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Literal

import torch
from torch import nn

from occreid.errors import OccreidError
from occreid.engine.optim import OptimizerSpec, param_groups
from occreid.losses import batch_hard_triplet, id_loss
from occreid.losses.head_enrich import REDUCTIONS, head_enrich_loss
from occreid.losses.masked_arcface import PrototypeClassifier, arcface_loss
from occreid.methods.base import METHODS, Batch, ReIDMethod
from occreid.models.base import BackboneOutput, Embedding
from occreid.models.factory import BackboneConfig
from occreid.models.heads import BNNeck
from occreid.models.mask_generator import HierarchicalMaskGenerator

if TYPE_CHECKING:
    from occreid.engine.config import TrainConfig
    from occreid.engine.context import TrainContext

MASK_PREFIX = "mask_generator."


@dataclass
class DPMConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck_feat: Literal["before", "after"] = "before"  # retrieval feature: pre-BN CLS (DPM) or the BN one
    # components (paper Table 3)
    mask: bool = True  # mask generator + masked prototype branch; off = the baseline (no masked branch)
    hierarchy: bool = True  # mask from all tapped blocks; off = from the deepest tapped block only
    head_enrich: bool = True  # head-enrich (HEM) loss
    # loss type of each branch (paper Table 4): softmax = unnormalised logits, arcface = s·cos + margin
    cls_loss: Literal["softmax", "arcface"] = "softmax"
    mask_loss: Literal["softmax", "arcface"] = "arcface"
    # where the mask acts (paper Table 5)
    mask_renormalize: bool = True  # re-normalise the masked prototype (released code); off: m ⊙ n(W) as is
    mask_feature: bool = False  # also mask the feature
    # weights (paper Eq. 8: alpha, 1 - alpha, beta, 1)
    w_cls: float = 0.5
    w_mask: float = 0.5
    w_hem: float = 0.1  # 0.01 for the Market → Occluded-REID preset
    w_triplet: float = 1.0
    arc_scale: float = 30.0
    arc_margin: float = 0.5  # 0.3 in DPM's Market and DukeMTMC configs
    hem_reduction: Literal["sum", "mean"] = "sum"  # sum over the batch, as the released code
    hem_softmax: bool = False  # paper's Eq. 5 (softmax attention) instead of the code's logits
    triplet_margin: float | None = None  # None: soft margin (DPM)
    # optimisation
    two_step: bool = True  # DPM's two-step update; off: one step over everything
    unscheduled_mask_lr: bool = False  # released code: the mask optimiser's lr is constant (no warm-up/decay)

    def __post_init__(self) -> None:
        for name in ("w_cls", "w_mask", "w_hem", "w_triplet"):
            if getattr(self, name) < 0:
                raise OccreidError(f"method.dpm.{name} must be >= 0, got {getattr(self, name)}")
        if self.cls_loss not in ("softmax", "arcface") or self.mask_loss not in ("softmax", "arcface"):
            raise OccreidError("method.dpm.cls_loss and mask_loss must be 'softmax' or 'arcface'")
        if self.hem_reduction not in REDUCTIONS:
            raise OccreidError(f"method.dpm.hem_reduction must be one of {', '.join(REDUCTIONS)}")
        if self.arc_scale <= 0 or not 0 <= self.arc_margin < math.pi:
            raise OccreidError("method.dpm.arc_scale must be > 0 and arc_margin in [0, pi)")


# Rows of the paper's ablation tables (t3: components, t4: loss types, t5: where the mask acts) as overrides
# of DPMConfig; the full model is the default. Names are identifiers, usable as experiment names.
ABLATIONS: dict[str, dict] = {
    "t3_baseline": dict(mask=False, head_enrich=False, w_cls=1.0),
    "t3_dpm": dict(hierarchy=False, head_enrich=False),
    "t3_dpm_hr": dict(head_enrich=False),
    "t3_dpm_hr_hem": dict(),
    # Table 4's DPM rows are Table 3's "+DPM" (no hierarchy, no HEM) with each loss pairing (cls / mask)
    "t4_baseline_s": dict(mask=False, head_enrich=False, w_cls=1.0, cls_loss="softmax"),
    "t4_baseline_a": dict(mask=False, head_enrich=False, w_cls=1.0, cls_loss="arcface"),
    "t4_dpm_s_s": dict(hierarchy=False, head_enrich=False, cls_loss="softmax", mask_loss="softmax"),
    "t4_dpm_a_a": dict(hierarchy=False, head_enrich=False, cls_loss="arcface", mask_loss="arcface"),
    "t4_dpm_s_a": dict(hierarchy=False, head_enrich=False, cls_loss="softmax", mask_loss="arcface"),
    "t5_prototype": dict(),
    "t5_prototype_unnormalised": dict(mask_renormalize=False),
    "t5_prototype_feature": dict(mask_feature=True),
    "t5_prototype_feature_unnormalised": dict(mask_renormalize=False, mask_feature=True),
}


@contextlib.contextmanager
def frozen(params: list[nn.Parameter]) -> Iterator[None]:
    """Temporarily stop gradients to ``params`` (their ``requires_grad`` flags are restored afterwards)."""
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


@METHODS.register("dpm")
class DPMMethod(ReIDMethod):
    name = "dpm"
    config_cls = DPMConfig

    def __init__(self, cfg: DPMConfig, num_classes: int, num_cams: int):
        super().__init__(cfg, num_classes, num_cams)
        self.backbone = cfg.backbone.build(num_cams, return_attn=cfg.head_enrich)
        dim = self.backbone.embed_dim
        self.neck = BNNeck(dim, 0)  # BN only; the classifier is the shared prototype matrix
        self.classifier = PrototypeClassifier(dim, num_classes)
        self.mask_generator: HierarchicalMaskGenerator | None = None
        if cfg.mask:
            taps = tuple(self.backbone.taps)
            if not taps:
                raise OccreidError(
                    "dpm's mask generator needs tapped blocks but the backbone has none",
                    fix="leave method.dpm.backbone.taps null (the variant's taps) or list block numbers, e.g. [2, 4, 10, 12]",
                )
            self.mask_generator = HierarchicalMaskGenerator(dim, len(taps) if cfg.hierarchy else 1)

    # ------------------------------------------------------------------------------------------ forward
    def compute_mask(self, out: BackboneOutput) -> torch.Tensor | None:
        """The mask [B, D] from the tapped tokens (all taps, or the deepest one without hierarchy)."""
        if self.mask_generator is None:
            return None
        taps = out.taps if self.cfg.hierarchy else out.taps[-1:]
        return self.mask_generator(taps, out.grid)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        pids = batch["pid"]
        out = self.backbone(batch["image"], batch["camid"])
        bn = self.neck.bn(out.cls)
        terms: dict[str, torch.Tensor] = {}
        if cfg.w_cls > 0:
            if cfg.cls_loss == "softmax":
                terms["id"] = cfg.w_cls * id_loss(self.classifier.plain_logits(bn), pids)
            else:
                cos = self.classifier.cosine(bn)
                terms["id"] = cfg.w_cls * arcface_loss(cos, pids, scale=cfg.arc_scale, margin=cfg.arc_margin)
        if self.mask_generator is not None and cfg.w_mask > 0:
            mask = self.compute_mask(out)
            if cfg.mask_loss == "softmax":
                terms["mask_id"] = cfg.w_mask * id_loss(self.classifier.plain_logits(bn * mask), pids)
            else:
                cos = self.classifier.cosine(
                    bn, mask, renormalize=cfg.mask_renormalize, mask_feature=cfg.mask_feature
                )
                terms["mask_id"] = cfg.w_mask * arcface_loss(cos, pids, scale=cfg.arc_scale, margin=cfg.arc_margin)
        if cfg.head_enrich and cfg.w_hem > 0:
            terms["hem"] = cfg.w_hem * head_enrich_loss(
                out.attn_logits, reduction=cfg.hem_reduction, softmax=cfg.hem_softmax
            )
        if cfg.w_triplet > 0:
            terms["triplet"] = cfg.w_triplet * batch_hard_triplet(out.cls, pids, cfg.triplet_margin)
        return terms

    def embed(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> Embedding:
        out = self.backbone(images, camids)
        feat = out.cls if self.cfg.neck_feat == "before" else self.neck.bn(out.cls)
        return Embedding(feat=feat, mask=self.compute_mask(out))

    # ------------------------------------------------------------------------------------------ training
    def main_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.startswith(MASK_PREFIX)]

    def optimizers(self, train_cfg: TrainConfig) -> list[OptimizerSpec]:
        """"main" over everything but the mask generator and, with the two-step update, "mask" over it."""
        if self.mask_generator is None or not self.cfg.two_step:
            return super().optimizers(train_cfg)
        opt = train_cfg.optimizer
        mask_params = [(MASK_PREFIX + n, p) for n, p in self.mask_generator.named_parameters()]
        return [
            OptimizerSpec("main", param_groups(self.main_named_parameters(), opt), opt),
            OptimizerSpec("mask", param_groups(mask_params, opt), opt, scheduled=not self.cfg.unscheduled_mask_lr),
        ]

    def train_step(self, batch: Batch, ctx: TrainContext) -> dict[str, float]:
        if self.mask_generator is None or not self.cfg.two_step:
            return super().train_step(batch, ctx)
        # step A: everything but the mask generator
        ctx.zero_grad("main", "mask")
        with ctx.autocast():
            terms = self.losses(batch)
            total = torch.stack([t.float() for t in terms.values()]).sum()
        ctx.backward_and_step(total, "main")
        logs = {"loss": total.item(), **{k: v.item() for k, v in terms.items()}}
        # step B: the mask generator only, from a fresh forward with the updated weights
        ctx.zero_grad("mask")
        with frozen([p for _, p in self.main_named_parameters()]):
            with ctx.autocast():
                terms_b = self.losses(batch)
                total_b = torch.stack([t.float() for t in terms_b.values()]).sum()
            if total_b.requires_grad:
                ctx.backward_and_step(total_b, "mask")
        logs["loss_mask_step"] = total_b.item()
        return logs
