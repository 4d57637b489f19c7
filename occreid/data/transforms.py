"""Image transforms for re-ID training and testing, built from a params dataclass.

Training follows TransReID / DPM / CLIP-ReID: bicubic resize (``interpolation``) to the model's input size, horizontal flip,
zero padding + random crop back to size, optional colour jitter (DPM enables it for Occluded-REID),
conversion to a float tensor, normalisation with the mean/std from params, then timm's RandomErasing
(which expects a normalised tensor; 'pixel' mode fills with N(0, 1) noise). Testing only resizes and
normalises, with its own ``test_interpolation``: the reference DPM, CLIP-ReID, SPT and DPEFormer code train with
bicubic but test (and extract CLIP-ReID's stage-1 features) with torchvision's default bilinear, and the two
give different features for the same weights. The random draws come from the global ``torch`` and ``random`` generators, which the engine
seeds and checkpoints, so an augmented epoch is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
from timm.data.random_erasing import RandomErasing
from torchvision.transforms import v2

from occreid.errors import OccreidError

_INTERPOLATION = {"bicubic": v2.InterpolationMode.BICUBIC, "bilinear": v2.InterpolationMode.BILINEAR}


@dataclass
class TransformConfig:
    """Input pipeline settings (params key ``train.transforms``); ``size`` is [height, width]."""

    size: list[int] = field(default_factory=lambda: [256, 128])
    flip_p: float = 0.5
    pad: int = 10
    random_erasing_p: float = 0.5
    erasing_mode: Literal["pixel", "rand", "const"] = "pixel"
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    color_jitter: list[float] | None = None  # [brightness, contrast, saturation, hue], e.g. [0.3, 0.3, 0.2, 0.2]
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"  # training resize
    # test resize; null: the same as `interpolation`. The references' is "bilinear" (their presets set it).
    test_interpolation: Literal["bicubic", "bilinear"] | None = None

    @property
    def test_mode(self) -> str:
        """The interpolation of the test resize."""
        return self.test_interpolation or self.interpolation

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise OccreidError(f"transforms.size must be [height, width] > 0, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise OccreidError(f"transforms.mean/std need 3 values with std > 0, got {self.mean} / {self.std}")
        for name in ("flip_p", "random_erasing_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OccreidError(f"transforms.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.pad < 0:
            raise OccreidError(f"transforms.pad must be >= 0, got {self.pad}")
        if self.color_jitter is not None and len(self.color_jitter) != 4:
            raise OccreidError(f"transforms.color_jitter needs 4 values, got {self.color_jitter}")


def _to_normalized_tensor(cfg: TransformConfig) -> list[Callable]:
    # ToPureTensor: plain tensors from here on (timm's RandomErasing and collation need no tv_tensors wrapper)
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=cfg.mean, std=cfg.std),
        v2.ToPureTensor(),
    ]


def train_resize(cfg: TransformConfig) -> v2.Resize:
    """The training resize (the first op of :func:`build_train_transform`; also what the decoded-image cache
    of :mod:`occreid.data.cache` stores, which makes this op the identity on cached images)."""
    return v2.Resize(tuple(cfg.size), interpolation=_INTERPOLATION[cfg.interpolation], antialias=True)


def random_erasing(cfg: TransformConfig) -> RandomErasing:
    """timm's RandomErasing as the training transform applies it (on the normalised tensor)."""
    return RandomErasing(probability=cfg.random_erasing_p, mode=cfg.erasing_mode, max_count=1, device="cpu")


def _geometric_ops(cfg: TransformConfig) -> list[Callable]:
    size = tuple(cfg.size)
    ops: list[Callable] = [train_resize(cfg)]
    if cfg.flip_p > 0:
        ops.append(v2.RandomHorizontalFlip(p=cfg.flip_p))
    if cfg.pad > 0:
        ops += [v2.Pad(cfg.pad), v2.RandomCrop(size)]
    if cfg.color_jitter is not None:
        b, c, s, h = cfg.color_jitter
        ops.append(v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h))
    return ops


def train_transform_stages(cfg: TransformConfig) -> tuple[Callable, Callable, Callable | None]:
    """The three stages of :func:`build_train_transform`: (PIL -> resized, flipped, cropped, jittered PIL;
    PIL -> normalised tensor; random erasing of that tensor, or None when off). For a method that acts between
    them (DPEFormer pastes occluders onto the augmented PIL image before the tensor conversion)."""
    erasing = random_erasing(cfg) if cfg.random_erasing_p > 0 else None
    return v2.Compose(_geometric_ops(cfg)), v2.Compose(_to_normalized_tensor(cfg)), erasing


class TrainTransform(v2.Compose):
    """The per-image training pipeline of :func:`build_train_transform`, remembering its ``config``: a loader
    given this transform knows what it does, so it may decode the images once at the training size
    (:mod:`occreid.data.cache`) and run the same augmentation on a whole batch (:mod:`occreid.data.batch_augment`)."""

    def __init__(self, ops: list[Callable], config: TransformConfig):
        super().__init__(ops)
        self.config = config


def build_train_transform(cfg: TransformConfig) -> TrainTransform:
    """PIL image -> augmented, normalised float tensor [3, H, W] (the stages of :func:`train_transform_stages`
    in one pipeline, drawing the same random numbers)."""
    ops = _geometric_ops(cfg) + _to_normalized_tensor(cfg)
    if cfg.random_erasing_p > 0:
        ops.append(random_erasing(cfg))
    return TrainTransform(ops, cfg)


def build_test_transform(cfg: TransformConfig) -> Callable:
    """PIL image -> resized (``test_interpolation``), normalised float tensor [3, H, W] (no randomness)."""
    size = tuple(cfg.size)
    return v2.Compose(
        [v2.Resize(size, interpolation=_INTERPOLATION[cfg.test_mode], antialias=True), *_to_normalized_tensor(cfg)]
    )
