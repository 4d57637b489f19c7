"""Released DPM checkpoints (stone96123/DPM, TransReID names) → our ``dpm`` method's names, and back.

DPM saves ``model.state_dict()`` of its ``build_transformer``: the TransReID ViT under ``base.*``
(``cls_token``, ``pos_embed`` with the CLS slot, ``sie_embed`` [cams, 1, D], ``patch_embed.proj``,
``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``), the mask generator inside it
(``base.ConvLayer.{0,2,4}.{0: conv, 1: BN}``, ``base.attfc``), the unused ImageNet head ``base.fc`` (dropped
here), the prototype matrix ``classifier.weight`` and the BNNeck ``bottleneck.*`` — with ``module.`` in front
when saved from DataParallel. timm's ViT uses the same block names, and our mask generator mirrors the
reference layout, so the adapter is a pure rename; tensors are never changed, only reshaped where a shape
differs by singleton axes.

A checkpoint only fits a model built the same way (patch grid, cameras, taps, classes); a mismatch is an
:class:`~occreid.errors.OccreidError` that lists the offending names — e.g. the OCC_Duke checkpoint needs
``img_size [256, 128]``, ``stride 11``, SIE over 8 cameras, 702 classes and the full model's switches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from occreid.errors import OccreidError
from occreid.models.adapters.common import check_fits, listing

# Reference prefix → ours; the first match wins, so specific prefixes come before "base.".
PREFIXES: tuple[tuple[str, str], ...] = (
    ("base.ConvLayer.", "mask_generator.body."),
    ("base.attfc.", "mask_generator.fc."),
    ("base.sie_embed", "backbone.sie_embed"),
    ("base.", "backbone.vit."),
    ("bottleneck.", "neck.bn."),
    ("classifier.", "classifier."),
)
DROPPED: tuple[str, ...] = ("base.fc.",)  # TransReID's ImageNet classifier, never used by the re-ID model


def _rename(name: str, table: Sequence[tuple[str, str]]) -> str | None:
    for old, new in table:
        if name.startswith(old):
            return new + name[len(old):]
    return None


def adapt_dpm_state_dict(
    sd: Mapping[str, torch.Tensor], *, expected: Mapping[str, Sequence[int]] | None = None
) -> dict[str, torch.Tensor]:
    """Rename a reference DPM state dict to our ``dpm`` method's names (``base.fc.*`` dropped).

    ``expected``: our model's names → shapes (``{k: v.shape for k, v in method.state_dict().items()}``).
    When given, the result is checked to load with ``strict=True``: missing names, names the model does not
    have and shape mismatches raise one :class:`OccreidError` listing them. Names that are not DPM names at
    all raise in any case.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if name.startswith(DROPPED):
            continue
        new = _rename(name, PREFIXES)
        if new is None:
            unknown.append(key)
            continue
        if new in out:
            raise OccreidError(f"checkpoint holds '{name}' twice (with and without 'module.')")
        out[new] = value
    if unknown:
        raise OccreidError(
            f"{len(unknown)} names are not DPM checkpoint names: {listing(unknown)}",
            fix="pass a state dict saved by stone96123/DPM (base.*, classifier.weight, bottleneck.*)",
        )
    if expected is None:
        return out
    return check_fits(out, expected, what="DPM",
                      fix="build the method like the checkpoint (img_size, stride, SIE cameras, taps/hierarchy, mask, "
                          "classes)")


def to_reference_names(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`adapt_dpm_state_dict` (without ``base.fc``): our names → the reference's."""
    reverse = tuple((ours, ref) for ref, ours in PREFIXES)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        new = _rename(key, reverse)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise OccreidError(f"{len(unknown)} names have no DPM counterpart: {listing(unknown)}")
    return out


def load_dpm_checkpoint(method: nn.Module, path: str | Path) -> nn.Module:
    """Load a released DPM checkpoint file into a built ``dpm`` method (strict), and return the method."""
    path = Path(path)
    if not path.is_file():
        raise OccreidError("DPM checkpoint not found", path=path, fix="download transformer_150.pth or correct the path")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    expected = {k: tuple(v.shape) for k, v in method.state_dict().items()}
    try:
        adapted = adapt_dpm_state_dict(state, expected=expected)
    except OccreidError as e:
        raise OccreidError(e.problem, path=path, fix=e.fix) from None
    method.load_state_dict(adapted, strict=True)
    return method
