"""Stage-1 outputs on disk: ``text_features.pt``, ``prompts.pt`` and ``meta.json`` in one folder.

The folder is written under a temporary name and renamed into place when complete, so stage 2 never
reads a half-written set. ``text_features.pt`` holds a plain float32 tensor ``[num_ids, embed_dim]`` and
``prompts.pt`` the prompt learner's state dict (learned context vectors + frozen prefix/suffix
embeddings + tokenised template): both load with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from occreid.errors import OccreidError
from occreid.io import atomic_path, write_json
from occreid.models.prompt_learner import PromptLearner

TEXT_FEATURES = "text_features.pt"
PROMPTS = "prompts.pt"
META = "meta.json"


def write_prompts(out_dir: str | Path, text_features: torch.Tensor, learner: PromptLearner, meta: dict) -> Path:
    """Write the three files into ``out_dir`` atomically (an existing folder is replaced when done)."""
    out_dir = Path(out_dir)
    meta = {
        **meta,
        "num_ids": int(text_features.shape[0]),
        "embed_dim": int(text_features.shape[1]),
        "n_ctx": learner.n_ctx,
        "template": learner.template,
    }
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        torch.save(text_features.detach().float().cpu().contiguous(), tmp / TEXT_FEATURES)
        torch.save({k: v.detach().cpu() for k, v in learner.state_dict().items()}, tmp / PROMPTS)
        write_json(tmp / META, meta)
    return out_dir


#: backbone settings that change the image features the prompts were fitted to
MATCHING_KEYS = ("name", "pretrained", "img_size", "stride")


def check_backbone(meta_path: Path, backbone: dict) -> None:
    """Refuse text features learned on another image encoder (their space would not match the model's)."""
    if not meta_path.is_file():
        return
    try:
        used = json.loads(meta_path.read_text(encoding="utf-8")).get("backbone") or {}
    except (OSError, ValueError) as e:
        raise OccreidError(f"cannot read {META}: {e}", path=meta_path, fix="re-run the prompts stage") from None
    diff = [k for k in MATCHING_KEYS if k in used and k in backbone and used[k] != backbone[k]]
    if diff:
        detail = ", ".join(f"{k}: prompts {used[k]!r} vs model {backbone[k]!r}" for k in diff)
        raise OccreidError(
            f"text features were learned with another CLIP backbone ({detail})", path=meta_path,
            fix="use the same backbone settings in the prompts stage (params 'model') and the method",
        )


def load_text_features(
    path: str | Path, *, num_ids: int | None = None, embed_dim: int | None = None, backbone: dict | None = None
) -> torch.Tensor:
    """Read ``text_features.pt`` (or the folder holding it), checking its shape against the model's and,
    when ``backbone`` (a ``BackboneConfig`` as dict) is given, the backbone recorded in ``meta.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / TEXT_FEATURES
    if backbone is not None:
        check_backbone(path.with_name(META), backbone)
    if not path.is_file():
        raise OccreidError("text features not found", path=path, fix="run the prompts stage for this dataset first")
    try:
        feats = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise OccreidError(f"cannot read text features: {e}", path=path, fix="re-run the prompts stage") from None
    if not isinstance(feats, torch.Tensor) or feats.dim() != 2:
        raise OccreidError("text features must be a 2-D tensor [num_ids, embed_dim]", path=path, fix="re-run the prompts stage")
    if num_ids is not None and feats.shape[0] != num_ids:
        raise OccreidError(
            f"text features are for {feats.shape[0]} identities but the training split has {num_ids}",
            path=path, fix="re-run the prompts stage on the same dataset as training",
        )
    if embed_dim is not None and feats.shape[1] != embed_dim:
        raise OccreidError(
            f"text features have dim {feats.shape[1]} but the CLIP backbone projects to {embed_dim}",
            path=path, fix="use the same model.backbone in the prompts and train stages",
        )
    return feats.float()
