"""CLIP image backbone (open_clip) adapted to person re-identification.

CLIP-ReID and DPM++ start from OpenAI's CLIP ViT-B/16, but re-ID needs things CLIP's own forward does not
give: 2:1 person crops with an *overlapping* patch stride (the pos-embed is resampled to the new grid),
a learned camera embedding (SIE) on the CLS token only (CLIP-ReID) or on every token (DPM), patch tokens
after chosen blocks (taps), the last block's CLS→patch attention logits, and CLIP-ReID's three features
(CLS after the penultimate block, CLS after ``ln_post``, projected CLS). :class:`ClipImageBackbone` wraps
an open_clip ``VisionTransformer`` and *reuses its modules* (conv stem, blocks, norms, projection): only
the order of calls is ours, so open_clip/OpenAI weights load unchanged.

Names: ``clip_vit_b16`` is open_clip's "ViT-B-16" with QuickGELU (what OpenAI's weights were trained
with; pretrained tag ``openai`` or a local file), ``clip_tiny`` a ~1.8 M-parameter random config stored in
``clip_configs/`` for CPU tests and smoke runs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal, Sequence

import open_clip
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

from occreid.errors import OccreidError
from occreid.models.base import BackboneOutput
from occreid.models.factory import BACKBONES, BUILDERS, BackboneSpec, register_backbone

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).with_name("clip_configs")
#: open_clip architectures we ship as JSON (registered with open_clip on first use)
LOCAL_CONFIGS: dict[str, Path] = {name: CONFIG_DIR / f"{name}.json"
                                  for name in ("occreid-clip-tiny", "occreid-clip-tiny-p8", "occreid-clip-mini-p8")}
SieMode = Literal["cls", "all"]

# ~1.8 M parameters (1.6 M of them the text tower's 49408-word embedding table): CPU tests and smoke runs.
register_backbone(BackboneSpec(
    name="clip_tiny", family="clip", source="occreid-clip-tiny", taps=(1, 2, 3), pretrained_size=(64, 64),
))
# The CPU demo's CLIP: the image tower of vit_tiny_p8 (width 96, 4 blocks of 4 heads, patch 8: an 8x4 grid on
# 64x32 crops), so the demo's CLIP rows compare with its ViT rows at equal capacity; clip_tiny's 3 narrow blocks
# over patch-16 tokens are too weak to learn synthocc from scratch.
register_backbone(BackboneSpec(
    name="clip_tiny_p8", family="clip", source="occreid-clip-tiny-p8", taps=(1, 2, 3, 4), pretrained_size=(64, 64),
))
# The CPU demo's CLIP since the 10-minute demo: the image tower of vit_mini_p8 (width 64, 4 blocks of 4 heads,
# patch 8), half the compute of clip_tiny_p8 per image at about the same accuracy with lr 2e-3 (README, METHOD.md).
register_backbone(BackboneSpec(
    name="clip_mini_p8", family="clip", source="occreid-clip-mini-p8", taps=(1, 2, 3, 4), pretrained_size=(64, 64),
))
# CLIP-ReID / DPM++: OpenAI CLIP ViT-B/16 (image width 768, projection 512).
register_backbone(BackboneSpec(
    name="clip_vit_b16", family="clip", source="ViT-B-16", taps=(2, 4, 10, 12), default_tag="openai",
    pretrained_size=(224, 224),
))


def _register_config(arch: str) -> None:
    """Make our JSON architecture known to open_clip once (``add_model_config`` rescans every call)."""
    if arch in LOCAL_CONFIGS and arch not in open_clip.list_models():
        open_clip.add_model_config(LOCAL_CONFIGS[arch])


def _create(arch: str, pretrained: str | None) -> nn.Module:
    # QuickGELU: the activation OpenAI trained with (and CLIP-ReID uses); GELU would load but drift.
    return open_clip.create_model(arch, pretrained=pretrained, force_quick_gelu=True)


def load_clip(name: str, pretrained: str | None = None, *, seed: int | None = 0) -> nn.Module:
    """Build the whole open_clip ``CLIP`` model (image and text towers) of a registered ``clip`` backbone.

    ``pretrained`` is None (random init), ``"default"`` (the variant's published tag, ``openai`` for
    ``clip_vit_b16``), an open_clip tag, or a local checkpoint file. A random init is drawn from ``seed``
    (default 0, without touching the global RNG) so that stage 1 (prompts) and stage 2 (training) build
    the *same* random encoder in smoke runs; ``seed=None`` uses the global RNG. The text tower is needed by
    the prompt learner (stage 1); stage 2 uses the image tower only.
    """
    spec = BACKBONES.get(name)
    if spec.family != "clip":
        raise OccreidError(f"backbone '{name}' is not a CLIP model", fix=f"use one of {clip_backbone_names()}")
    arch = spec.source
    _register_config(arch)
    if pretrained == "default":
        if spec.default_tag is None:
            raise OccreidError(f"backbone '{name}' has no published weights", fix="use pretrained: null or a file path")
        pretrained = spec.default_tag
    if pretrained is not None:
        known_tags = open_clip.list_pretrained_tags_by_model(arch)
        if pretrained not in known_tags and not Path(pretrained).is_file():
            raise OccreidError(
                f"pretrained weights for {name} not found: neither a file nor an open_clip tag",
                path=pretrained,
                fix=f"pass an existing checkpoint file, a tag of {arch} ({', '.join(known_tags) or 'none'}), or null",
            )
    try:
        if seed is None:
            model = _create(arch, pretrained)
        else:
            with torch.random.fork_rng(devices=[]):  # a seeded init leaves the caller's RNG untouched
                torch.manual_seed(seed)
                model = _create(arch, pretrained)
    except Exception as e:  # noqa: BLE001 - offline tag download, unreadable or ill-fitting checkpoint
        raise OccreidError(
            f"could not load CLIP weights '{pretrained}' for {arch}: {e}",
            path=pretrained if pretrained and Path(pretrained).is_file() else None,
            fix="download the weights once with internet access (open_clip cache) or pass a local file of this architecture",
        ) from None
    model.eval()
    return model


def grid_size(img_size: tuple[int, int], patch: int, stride: int) -> tuple[int, int]:
    """Patch grid of a convolution with kernel ``patch`` and step ``stride`` (no padding)."""
    h, w = img_size
    if h < patch or w < patch:
        raise OccreidError(f"image size {img_size} is smaller than the patch size {patch}", fix="raise model.img_size")
    return (h - patch) // stride + 1, (w - patch) // stride + 1


def resize_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]) -> torch.Tensor:
    """Resample a ``[1 + gh*gw, D]`` CLIP pos-embed to a new grid, bilinearly (as CLIP-ReID); CLS kept as is."""
    out = resample_abs_pos_embed(
        pos.unsqueeze(0), new_size=list(new_grid), old_size=list(old_grid), num_prefix_tokens=1,
        interpolation="bilinear", antialias=False, align_corners=False,
    )
    return out.squeeze(0)


class ClipImageBackbone(nn.Module):
    """open_clip ``VisionTransformer`` → :class:`BackboneOutput` for re-ID (see the module docstring).

    ``cls`` is the CLS token after ``ln_post`` (width D = :attr:`embed_dim`), ``tokens`` the patch tokens
    after ``ln_post``, ``extra["proj"]`` the projected CLS (:attr:`proj_dim`, the space of the text
    features) and ``extra["cls_prev"]`` the CLS after the penultimate block (CLIP-ReID's block-11 feature,
    no norm). ``taps`` are 1-based block numbers (as :mod:`occreid.models.vit`). Without ``camids`` no
    camera embedding is added (CLIP-ReID's stage 1 encodes images that way).
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        img_size: Sequence[int] = (256, 128),
        stride: int | None = None,
        num_cams: int = 0,
        sie_coef: float = 3.0,
        sie_mode: SieMode = "cls",
        taps: Sequence[int] = (),
        return_attn: bool = False,
    ):
        super().__init__()
        self.visual = visual
        blocks = visual.transformer.resblocks
        if not all(isinstance(b.attn, nn.MultiheadAttention) for b in blocks):
            raise ValueError("only open_clip blocks built on nn.MultiheadAttention are supported (no custom attention)")
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise ValueError("only CLS-token pooling CLIP vision towers are supported")
        if not visual.transformer.batch_first:
            raise ValueError("the CLIP transformer must be batch-first (open_clip's default)")
        patch = visual.conv1.kernel_size[0]
        stride = patch if stride is None else int(stride)
        if not 1 <= stride <= patch:
            raise OccreidError(f"patch stride {stride} must be in 1..{patch}", fix="set model.stride (16, or 12 for overlap)")
        self.img_size = (int(img_size[0]), int(img_size[1]))
        self.grid = grid_size(self.img_size, patch, stride)
        visual.conv1.stride = (stride, stride)  # overlapping patches: same kernel, smaller step
        old_grid = tuple(visual.grid_size)
        if old_grid != self.grid:
            with torch.no_grad():
                new_pos = resize_pos_embed(visual.positional_embedding.data, old_grid, self.grid)
            visual.positional_embedding = nn.Parameter(new_pos)
            log.info("CLIP pos-embed resampled from grid %s to %s (stride %d)", old_grid, self.grid, stride)
        visual.grid_size = self.grid
        visual.image_size = self.img_size

        self.embed_dim = visual.conv1.out_channels
        self.proj_dim = visual.output_dim
        self.depth = len(blocks)
        self.num_heads = blocks[-1].attn.num_heads
        if sie_mode not in ("cls", "all"):
            raise OccreidError(f"sie_mode '{sie_mode}' is not allowed", fix="use 'cls' (CLIP-ReID) or 'all' (DPM)")
        self.sie_mode = sie_mode
        self.sie_coef = float(sie_coef)
        self.cam_embed: nn.Parameter | None = None
        if num_cams > 0 and sie_coef != 0:
            # CLIP-ReID's cv_embed: one learned vector per camera, truncated normal std 0.02.
            self.cam_embed = nn.Parameter(torch.zeros(num_cams, self.embed_dim))
            nn.init.trunc_normal_(self.cam_embed, std=0.02)
        bad = [t for t in taps if not 1 <= t <= self.depth]
        if bad:
            raise OccreidError(f"taps {bad} outside blocks 1..{self.depth} (taps are 1-based block numbers)",
                               fix="correct model.taps")
        self.taps = tuple(int(t) for t in taps)
        self.return_attn = return_attn

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def _embed(self, x: torch.Tensor, camids: torch.Tensor | None) -> torch.Tensor:
        v = self.visual
        x = v.conv1(x).flatten(2).transpose(1, 2)  # [B, N, D]
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        if self.cam_embed is not None and camids is not None:
            sie = self.sie_coef * self.cam_embed[camids].to(x.dtype)[:, None]  # [B, 1, D]
            x = x + sie if self.sie_mode == "all" else torch.cat([x[:, :1] + sie, x[:, 1:]], dim=1)
        return v.ln_pre(v.patch_dropout(x))

    @staticmethod
    def cls_attn_logits(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Scaled pre-softmax CLS→patch logits ``[B, heads, N]`` of an open_clip block on its input ``x``.

        Recomputed from the block's own ``ln_1`` and ``in_proj`` weights because ``nn.MultiheadAttention``
        only returns post-softmax weights (and open_clip asks for none). Only the CLS query is projected.
        """
        attn: nn.MultiheadAttention = block.attn
        d, heads = x.shape[-1], attn.num_heads
        h = block.ln_1(x)
        w_q, w_k, _ = attn.in_proj_weight.chunk(3, dim=0)
        b_q, b_k = (None, None) if attn.in_proj_bias is None else attn.in_proj_bias.chunk(3, dim=0)[:2]
        bsz, n = h.shape[0], h.shape[1] - 1
        q = F.linear(h[:, :1], w_q, b_q).view(bsz, 1, heads, d // heads).transpose(1, 2)  # [B, H, 1, dh]
        k = F.linear(h[:, 1:], w_k, b_k).view(bsz, n, heads, d // heads).transpose(1, 2)  # [B, H, N, dh]
        return (q @ k.transpose(-1, -2)).squeeze(2) / math.sqrt(d // heads)

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None) -> BackboneOutput:
        if tuple(x.shape[-2:]) != self.img_size:
            raise OccreidError(
                f"images are {tuple(x.shape[-2:])} but the CLIP backbone was built for {self.img_size}",
                fix="make the transforms' size equal model.img_size",
            )
        v = self.visual
        x = self._embed(x, camids)
        taps: list[torch.Tensor] = []
        cls_prev = x[:, 0]
        attn_logits = None
        for i, block in enumerate(v.transformer.resblocks):
            if i == self.depth - 1 and self.return_attn:
                attn_logits = self.cls_attn_logits(block, x)
            x = block(x)
            if i + 1 in self.taps:
                taps.append(x[:, 1:])
            if i == self.depth - 2:
                cls_prev = x[:, 0]
        x = v.ln_post(x)
        cls = x[:, 0]
        return BackboneOutput(
            cls=cls, tokens=x[:, 1:], taps=taps, attn_logits=attn_logits, grid=self.grid,
            extra={"proj": cls @ v.proj, "cls_prev": cls_prev},
        )


def clip_backbone_names() -> list[str]:
    return [n for n in BACKBONES.names() if BACKBONES.get(n).family == "clip"]


@BUILDERS.register("clip")
def build_clip(
    spec: BackboneSpec,
    *,
    pretrained: str | None,
    img_size: Sequence[int],
    stride: int | None,
    num_cams: int,
    sie_coef: float,
    sie_mode: str,
    taps: Sequence[int] | None,
    drop_path: float | None,
    return_attn: bool,
) -> ClipImageBackbone:
    """The ``clip`` family builder of :func:`occreid.models.factory.create_backbone` (image tower only)."""
    if drop_path:
        raise OccreidError(f"CLIP backbones have no drop-path (got {drop_path})", fix="set model.drop_path to null or 0")
    visual = load_clip(spec.name, pretrained).visual
    return ClipImageBackbone(
        visual, img_size=img_size, stride=stride, num_cams=num_cams, sie_coef=sie_coef, sie_mode=sie_mode,
        taps=spec.taps if taps is None else taps, return_attn=return_attn,
    )
