"""``dpeformer``: Dynamic Patch-aware Enrichment Transformer (Zhang, Fu, Zhao, arXiv 2402.10435).

Assembled from shared parts on any backbone returning ``BackboneOutput`` (ViT-B/16 at stride 16 in the paper):

- DPSM (:mod:`occreid.models.dpsm`): the patch tokens closest to a proxy token are kept (largest drop of the
  sorted similarity curve, at least ``k_min``) and pooled into ``parts`` = P local part features.
- FBM (:mod:`occreid.models.fbm`): one module per part blends the global feature into it by cross-attention
  over 16-channel sub-parts; the P blended parts, concatenated, are the test descriptor f_final (3072-d).
- Memory bank (:mod:`occreid.losses.memory_bank`): all patch tokens, pooled into P horizontal stripes and
  concatenated (f_qj, before selection), are contrasted with per-identity entries (InfoNCE, τ 0.05) that are
  initialised with per-identity means before training (:meth:`before_training`, called by the engine) and
  momentum-updated (μ 0.2) by the clean views after every step.
- ROA: every image is also seen occluded (:mod:`occreid.augment.views`): an object of the SAM occluder library
  pasted on it (``augment.mode: sam``), or the baselines random erasing / cut-and-paste.

Loss per view (clean and occluded; paper Eqs. 14-16):
    L = w_parts·Σ_i CE(Θ_i(f_fbm_i)) + w_pooled·CE(Θ(f_qj)) + w_global·CE(Θ(f_g)) + w_final·CE(Θ(f_final))
        + w_con·InfoNCE(f_qj)          (the occluded view's InfoNCE × aug_weight 0.3; it does not update the bank)
where Θ = BN + bias-free linear classifier (the part BNs also serve Θ(f_final), as the released code).
Where the paper and the released code differ, the default is the paper and a switch gives the code's value;
docs/DPEFORMER.md lists every difference (``VARIANTS["reference_code"]`` sets all of them at once).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from occreid.augment.config import CutPasteConfig
from occreid.augment.erasing import random_erase
from occreid.augment.views import TwoViewDataset, draw_rng
from occreid.data.cache import decode_train_images
from occreid.data.loader import ImageDataset
from occreid.data.records import Record
from occreid.data.sampler import PKBatchSampler
from occreid.data.transforms import build_test_transform, train_transform_stages
from occreid.errors import OccreidError
from occreid.losses import id_loss
from occreid.losses.memory_bank import IdentityMemory
from occreid.methods.base import METHODS, Batch, ReIDMethod
from occreid.models.base import Embedding
from occreid.models.dpsm import DPSMConfig, select_parts, spatial_parts
from occreid.models.factory import BackboneConfig
from occreid.models.fbm import FBMConfig, build_fbm
from occreid.models.heads import BNNeck
from occreid.occluders import OccluderLibrary, OccluderPaste, PasteConfig

if TYPE_CHECKING:
    from occreid.engine.config import TrainConfig
    from occreid.engine.context import TrainContext

log = logging.getLogger(__name__)


@dataclass
class IDWeights:
    """Weight of each identity-loss term per view (paper Eq. 15: all 1, summed; released code: means, see VARIANTS)."""

    parts: float = 1.0  # each FBM part's loss (summed over the P parts)
    pooled: float = 1.0  # f_qj, the pooled tokens before selection
    global_feature: float = 1.0  # f_g, the class token
    final: float = 1.0  # f_final, the concatenated parts

    def __post_init__(self) -> None:
        if min(self.parts, self.pooled, self.global_feature, self.final) < 0:
            raise OccreidError("id_weights must be >= 0")


@dataclass
class MemoryConfig:
    """The memory bank and its contrastive loss (``methods.dpeformer.memory``)."""

    temperature: float = 0.05  # τ (not given in the paper; FED's and DPEFormer's code)
    momentum: float = 0.2  # μ of Eq. 13
    weight: float = 1.0  # of L_con in L_total (Eq. 16)
    aug_weight: float = 0.3  # the occluded views' InfoNCE ("about 0.3")
    aug_updates: bool = False  # occluded views also update the bank (paper and code: no)
    feature: Literal["raw", "bn"] = "raw"  # f_qj as the paper writes it, or its BN (released code)
    after_fbm: bool = False  # Table XI "Two": also a bank + InfoNCE on f_final

    def __post_init__(self) -> None:
        if self.temperature <= 0 or not 0 <= self.momentum <= 1 or self.weight < 0 or self.aug_weight < 0:
            raise OccreidError("memory: temperature > 0, momentum in [0, 1], weight and aug_weight >= 0 are needed")
        if self.feature not in ("raw", "bn"):
            raise OccreidError(f"memory.feature must be 'raw' or 'bn', got {self.feature!r}")


def _roa_erasing() -> CutPasteConfig:
    """The released code's random erasing of the second view: timm RandomErasing, area 0.05-0.4, any aspect."""
    return CutPasteConfig(area=[0.05, 0.4], aspect=[0.3, 3.3], from_border=False)


def _roa_paste() -> PasteConfig:
    """Algorithm 1's paste, applied whenever the view is occluded (the view's probability is ``augment.p``)."""
    return PasteConfig(p=1.0)


@dataclass
class AugmentConfig:
    """How the occluded second view of each image is made (``methods.dpeformer.augment``, paper Table X).

    ``sam``: an object of the occluder library pasted by Algorithm 1 (ROA); ``cut_paste``: the same objects'
    whole bounding boxes from their photographs (the paper's Cut&Paste "with the same object instances");
    ``random_erasing``: a box of noise (the released code's actual second view); ``none``: one view per image.
    ``p`` is the probability that the view is occluded, for every mode; ``paste.p`` is the paste transform's
    own probability, applied on top (keep it 1)."""

    mode: Literal["sam", "random_erasing", "cut_paste", "none"] = "sam"
    p: float = 1.0  # Alg. 1: every image of a batch gets an occluded copy
    paste: PasteConfig = field(default_factory=_roa_paste)  # sam / cut_paste (occreid.occluders)
    erasing: CutPasteConfig = field(default_factory=_roa_erasing)  # random_erasing's boxes

    def __post_init__(self) -> None:
        if self.mode not in ("sam", "random_erasing", "cut_paste", "none"):
            raise OccreidError(f"augment.mode must be sam, random_erasing, cut_paste or none, got {self.mode!r}")
        if not 0.0 <= self.p <= 1.0:
            raise OccreidError(f"augment.p must be in [0, 1], got {self.p}")
        if self.mode == "sam" and self.paste.shape != "mask":
            raise OccreidError("augment.mode sam pastes the masked objects, but augment.paste.shape is "
                               f"{self.paste.shape!r}", fix="use augment.mode cut_paste for their boxes")


@dataclass
class DPEFormerConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    parts: int = 4  # P (Sec. IV-B, after FED)
    dpsm: bool = True  # Table III; off: the parts pool all tokens in raster order
    selection: DPSMConfig = field(default_factory=DPSMConfig)
    fbm: bool = True  # Table III; off: the parts go to their heads unblended
    blending: FBMConfig = field(default_factory=FBMConfig)
    global_token: Literal["cls", "first_patch"] = "cls"  # f_g; released code: token 1 (the first patch)
    global_bnneck: bool = True  # Θ(f_g) = BN + FC (paper); released code: FC only
    memory_bank: bool = True  # memory bank + contrastive loss
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    id_weights: IDWeights = field(default_factory=IDWeights)
    neck_feat: Literal["before", "after"] = "before"  # test descriptor before (paper Eq. 12) or after its BN (code)
    embed_feature: Literal["final", "pooled"] = "final"  # test: f_final, or f_qj (Table VI "before")
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    occluders: str | None = None  # the occluder library (data/occluders/<dataset>); the train stage fills it

    def __post_init__(self) -> None:
        if self.parts < 1:
            raise OccreidError(f"parts must be >= 1, got {self.parts}")
        for name, allowed in (("global_token", ("cls", "first_patch")), ("neck_feat", ("before", "after")),
                              ("embed_feature", ("final", "pooled"))):
            if getattr(self, name) not in allowed:
                raise OccreidError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")


# Paper Table III (component ablation) and Table X (augmentation) as overrides of DPEFormerConfig; the full
# model is the default. Names are identifiers, usable as experiment-name suffixes.
ABLATIONS: dict[str, dict] = {
    "full": {},
    "no_dpsm": {"dpsm": False},
    "no_fbm": {"fbm": False},
    "baseline_roa": {"dpsm": False, "fbm": False},  # Table III index 3
    "baseline": {"dpsm": False, "fbm": False, "augment": {"mode": "none"}},  # index 1
    "baseline_re": {"dpsm": False, "fbm": False, "augment": {"mode": "random_erasing"}},  # index 2
    "no_memory": {"memory_bank": False},
    "random_erasing": {"augment": {"mode": "random_erasing"}},  # Table X
    "cut_paste": {"augment": {"mode": "cut_paste"}},  # Table X
    "no_augment": {"augment": {"mode": "none"}},
    "proxy_cls": {"selection": {"proxy": "cls"}},  # Table VII
    "fixed_selection": {"selection": {"selection": "fixed"}},  # Table IV (FPSM at the k_min count)
    "contrast_two": {"memory": {"after_fbm": True}},  # Table XI
}
# Every released-code value at once (docs/DPEFORMER.md): for comparison with the paper's reading.
VARIANTS: dict[str, dict] = {
    "reference_code": {
        "selection": {"k_min": 24, "split_rule": "code", "pooling": "batch_min"},
        "blending": {"style": "code", "heads": 2, "mix_batch": True},
        "global_token": "first_patch", "global_bnneck": False, "neck_feat": "after",
        "memory": {"feature": "bn"},
        "id_weights": {"parts": 0.125, "pooled": 0.25, "global_feature": 1.0, "final": 0.25},
        "augment": {"mode": "random_erasing"},  # its dataset never calls its SAM paste (both branches erase)
    },
    # Kept tokens pooled in raster order (the paper does not say; the code pools them in similarity order).
    "spatial_parts": {"selection": {"order": "spatial"}},
    # The released SAM paste (model/SAM.py, not wired into its data loader): four corners, always flipped.
    "reference_paste": {"augment": {"paste": {"positions": "corners", "flip_p": 1.0}}},
}


def _classifier(dim: int, num_classes: int) -> nn.Linear:
    """Bias-free linear classifier, N(0, 0.001) (BNNeck's)."""
    return BNNeck(dim, num_classes).classifier


@dataclass
class ViewFeatures:
    """Everything the heads and losses need of one view of a batch."""

    global_feat: torch.Tensor  # [B, D] f_g
    pooled: torch.Tensor  # [B, P, D] all tokens pooled in P stripes (f_qj's parts)
    pooled_bn: torch.Tensor  # [B, P, D]
    parts: torch.Tensor  # [B, P, D] selected (DPSM) and blended (FBM) parts, f_fbm_i
    parts_bn: torch.Tensor  # [B, P, D]


@METHODS.register("dpeformer")
class DPEFormerMethod(ReIDMethod):
    name = "dpeformer"
    config_cls = DPEFormerConfig

    def __init__(self, cfg: DPEFormerConfig, num_classes: int, num_cams: int):
        super().__init__(cfg, num_classes, num_cams)
        self.backbone = cfg.backbone.build(num_cams)
        dim, P = self.backbone.embed_dim, cfg.parts
        grid = tuple(self.backbone.grid)
        if cfg.dpsm:
            cfg.selection.check_tokens(grid[0] * grid[1])
        if cfg.global_bnneck:
            self.global_neck = BNNeck(dim, num_classes)
        else:
            self.global_classifier = _classifier(dim, num_classes)
        self.pooled_necks = nn.ModuleList(BNNeck(dim, 0) for _ in range(P))
        self.pooled_classifier = _classifier(P * dim, num_classes)
        self.fbms = nn.ModuleList(build_fbm(dim, cfg.blending) for _ in range(P)) if cfg.fbm else None
        self.part_necks = nn.ModuleList(BNNeck(dim, num_classes) for _ in range(P))
        self.final_classifier = _classifier(P * dim, num_classes)
        m = cfg.memory
        self.memory = IdentityMemory(num_classes, P * dim, m.temperature, m.momentum) if cfg.memory_bank else None
        self.memory_final = (IdentityMemory(num_classes, P * dim, m.temperature, m.momentum)
                             if cfg.memory_bank and m.after_fbm else None)
        self._pending: list[tuple[IdentityMemory, torch.Tensor, torch.Tensor]] = []

    # ------------------------------------------------------------------------------------------ forward
    def view_features(self, global_feat: torch.Tensor, tokens: torch.Tensor) -> ViewFeatures:
        """Heads' inputs of one view from the backbone's global feature and patch tokens."""
        cfg, P = self.cfg, self.cfg.parts
        pooled = spatial_parts(tokens, P)
        parts = select_parts(global_feat, tokens, cfg.selection, P).parts if cfg.dpsm else pooled
        if self.fbms is not None:
            parts = torch.stack([fbm(parts[:, i], global_feat) for i, fbm in enumerate(self.fbms)], dim=1)
        pooled_bn = torch.stack([n.bn(pooled[:, i]) for i, n in enumerate(self.pooled_necks)], dim=1)
        parts_bn = torch.stack([n.bn(parts[:, i]) for i, n in enumerate(self.part_necks)], dim=1)
        return ViewFeatures(global_feat, pooled, pooled_bn, parts, parts_bn)

    def backbone_features(self, images: torch.Tensor, camids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f_g [B, D], patch tokens [B, N, D])``; ``global_token: first_patch`` takes patch token 1 as f_g."""
        out = self.backbone(images, camids)
        global_feat = out.tokens[:, 0] if self.cfg.global_token == "first_patch" else out.cls
        return global_feat, out.tokens

    def memory_feature(self, f: ViewFeatures, final: bool = False) -> torch.Tensor:
        """The bank's input: f_qj (or f_final for the Table XI second bank), raw or after its BN."""
        raw, bn = (f.parts, f.parts_bn) if final else (f.pooled, f.pooled_bn)
        return (bn if self.cfg.memory.feature == "bn" else raw).flatten(1)

    def global_logits(self, global_feat: torch.Tensor) -> torch.Tensor:
        if self.cfg.global_bnneck:
            return self.global_neck(global_feat)[1]
        return self.global_classifier(global_feat)

    # ------------------------------------------------------------------------------------------ losses
    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Both views' identity losses and contrastive terms; the bank updates they call for are queued for
        :meth:`train_step` (after the backward pass, as the reference updates inside its backward)."""
        cfg, w, pids = self.cfg, self.cfg.id_weights, batch["pid"]
        views = [batch["image"]] + ([batch["image_aug"]] if "image_aug" in batch else [])
        global_all, tokens_all = self.backbone_features(torch.cat(views), batch["camid"].repeat(len(views)))
        terms: dict[str, torch.Tensor] = {}

        def add(name: str, value: torch.Tensor) -> None:
            terms[name] = terms[name] + value if name in terms else value

        self._pending = []
        for v, (g, tokens) in enumerate(zip(global_all.chunk(len(views)), tokens_all.chunk(len(views)))):
            f = self.view_features(g, tokens)
            if w.global_feature > 0:
                add("id_global", w.global_feature * id_loss(self.global_logits(f.global_feat), pids))
            if w.pooled > 0:
                add("id_pooled", w.pooled * id_loss(self.pooled_classifier(f.pooled_bn.flatten(1)), pids))
            if w.parts > 0:
                add("id_parts", w.parts * sum(id_loss(n.classifier(f.parts_bn[:, i]), pids)
                                              for i, n in enumerate(self.part_necks)))
            if w.final > 0:
                add("id_final", w.final * id_loss(self.final_classifier(f.parts_bn.flatten(1)), pids))
            weight = cfg.memory.weight * (1.0 if v == 0 else cfg.memory.aug_weight)
            for name, bank, final in (("contrast", self.memory, False), ("contrast_final", self.memory_final, True)):
                if bank is None:
                    continue
                feat = self.memory_feature(f, final)
                if weight > 0:
                    add(name, weight * bank.loss(feat, pids))
                if v == 0 or cfg.memory.aug_updates:
                    self._pending.append((bank, feat.detach().float(), pids))
        return terms

    def train_step(self, batch: Batch, ctx: TrainContext) -> dict[str, float]:
        logs = super().train_step(batch, ctx)
        for bank, feat, pids in self._pending:
            bank.update(feat, pids)
        self._pending = []
        return logs

    # ------------------------------------------------------------------------------------------ test
    def embed(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> Embedding:
        f = self.view_features(*self.backbone_features(images, camids))
        after = self.cfg.neck_feat == "after"
        if self.cfg.embed_feature == "pooled":
            return Embedding(feat=(f.pooled_bn if after else f.pooled).flatten(1))
        return Embedding(feat=(f.parts_bn if after else f.parts).flatten(1))

    # ------------------------------------------------------------------------------------------ training data
    @torch.no_grad()
    def before_training(self, records: Sequence[Record], cfg: TrainConfig) -> None:
        """Initialise the memory bank(s) with each identity's mean feature over the training set (test transform,
        eval mode, no random numbers drawn), once at the start of a run; a resumed run loads the bank instead."""
        banks = [(b, final) for b, final in ((self.memory, False), (self.memory_final, True)) if b is not None]
        if not banks:
            return
        device = next(self.parameters()).device
        loader = DataLoader(ImageDataset(records, build_test_transform(cfg.transforms)), batch_size=cfg.batch_size,
                            shuffle=False, num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(0))
        was_training = self.training
        self.eval()
        feats: dict[bool, list[torch.Tensor]] = {final: [] for _, final in banks}
        for batch in tqdm(loader, desc="memory bank init", leave=False, mininterval=1.0):
            f = self.view_features(*self.backbone_features(batch["image"].to(device), batch["camid"].to(device)))
            for _, final in banks:
                feats[final].append(self.memory_feature(f, final).float().cpu())
        self.train(was_training)
        labels = torch.tensor([r.pid for r in records])
        for bank, final in banks:
            bank.initialize(torch.cat(feats[final]), labels)
        log.info("memory bank initialised with the mean features of %d identities over %d training images",
                 self.num_classes, len(records))

    def train_data(self, records: Sequence[Record], transform: Callable, cfg: TrainConfig, seed: int):
        """Two views per image (clean + occluded) over the engine's P×K batches; None (the engine's own loader)
        when ``augment.mode`` is none."""
        aug = self.cfg.augment
        if aug.mode == "none":
            return None
        geometric, to_tensor, erasing = train_transform_stages(cfg.transforms)
        kwargs: dict = {}
        if aug.mode == "random_erasing":
            kwargs["occlude_tensor"] = lambda image: random_erase(image, draw_rng(), aug.erasing)[0]
        else:
            kwargs["occlude"] = self.paste_transform(aug.mode)
        images = decode_train_images(records, cfg.transforms, cfg.loader)  # per train.loader.cache
        dataset = TwoViewDataset(records, geometric, to_tensor, erasing, p=aug.p, images=images, **kwargs)
        sampler = PKBatchSampler([r.pid for r in records], cfg.ids_per_batch, cfg.images_per_id, seed=seed)
        return dataset, sampler

    def paste_transform(self, mode: str) -> OccluderPaste:
        """The PIL transform pasting occluder-library objects (``sam``) or their bounding boxes (``cut_paste``)."""
        if self.cfg.occluders is None:
            raise OccreidError(f"augment.mode '{mode}' pastes objects of the occluder library, but "
                               "methods.dpeformer.occluders is not set",
                               fix="run `python -m stages.occluders --dataset NAME` (the train stage then fills "
                                   "it with data/occluders/NAME), or use augment.mode random_erasing or none")
        paste = self.cfg.augment.paste
        shape = "box" if mode == "cut_paste" else "mask"
        if paste.shape != shape:
            paste = dataclasses.replace(paste, shape=shape)
        return OccluderPaste(OccluderLibrary.load(self.cfg.occluders), paste)
