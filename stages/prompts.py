"""Stage ``prompts`` (CLIP-ReID stage 1): ``python -m stages.prompts --dataset NAME [--params params.yaml]``.

Reads ``prompts`` — or ``dataset_stages.NAME.prompts`` when the dataset has its own settings (stages/registry.py
"Per-dataset sections") — as a :class:`~occreid.prompts.PromptsConfig` through the declared-keys gate of
:mod:`stages.common`: its ``backbone`` (or ``dataset_backbones.NAME``) is the frozen CLIP image encoder,
which must be the one the ``clipreid``/``dpmpp`` experiments training on NAME use (params validation checks
it; the methods check ``meta.json`` again) — loads the prepared training split of NAME from
``data/prepared/NAME``, learns one prompt per identity on frozen CLIP image features and writes
``data/prompts/NAME/`` with ``text_features.pt`` (num_ids × embed_dim), ``prompts.pt`` and ``meta.json``.
A user error prints its message and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path

import open_clip
import torch

from occreid.data.datasets import DATASETS, create_dataset
from occreid.data.loader import build_test_loader
from occreid.data.transforms import TransformConfig, build_test_transform
from occreid.errors import OccreidError
from occreid.models.clip_backbone import ClipImageBackbone, clip_backbone_names, load_clip
from occreid.models.factory import BACKBONES, BackboneConfig
from occreid.prompts import PromptsConfig, learn_prompts, write_prompts
from stages import common
from stages.params import PARAMS_FILE

log = logging.getLogger("stages.prompts")
MODEL_SCHEMA = BackboneConfig  # the ``model`` section: the backbone engineer's config dataclass
PREPARED = Path("data/prepared")
OUT = Path("data/prompts")


def load_params(dataset: str, path: str | Path = PARAMS_FILE) -> tuple[PromptsConfig, BackboneConfig]:
    """The typed ``prompts`` section and the CLIP backbone it names for ``dataset`` (after validating the
    whole params file)."""
    params = common.load("prompts", dataset, path)
    cfg = params.dataset_section(PromptsConfig)  # prompts, or the dataset's own dataset_stages.NAME.prompts
    model = cfg.backbone_of(dataset)
    if model.name not in BACKBONES or BACKBONES.get(model.name).family != "clip":
        raise OccreidError(
            f"the prompts backbone for {dataset} ('{model.name}') is not a CLIP backbone: prompts need CLIP's "
            "text tower", path=path, fix=f"use one of {clip_backbone_names()}",
        )
    return cfg, model


def resolve_device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def run(dataset: str, cfg: PromptsConfig, model: BackboneConfig, *, prepared: Path = PREPARED,
        out_root: Path = OUT, device: str = "auto") -> Path:
    """Learn the prompts of ``dataset`` and write its output folder; returns the folder."""
    DATASETS.get(dataset)
    splits = create_dataset(dataset, prepared / dataset)
    if not splits.train:
        raise OccreidError(f"dataset '{dataset}' has no training split: there are no identities to learn prompts for",
                           path=prepared / dataset, fix="learn prompts on the dataset the model is trained on")
    num_ids = len({r.pid for r in splits.train})
    dev = resolve_device(device)
    start = time.perf_counter()
    clip = load_clip(model.name, model.pretrained)
    backbone = ClipImageBackbone(clip.visual, img_size=model.img_size, stride=model.stride, taps=())
    transform = build_test_transform(TransformConfig(size=list(model.img_size), test_interpolation=cfg.interpolation))
    loader = build_test_loader(splits.train, transform, batch_size=cfg.feature_batch_size, num_workers=cfg.num_workers)
    result = learn_prompts(clip, backbone, loader, num_ids, cfg, device=dev)
    out = out_root / dataset
    meta = {
        "dataset": dataset,
        "num_images": len(splits.train),
        "backbone": dataclasses.asdict(model),
        "prompts": dataclasses.asdict(cfg),
        "history": result.history,
        "seconds": round(time.perf_counter() - start, 1),
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
    }
    write_prompts(out, result.text_features, result.prompt_learner, meta)
    log.info("text features %s of %d identities written to %s", tuple(result.text_features.shape), num_ids, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.prompts", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS.names())}")
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    DATASETS.get(args.dataset)  # a clearer message than "no job prompts@..." for a typo
    cfg, model = load_params(args.dataset, args.params)
    run(args.dataset, cfg, model, device=args.device)


if __name__ == "__main__":
    common.run(main)
