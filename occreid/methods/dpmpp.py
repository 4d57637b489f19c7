"""``dpmpp``: DPM++ (Tan et al., arXiv 2605.06637) — DPM's dynamic masked metric on CLIP, plus four parts.

No code was released; this is our reading of the abstract and the figure captions (docs/METHOD.md says,
part by part, what the paper states, what we inferred and which switch turns it off). The method *is* DPM
(:class:`~occreid.methods.dpm.DPMMethod`: hierarchical mask generator, head-enrich loss, shared prototype
matrix W with the plain and the masked ArcFace branch, DPM's two-step update, masked retrieval) on a CLIP
image encoder, and adds:

1. Early semantic anchoring (:mod:`occreid.losses.anchoring`): W starts from the stage-1 per-identity
   text features mapped into the prototype space through CLIP's visual projection, and is held there for
   the first ``anchor_epochs`` epochs (``freeze``: not updated; ``loss``: a decaying pull towards them).
2. Saliency-guided patch transfer (:mod:`occreid.augment`): a training image is placed into a partner's
   scene from the ``spt_sets`` partner table (label kept), in pixels or in patch embeddings; random
   erasing and cut-and-paste are the baselines (``transfer.mode``).
3. Occlusion-aware pairing: the pairing sampler puts each occluded view in the batch of its holistic
   source (``pair_id``), so the losses can compare them.
4. Mask-guided optimisation (:mod:`occreid.losses.mask_guided`): batch-hard triplet through the anchor's
   mask (as retrieval ranks through the query's mask), and a consistency term tying each occluded view to
   its source inside the view's mask, weighted by ``alpha``.

The method supplies its own training batches through :meth:`train_data` (the engine's hook); the epoch
for the anchoring comes from the engine's :class:`~occreid.engine.context.TrainContext`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn

from occreid.augment.config import TransferConfig
from occreid.augment.pairing import OcclusionPairSampler, PairedTransferDataset, PairItem
from occreid.augment.partners import SptSets, load_spt_sets
from occreid.augment.transfer import transfer_tokens
from occreid.config import merge
from occreid.data.cache import train_images
from occreid.data.records import Record
from occreid.data.sampler import PKBatchSampler
from occreid.data.transforms import build_test_transform
from occreid.engine.seeding import derive_seed
from occreid.errors import OccreidError
from occreid.losses.anchoring import (Schedule, TextMap, anchor_loss, anchor_weight, in_anchor_period,
                                      text_to_prototypes, xavier_row_norm)
from occreid.losses.mask_guided import masked_batch_hard_triplet, masked_consistency, pair_indices
from occreid.methods.base import METHODS, Batch
from occreid.methods.dpm import DPMConfig, DPMMethod, frozen
from occreid.models import clip_backbone
from occreid.models.factory import BACKBONES, BackboneConfig
from occreid.prompts.store import load_text_features
from occreid.saliency.geometry import patch_tokens_hook

if TYPE_CHECKING:
    from occreid.engine.config import TrainConfig
    from occreid.engine.context import TrainContext


def _clip_backbone() -> BackboneConfig:
    """OpenAI CLIP ViT-B/16 with CLIP-ReID's SIE+OLP settings (stride 12, camera embedding ×1.0 on the CLS)."""
    return BackboneConfig(name="clip_vit_b16", pretrained="default", img_size=[256, 128], stride=12,
                          sie=True, sie_coef=1.0, sie_mode="cls")


@dataclass
class DPMPPConfig(DPMConfig):
    """Params of ``methods.dpmpp``: every DPM switch (docs/DPM.md) plus the DPM++ parts (docs/METHOD.md).

    ``text_features`` (``data/prompts/<dataset>``) and ``spt_partners`` (``data/spt/<dataset>`` or its
    ``partners.npz``) are filled by the train stage; None builds the model without them (to load a trained
    state dict), and training then refuses a part that needs them.
    """

    backbone: BackboneConfig = field(default_factory=_clip_backbone)
    # early semantic anchoring
    text_features: str | None = None
    text_map: TextMap = "pinv"  # text → prototype space: pseudo-inverse of CLIP's proj, or its transpose
    anchor_init: bool = True  # W starts from the mapped text features (off: xavier, as DPM)
    anchor_mode: Literal["freeze", "loss", "none"] = "freeze"  # how W is held near them ("none", not YAML's off)
    anchor_epochs: int = 5  # the anchoring period (presets: the warm-up length)
    anchor_weight: float = 1.0  # λ at epoch 1 (anchor_mode: loss)
    anchor_schedule: Schedule = "linear"  # λ decay to 0 over anchor_epochs (anchor_mode: loss)
    # saliency-guided patch transfer and occlusion-aware pairing
    spt_partners: str | None = None
    transfer: TransferConfig = field(default_factory=TransferConfig)  # mode spt|random_erasing|cut_paste|none, p, space
    pairing: bool = True  # views in the batch of their holistic source; off: views replace images in place
    # mask-guided optimisation
    masked_triplet: bool = True  # batch-hard triplet through the anchor's mask
    consistency: bool = True  # occluded view ↔ holistic source inside the view's mask
    alpha: float = 1.0  # weight of the consistency term
    consistency_stop_grad: bool = True  # the holistic source is the target (no gradient)
    metric_mask_grad: bool = False  # the two metric losses also train the mask generator

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backbone.name in BACKBONES and BACKBONES.get(self.backbone.name).family != "clip":
            raise OccreidError(f"methods.dpmpp.backbone.name '{self.backbone.name}' is not a CLIP backbone",
                               fix=f"use one of {clip_backbone.clip_backbone_names()}")
        if self.anchor_epochs < 0 or self.anchor_weight < 0 or self.alpha < 0:
            raise OccreidError("methods.dpmpp: anchor_epochs, anchor_weight and alpha must be >= 0")
        if self.anchor_mode == "freeze" and not self.anchor_init:
            raise OccreidError("methods.dpmpp.anchor_mode 'freeze' would freeze a random prototype matrix",
                               fix="set anchor_init: true, or anchor_mode: none (or loss)")
        if self.consistency and not self.pairing:
            raise OccreidError("methods.dpmpp.consistency needs pairing (a view's source must be in its batch)",
                               fix="set pairing: true, or consistency: false")


# Each DPM++ component off in turn, and the baselines SPT is compared with (overrides of DPMPPConfig; the
# full model is the default). no_pairing also drops the consistency term, which needs the pairs.
ABLATIONS: dict[str, dict] = {
    "full": {},
    "no_anchor": {"anchor_init": False, "anchor_mode": "none"},
    "no_spt": {"transfer": {"mode": "none"}},
    "no_pairing": {"pairing": False, "consistency": False},
    "no_mask_guided": {"masked_triplet": False, "consistency": False},
    "no_consistency": {"consistency": False},
    "random_erasing": {"transfer": {"mode": "random_erasing"}},
    "cut_paste": {"transfer": {"mode": "cut_paste"}},
    "dpm_on_clip": {"anchor_init": False, "anchor_mode": "none", "transfer": {"mode": "none"},
                    "pairing": False, "masked_triplet": False, "consistency": False},
}
# Our other readings of a part (docs/METHOD.md), for comparison with the defaults.
VARIANTS: dict[str, dict] = {
    "anchor_loss": {"anchor_mode": "loss"},
    "anchor_transpose": {"text_map": "transpose"},
    "token_transfer": {"transfer": {"space": "token"}},
    "mask_grad": {"metric_mask_grad": True},
}
@dataclass(frozen=True)
class Sweep:
    """A sensitivity sweep: ``param`` (dotted params key, the x axis of a tables sweep) takes each value;
    ``complement`` (optional dotted key) takes 1 − value in the same experiment."""

    param: str
    values: tuple[float, ...]
    complement: str | None = None


# Sensitivity sweeps: paper Fig. 5 (α1 OIoU threshold, α2 rolling threshold: keys of the ``spt`` section of
# the spt_sets stage, so each value needs its own partner table) and the α study. ``alpha`` is our reading
# (the consistency weight); ``alpha_dpm`` the other one, DPM's Eq. 8 split w_mask = α, w_cls = 1 − α.
SWEEPS: dict[str, Sweep] = {
    "alpha1": Sweep("spt.alpha1", (0.5, 0.6, 0.7, 0.8, 0.9)),
    "alpha2": Sweep("spt.alpha2", (0.3, 0.4, 0.5, 0.6, 0.7)),
    "alpha": Sweep("methods.dpmpp.alpha", (0.0, 0.25, 0.5, 0.75, 1.0)),
    "alpha_dpm": Sweep("methods.dpmpp.w_mask", (0.0, 0.25, 0.5, 0.75, 1.0), complement="methods.dpmpp.w_cls"),
}


def nest(dotted: str, value: object) -> dict:
    """``nest("a.b", 1) == {"a": {"b": 1}}`` — a dotted key as an overrides mapping."""
    out: object = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out  # type: ignore[return-value]


def sweep_overrides(name: str) -> dict[str, dict]:
    """Experiment-name suffix (``alpha_0p25``) → overrides mapping, one per value of sweep ``name``."""
    sweep = SWEEPS[name]
    out = {}
    for v in sweep.values:
        over = nest(sweep.param, v)
        if sweep.complement is not None:
            over = merge(over, nest(sweep.complement, round(1.0 - v, 10)))
        out[f"{name}_{str(v).replace('.', 'p')}"] = over
    return out


class ReplacementSampler(OcclusionPairSampler):
    """No pairing: each image of a P×K batch is replaced by its occluded view with probability ``p``.

    The view is drawn exactly as the pairing sampler draws a pair's view, but takes the image's place, so
    its holistic source is usually not in the batch (``pair_id`` −1 everywhere); the batch stays P×K.
    """

    @property
    def batch_size(self) -> int:
        return self.base.p * self.base.k

    def _pair_batch(self, batch: list[int], rng: np.random.Generator) -> list[PairItem]:
        items = []
        for idx in batch:
            kind, partner, roll = self._view(idx, rng)
            items.append(PairItem(idx, partner, roll, -1, kind, int(rng.integers(2**31))))
        return items


@contextlib.contextmanager
def recording(module: nn.Module, store: dict, key: str) -> Iterator[None]:
    """Within the block, ``store[key]`` is the output of ``module``'s latest forward call."""
    handle = module.register_forward_hook(lambda _m, _inputs, out: store.__setitem__(key, out))
    try:
        yield
    finally:
        handle.remove()


@METHODS.register("dpmpp")
class DPMPPMethod(DPMMethod):
    name = "dpmpp"
    config_cls = DPMPPConfig

    def __init__(self, cfg: DPMPPConfig, num_classes: int, num_cams: int):
        super().__init__(cfg, num_classes, num_cams)
        self.train_epoch = 1  # the epoch being trained (set from the engine's context): drives the anchoring
        # the anchoring targets, saved with the model (so a trained model loads without the prompts output)
        self.register_buffer("text_prototypes", torch.zeros_like(self.classifier.weight.detach()))
        if cfg.text_features is not None:
            text = load_text_features(cfg.text_features, num_ids=num_classes, embed_dim=self.backbone.proj_dim,
                                      backbone=dataclasses.asdict(cfg.backbone))
            dim = self.backbone.embed_dim
            protos = text_to_prototypes(text, self.backbone.visual.proj, cfg.text_map,
                                        row_norm=xavier_row_norm(num_classes, dim))
            self.text_prototypes.copy_(protos)
            if cfg.anchor_init:
                with torch.no_grad():
                    self.classifier.weight.copy_(protos)

    # ------------------------------------------------------------------------------------------ losses
    def anchor_lambda(self) -> float:
        """λ of the anchoring loss in the current epoch (0 unless ``anchor_mode: loss``)."""
        c = self.cfg
        if c.anchor_mode != "loss":
            return 0.0
        return anchor_weight(self.train_epoch, c.anchor_epochs, c.anchor_weight, c.anchor_schedule)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """DPM's terms (one forward, recorded), the plain triplet replaced by the masked one, + DPM++'s terms."""
        cfg = self.cfg
        seen: dict = {}
        with contextlib.ExitStack() as stack:
            stack.enter_context(recording(self.backbone, seen, "out"))
            if self.mask_generator is not None:
                stack.enter_context(recording(self.mask_generator, seen, "mask"))
            if "partner_image" in batch:
                stack.enter_context(self.token_transfer(batch))
            terms = super().losses(batch)
        out, mask = seen["out"], seen.get("mask")
        if mask is None and self.mask_generator is not None and (cfg.masked_triplet or cfg.consistency):
            mask = self.compute_mask(out)  # DPM's masked branch is off (w_mask 0): the mask is still needed here
        if mask is not None and not cfg.metric_mask_grad:
            mask = mask.detach()
        if cfg.masked_triplet and cfg.w_triplet > 0:  # replaces DPM's plain triplet (a B×B matrix, cheap)
            terms["triplet"] = cfg.w_triplet * masked_batch_hard_triplet(out.cls, batch["pid"], mask,
                                                                         cfg.triplet_margin)
        if cfg.consistency and cfg.alpha > 0 and "pair_id" in batch:
            src, view = pair_indices(batch["pair_id"], batch["is_transferred"])
            target = out.cls[src].detach() if cfg.consistency_stop_grad else out.cls[src]
            terms["consistency"] = cfg.alpha * masked_consistency(
                out.cls[view], target, None if mask is None else mask[view])
        lam = self.anchor_lambda()
        if lam > 0:
            terms["anchor"] = lam * anchor_loss(self.classifier.weight, self.text_prototypes)
        return terms

    @contextlib.contextmanager
    def token_transfer(self, batch: Batch) -> Iterator[None]:
        """Embedding-space transfer: within the block, each transferred item's patch embeddings are its own
        (rolled) inside the partner's person mask and the partner's elsewhere; other items are unchanged."""
        if not bool(batch["is_transferred"].any()):
            yield
            return
        partner = self.backbone.visual.conv1(batch["partner_image"]).flatten(2).transpose(1, 2)  # [B, N, D]

        def mix(tokens: torch.Tensor) -> torch.Tensor:
            return transfer_tokens(tokens, partner.to(tokens.dtype), batch["partner_mask"], batch["roll"],
                                   self.backbone.grid)

        with patch_tokens_hook(self.backbone, mix):
            yield

    # ------------------------------------------------------------------------------------------ training
    def check_anchor_targets(self) -> None:
        """Refuse to train an anchoring that has no text features to anchor to."""
        c = self.cfg
        if (c.anchor_init or c.anchor_mode != "none") and not bool(self.text_prototypes.any()):
            raise OccreidError(
                "dpmpp's semantic anchoring needs the stage-1 text features, but methods.dpmpp.text_features "
                "was not set when the model was built",
                fix="run `python -m stages.prompts --dataset NAME` and set methods.dpmpp.text_features (the train "
                    "stage fills it), or switch anchoring off: anchor_init: false, anchor_mode: none")

    def train_step(self, batch: Batch, ctx: TrainContext) -> dict[str, float]:
        """DPM's (two-step) update; during the anchoring period of ``freeze`` the prototypes get no update."""
        self.check_anchor_targets()
        self.train_epoch = ctx.epoch
        hold = self.cfg.anchor_mode == "freeze" and in_anchor_period(ctx.epoch, self.cfg.anchor_epochs)
        with frozen([self.classifier.weight]) if hold else contextlib.nullcontext():
            logs = super().train_step(batch, ctx)
        if self.cfg.anchor_mode == "loss":
            logs["anchor_weight"] = self.anchor_lambda()
        return logs

    def train_data(
        self, records: Sequence[Record], transform: Callable, cfg: TrainConfig, seed: int
    ) -> tuple[PairedTransferDataset, OcclusionPairSampler] | None:
        """Paired (or in-place) occluded views over the engine's P×K batches; None when there are none."""
        mc, t = self.cfg, self.cfg.transfer
        if not mc.pairing and t.mode == "none":
            return None  # plain P×K batches: the engine's own loader
        sets = self.partner_table(records) if t.mode == "spt" else None
        # the transfer draws follow the run's seed too (seed repeats must not share their occlusions)
        t = dataclasses.replace(t, seed=derive_seed(seed, t.seed), pairs_per_id=t.pairs_per_id if mc.pairing else 0)
        pids = [r.pid for r in records]
        base = PKBatchSampler(pids, cfg.ids_per_batch, cfg.images_per_id, seed=seed)  # the engine's batches
        sampler_cls = OcclusionPairSampler if mc.pairing else ReplacementSampler
        sampler = sampler_cls(base, pids, t, sets.table if sets is not None else None)
        plain = build_test_transform(cfg.transforms) if t.space == "token" else None
        images, batch_transform = train_images(records, transform, cfg.loader)  # per train.loader.cache
        dataset = PairedTransferDataset(records, transform, t, sets=sets, img_size=self.img_size, plain_transform=plain,
                                        images=images, batch_transform=batch_transform)
        return dataset, sampler

    def partner_table(self, records: Sequence[Record]) -> SptSets:
        """The ``spt_sets`` output for these training records (same images, same order)."""
        fix = ("run `python -m stages.spt_sets --dataset NAME` and set methods.dpmpp.spt_partners (the train "
               "stage fills it), or use transfer.mode random_erasing, cut_paste or none")
        if self.cfg.spt_partners is None:
            raise OccreidError("dpmpp's saliency-guided patch transfer needs the partner table", fix=fix)
        path = Path(self.cfg.spt_partners)
        sets = load_spt_sets(path / "partners.npz" if path.is_dir() else path)
        same = len(sets.paths) == len(records) and all(
            ("/" + Path(r.path).as_posix()).endswith("/" + p) and int(pid) == r.pid
            for r, p, pid in zip(records, sets.paths, sets.pids))
        if not same:
            raise OccreidError(f"the partner table was built for other images than these {len(records)} training "
                               f"images ({len(sets.paths)} rows)", path=path, fix=fix)
        if self.cfg.transfer.space == "token" and tuple(sets.geometry.grid) != tuple(self.backbone.grid):
            raise OccreidError(f"token-space transfer needs the partner masks on the model's patch grid "
                               f"{tuple(self.backbone.grid)}, the table's grid is {tuple(sets.geometry.grid)}",
                               path=path,
                               fix="compute saliency on the method's backbone grid, or use transfer.space: pixel")
        return sets
