"""Resumable training checkpoints and the final ``model.pt``.

Everything is stored as tensors and primitives (configs as JSON strings), so every file loads with
``torch.load(..., weights_only=True)``: a checkpoint can never execute code. Files are written through
:func:`occreid.io.atomic_path`, so a run killed while saving leaves the previous checkpoint intact.

A training checkpoint ``checkpoints/epoch_0007.pt`` holds the model, every optimiser and schedule, the
GradScaler, all RNG states (every rank's), the sampler state, the history so far and a fingerprint of the
run's config and data (a checkpoint of another configuration is never resumed); one written mid-epoch
(``epoch_0007_iter_000013.pt``) also holds the epoch's progress.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from occreid.errors import OccreidError
from occreid.io import atomic_path

if TYPE_CHECKING:
    from occreid.methods.base import ReIDMethod

log = logging.getLogger(__name__)
MODEL_FORMAT = "occreid-model-1"
_CKPT = re.compile(r"epoch_(\d+)(?:_iter_(\d+))?\.pt$")


def save_checkpoint(path: str | Path, state: dict) -> Path:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_path(ckpt_dir: Path, epoch: int, iteration: int = 0) -> Path:
    """``epoch_0007.pt`` after epoch 7; ``epoch_0007_iter_000013.pt`` 13 iterations into epoch 8 (a stop
    on request, :mod:`occreid.engine.preemption`)."""
    return ckpt_dir / (f"epoch_{epoch:04d}_iter_{iteration:06d}.pt" if iteration else f"epoch_{epoch:04d}.pt")


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(completed epochs, path) of the checkpoints in ``ckpt_dir``, oldest first (a mid-epoch checkpoint
    after the one of the epoch before it)."""
    if not ckpt_dir.is_dir():
        return []
    found = [((int(m.group(1)), int(m.group(2) or 0)), p) for p in ckpt_dir.iterdir() if (m := _CKPT.search(p.name))]
    return [(key[0], p) for key, p in sorted(found)]


def prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep=0``: all)."""
    found = list_checkpoints(ckpt_dir)
    for _, path in found[: len(found) - keep]:
        path.unlink(missing_ok=True)


def save_model(path: str | Path, method: ReIDMethod, resolved_config: dict) -> Path:
    """Write the final model: state dict, the method's name and config, class/camera counts, run config."""
    from dataclasses import asdict

    state = {
        "format": MODEL_FORMAT,
        "method": method.name,
        "method_config": json.dumps(asdict(method.cfg), sort_keys=True),
        "num_classes": int(method.num_classes),
        "num_cams": int(method.num_cams),
        "config": json.dumps(resolved_config, sort_keys=True, default=str),
        "state_dict": {k: v.detach().cpu() for k, v in method.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    log.info("model written to %s", path)
    return Path(path)


def load_model(path: str | Path) -> tuple[ReIDMethod, dict]:
    """Rebuild the method saved by :func:`save_model` (no pretrained download) and load its weights.

    Returns ``(method, resolved_config)``; the method is on the CPU in eval mode.
    """
    from occreid.methods import create_method

    path = Path(path)
    if not path.is_file():
        raise OccreidError("model file not found", path=path, fix="run the train stage first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated or not a torch file
        raise OccreidError(f"cannot read model file: {e}", path=path, fix="re-run the train stage") from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise OccreidError("not an occreid model file", path=path, fix="pass the model.pt written by the train stage")
    method = create_method(
        state["method"], json.loads(state["method_config"]), state["num_classes"], state["num_cams"],
        load_pretrained=False,
    )
    method.load_state_dict(state["state_dict"])
    method.eval()
    return method, json.loads(state["config"])


def restore(obj: Any, state: dict | None) -> None:
    """``obj.load_state_dict(state)`` when there is a state (scalers are absent on CPU)."""
    if state:
        obj.load_state_dict(state)
