"""Stage-1 (prompt learning) settings — params section ``prompts``; defaults are CLIP-ReID's (§3.2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from occreid.errors import OccreidError
from occreid.models.factory import BackboneConfig, backbone_for
from occreid.models.prompt_learner import DEFAULT_TEMPLATE


@dataclass
class PromptsConfig:
    """How identity prompts are learned on frozen CLIP features.

    ``temperature``/``normalize`` default to CLIP-ReID's raw dot products at temperature 1.0; ``seed``
    drives the prompt-vector init and the per-epoch shuffling, so a run is repeatable. ``amp`` only acts
    on CUDA (autocast of the text tower, as CLIP-ReID), never on CPU.
    """

    epochs: int = 120
    lr: float = 3.5e-4
    weight_decay: float = 1e-4
    batch_size: int = 64
    warmup_epochs: int = 5
    warmup_lr: float = 1e-5
    min_lr: float = 1e-6
    n_ctx: int = 4
    template: str = DEFAULT_TEMPLATE
    temperature: float = 1.0
    normalize: bool = False
    seed: int = 0
    feature_batch_size: int = 128
    num_workers: int = 2
    amp: bool = True
    # resize of the stage-1 feature extraction: CLIP-ReID uses its test transforms, torchvision's default bilinear
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    # The frozen CLIP image encoder the prompts are fitted to. It must equal (name, pretrained, img_size,
    # stride) the backbone of every clipreid/dpmpp experiment training on the dataset: params validation
    # checks it, and the methods check the written meta.json again.
    backbone: BackboneConfig | None = None  # every dataset without its own entry below
    dataset_backbones: dict[str, BackboneConfig] = field(default_factory=dict)  # dataset name -> backbone

    def backbone_of(self, dataset: str) -> BackboneConfig:
        return backbone_for(self.backbone, self.dataset_backbones, dataset, "prompts")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "n_ctx", "feature_batch_size"):
            if getattr(self, name) < 1:
                raise OccreidError(f"prompts.{name} must be >= 1, got {getattr(self, name)}", fix="set a positive value")
        for name in ("lr", "temperature"):
            if getattr(self, name) <= 0:
                raise OccreidError(f"prompts.{name} must be > 0, got {getattr(self, name)}", fix="set a positive value")
        for name in ("weight_decay", "warmup_epochs", "warmup_lr", "min_lr", "num_workers"):
            if getattr(self, name) < 0:
                raise OccreidError(f"prompts.{name} must be >= 0, got {getattr(self, name)}", fix="set a value >= 0")
        if self.template.count("X") < self.n_ctx:
            raise OccreidError(
                f"prompts.template '{self.template}' has fewer than n_ctx={self.n_ctx} 'X' slots",
                fix="write one X per learned context vector, e.g. 'A photo of a X X X X person.'",
            )
