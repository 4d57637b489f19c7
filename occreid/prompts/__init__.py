"""CLIP-ReID stage 1 as a library: learn per-identity prompts on frozen CLIP features, write text features."""

from occreid.prompts.config import PromptsConfig
from occreid.prompts.store import load_text_features, write_prompts
from occreid.prompts.train import (
    PromptsResult,
    compute_text_features,
    extract_image_features,
    learn_prompts,
    train_prompts,
)

__all__ = [
    "PromptsConfig",
    "PromptsResult",
    "compute_text_features",
    "extract_image_features",
    "learn_prompts",
    "load_text_features",
    "train_prompts",
    "write_prompts",
]
