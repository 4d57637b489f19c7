"""Per-patch saliency of training images: the identity/occlusion split behind saliency-guided patch transfer.

``compute_saliency(records, root, SaliencyConfig, BackboneConfig) -> SaliencyMaps`` runs one backend
(:data:`BACKENDS`: ``classical``, ``attention``, ``sps``); ``save_saliency`` / ``load_saliency`` store the
maps compactly; ``overlay_sheet`` renders them for inspection. See each module for the method it follows.
"""

from occreid.saliency.attention import attention_saliency
from occreid.saliency.backends import BACKENDS, compute_saliency
from occreid.saliency.classical import classical_saliency, pixel_saliency
from occreid.saliency.config import ClassicalConfig, SaliencyConfig, SpsConfig
from occreid.saliency.geometry import PatchGeometry, patch_tokens_hook
from occreid.saliency.sps import SaliencyHead, SpsMethod, sps_loss_terms, train_sps
from occreid.saliency.store import (SaliencyMaps, load_rgb, load_saliency, overlay_sheet, read_npz, save_png,
                                    save_saliency, write_npz)

__all__ = [
    "attention_saliency", "BACKENDS", "compute_saliency", "load_rgb", "classical_saliency", "pixel_saliency",
    "ClassicalConfig", "SaliencyConfig", "SpsConfig", "PatchGeometry", "patch_tokens_hook", "SaliencyHead",
    "SpsMethod", "sps_loss_terms", "train_sps", "SaliencyMaps", "load_saliency", "overlay_sheet", "read_npz",
    "save_png", "save_saliency", "write_npz",
]
