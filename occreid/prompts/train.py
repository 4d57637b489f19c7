"""CLIP-ReID stage 1: learn identity prompts against image features of a frozen CLIP image encoder.

Because the image encoder is frozen and the inputs are not augmented, every training image has one
fixed feature: they are extracted once (:func:`extract_image_features`), then each epoch shuffles them
(seeded) into batches and only the prompt vectors are optimised with the symmetric supervised contrastive
loss. Adam + timm's cosine schedule with linear warm-up, stepped per epoch as in CLIP-ReID.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from occreid.errors import OccreidError
from occreid.losses.supcon import symmetric_supcon
from occreid.models.clip_backbone import ClipImageBackbone
from occreid.models.prompt_learner import ClipTextEncoder, PromptLearner
from occreid.prompts.config import PromptsConfig

log = logging.getLogger(__name__)


@dataclass
class PromptsResult:
    """What stage 1 produces: per-identity text features, the learned prompts and the loss per epoch."""

    text_features: torch.Tensor  # [num_ids, embed_dim]
    prompt_learner: PromptLearner
    history: list[dict] = field(default_factory=list)


@torch.no_grad()
def extract_image_features(
    backbone: ClipImageBackbone, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected CLS features ``[N, embed_dim]`` and pids ``[N]`` of every image in ``loader`` (eval mode).

    No camera embedding: CLIP-ReID's stage 1 calls the image encoder without camera labels.
    """
    was_training = backbone.training
    backbone.eval()
    feats, pids = [], []
    for batch in tqdm(loader, desc="stage-1 image features", unit="batch", leave=False):
        out = backbone(batch["image"].to(device))
        feats.append(out.extra["proj"].float().cpu())
        pids.append(torch.as_tensor(batch["pid"]).long())
    backbone.train(was_training)
    if not feats:
        raise OccreidError("the training split has no images", fix="check the prepared dataset")
    return torch.cat(feats), torch.cat(pids)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: PromptsConfig) -> CosineLRScheduler:
    """Cosine from ``lr`` to ``min_lr`` over ``epochs`` after a linear warm-up from ``warmup_lr``."""
    return CosineLRScheduler(
        optimizer,
        t_initial=cfg.epochs,
        lr_min=cfg.min_lr,
        warmup_t=cfg.warmup_epochs,
        warmup_lr_init=cfg.warmup_lr,
        cycle_limit=1,
        t_in_epochs=True,
    )


def train_prompts(
    image_feats: torch.Tensor,
    labels: torch.Tensor,
    prompt_learner: PromptLearner,
    text_encoder: ClipTextEncoder,
    cfg: PromptsConfig,
    *,
    device: torch.device | str = "cpu",
) -> list[dict]:
    """Optimise ``prompt_learner`` only; returns per-epoch ``{"epoch", "loss", "loss_i2t", "loss_t2i", "lr"}``."""
    device = torch.device(device)
    if image_feats.shape[0] != labels.shape[0]:
        raise ValueError(f"{image_feats.shape[0]} features but {labels.shape[0]} labels")
    if int(labels.max()) >= prompt_learner.num_ids or int(labels.min()) < 0:
        raise OccreidError(
            f"training labels span {int(labels.min())}..{int(labels.max())} but there are {prompt_learner.num_ids} prompts",
            fix="train pids must be relabelled 0..N-1 (create_dataset does this)",
        )
    image_feats, labels = image_feats.to(device), labels.to(device)
    prompt_learner.to(device).train()
    text_encoder.to(device)
    params = [p for p in prompt_learner.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    gen = torch.Generator().manual_seed(cfg.seed)
    n = image_feats.shape[0]
    history = []
    bar = tqdm(range(1, cfg.epochs + 1), desc="stage-1 prompts", unit="epoch")
    for epoch in bar:
        scheduler.step(epoch)  # CLIP-ReID steps with the 1-based epoch at the start of each epoch
        order = torch.randperm(n, generator=gen).to(device)
        totals = torch.zeros(3, dtype=torch.float64)
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            target, img = labels[idx], image_feats[idx]
            optimizer.zero_grad(set_to_none=True)
            with _autocast(device, cfg.amp):
                text = text_encoder(prompt_learner(target), prompt_learner.eot_index)
            i2t, t2i = symmetric_supcon(
                img, text.float(), target, temperature=cfg.temperature, normalize=cfg.normalize
            )
            loss = i2t + t2i
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            totals += torch.tensor([loss.item(), i2t.item(), t2i.item()], dtype=torch.float64) * idx.numel()
        mean = (totals / n).tolist()
        row = {"epoch": epoch, "loss": mean[0], "loss_i2t": mean[1], "loss_t2i": mean[2],
               "lr": optimizer.param_groups[0]["lr"]}
        history.append(row)
        bar.set_postfix(loss=f"{mean[0]:.3f}", lr=f"{row['lr']:.2e}")
    log.info("stage 1 finished: loss %.4f → %.4f over %d epochs", history[0]["loss"], history[-1]["loss"], cfg.epochs)
    return history


@torch.no_grad()
def compute_text_features(
    prompt_learner: PromptLearner, text_encoder: ClipTextEncoder, *, batch_size: int = 128
) -> torch.Tensor:
    """Text feature of every identity, ``[num_ids, embed_dim]`` float32 on CPU (learner's device for compute)."""
    device = prompt_learner.ctx.device
    out = []
    for start in range(0, prompt_learner.num_ids, batch_size):
        labels = torch.arange(start, min(start + batch_size, prompt_learner.num_ids), device=device)
        out.append(text_encoder(prompt_learner(labels), prompt_learner.eot_index).float().cpu())
    return torch.cat(out)


def learn_prompts(
    clip_model: nn.Module,
    backbone: ClipImageBackbone,
    loader: DataLoader,
    num_ids: int,
    cfg: PromptsConfig,
    *,
    device: torch.device | str = "cpu",
) -> PromptsResult:
    """The whole stage 1: features → prompt learner (seeded init) → training → per-identity text features.

    ``backbone`` must wrap ``clip_model.visual`` (same weights the text tower was trained with).
    """
    backbone.to(device)
    feats, pids = extract_image_features(backbone, loader, device)
    log.info("stage 1: %d image features of dim %d for %d identities", feats.shape[0], feats.shape[1], num_ids)
    gen = torch.Generator().manual_seed(cfg.seed)
    learner = PromptLearner(
        num_ids, clip_model.token_embedding, template=cfg.template, n_ctx=cfg.n_ctx,
        context_length=clip_model.context_length, generator=gen,
    )
    encoder = ClipTextEncoder(clip_model)
    history = train_prompts(feats, pids, learner, encoder, cfg, device=device)
    learner.eval()
    text = compute_text_features(learner, encoder, batch_size=cfg.feature_batch_size)
    return PromptsResult(text_features=text, prompt_learner=learner.cpu(), history=history)
