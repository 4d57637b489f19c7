"""The params schema of the ``saliency`` section: which saliency source, on which grid, with which knobs.

SPT (and so DPM++) splits each training image into an identity set (salient patches) and an occlusion set
(the rest). Three sources are offered, because the one SPT uses (a learned head, ``sps``) needs a
trained re-ID backbone, and the CPU demo must run without weights:

- ``classical``: weight-free image saliency (colour contrast and/or spectral residual, times a centre
  prior), pooled to the patch grid — seconds on a CPU, a fair person prior for pedestrian crops.
- ``attention``: the CLS→patch attention of the (pre-trained) image encoder, training-free.
- ``sps``: SPT's saliency head trained on the backbone's block taps (see :mod:`occreid.saliency.sps`).

The grid defaults to the model's patch grid at ``img_size``, so a mask has one bit per patch token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from occreid.engine.config import OptimizerConfig
from occreid.errors import OccreidError
from occreid.models.factory import BackboneConfig, backbone_for


@dataclass
class ClassicalConfig:
    """Weight-free saliency: ``contrast`` (frequency-tuned colour contrast, Achanta et al. 2009),
    ``spectral`` (spectral residual, Hou & Zhang 2007) or ``both`` (their mean, each scaled to [0, 1])."""

    method: Literal["contrast", "spectral", "both"] = "both"
    blur: float = 1.0  # Gaussian sigma (pixels) before the colour contrast: removes texture and JPEG noise
    spectral_size: int = 64  # the spectral residual works at this longer side (its scale of "objects")
    # centre prior: Gaussian σ as fractions of [H, W]; null: no prior
    centre_sigma: list[float] | None = field(default_factory=lambda: [0.6, 0.3])

    def __post_init__(self) -> None:
        if self.blur < 0 or self.spectral_size < 8:
            raise OccreidError(f"saliency.classical: blur must be >= 0 and spectral_size >= 8, "
                               f"got {self.blur}, {self.spectral_size}")
        if self.centre_sigma is not None and (len(self.centre_sigma) != 2 or min(self.centre_sigma) <= 0):
            raise OccreidError("saliency.classical.centre_sigma must be two fractions > 0 or null, "
                               f"got {self.centre_sigma}")


@dataclass
class SpsConfig:
    """SPT's saliency head training (stage 1 of SPT). Loss weights follow SPT's released code:
    CE(full) + CE(salient-only) + soft triplet(full) + 50·(mean saliency − 0.3)² + 0.1·Σ⟨p_full, p_rest⟩."""

    epochs: int = 2
    ids_per_batch: int = 8
    images_per_id: int = 4
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)  # SPT: SGD 0.008
    warmup_epochs: int = 0
    id_weight: float = 1.0  # CE on the full view
    salient_id_weight: float = 1.0  # CE on the salient-only view (patch embeddings × saliency)
    triplet_weight: float = 1.0  # soft-margin batch-hard triplet on the full view's CLS
    usage_weight: float = 50.0
    usage_target: float = 0.3  # wanted mean saliency (share of patches kept)
    rest_weight: float = 0.1  # Σ_batch ⟨softmax(full logits), softmax(non-salient logits)⟩
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.ids_per_batch < 2 or self.images_per_id < 1:
            raise OccreidError("saliency.sps: epochs >= 1, ids_per_batch >= 2 and images_per_id >= 1 are needed")
        if not 0.0 < self.usage_target < 1.0:
            raise OccreidError(f"saliency.sps.usage_target must be in (0, 1), got {self.usage_target}")
        weights = (self.id_weight, self.salient_id_weight, self.triplet_weight, self.usage_weight, self.rest_weight)
        if min(weights) < 0:
            raise OccreidError("saliency.sps loss weights must be >= 0")


@dataclass
class SaliencyConfig:
    """Section ``saliency`` of params.yaml (the ``saliency`` stage)."""

    backend: Literal["classical", "attention", "sps"] = "classical"
    img_size: list[int] | None = None  # [H, W] the maps are computed at; null: model.img_size
    grid: list[int] | None = None  # [h, w]; null: the model's patch grid at img_size (classical may differ)
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # input normalisation (attention, sps)
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    batch_size: int = 64
    num_workers: int = 0
    overlay_images: int = 16  # images on overlay.png
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    sps: SpsConfig = field(default_factory=SpsConfig)
    # The backbone whose patch grid the maps live on (and which attention/sps run): the one of the dpmpp
    # experiments training on the dataset (params validation checks it).
    backbone: BackboneConfig | None = None  # every dataset without its own entry below
    dataset_backbones: dict[str, BackboneConfig] = field(default_factory=dict)  # dataset name -> backbone

    def backbone_of(self, dataset: str) -> BackboneConfig:
        return backbone_for(self.backbone, self.dataset_backbones, dataset, "saliency")

    def __post_init__(self) -> None:
        if self.img_size is not None and (len(self.img_size) != 2 or min(self.img_size) < 1):
            raise OccreidError(f"saliency.img_size must be [H, W] > 0 or null, got {self.img_size}")
        if self.grid is not None and (len(self.grid) != 2 or min(self.grid) < 1):
            raise OccreidError(f"saliency.grid must be [h, w] >= 1 or null, got {self.grid}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise OccreidError("saliency.mean/std need 3 values with std > 0")
        if self.batch_size < 1 or self.num_workers < 0 or self.overlay_images < 0:
            raise OccreidError("saliency.batch_size >= 1, num_workers >= 0, overlay_images >= 0 are needed")
