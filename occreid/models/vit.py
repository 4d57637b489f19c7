"""timm Vision Transformer adapted to person re-ID (TransReID style), without re-implementing a transformer.

What we add to timm's ``VisionTransformer`` and why:

- Overlapping patches (:class:`OverlapPatchEmbed`): a p×p convolution with stride s < p, as TransReID and
  DPM use; the grid is ((H−p)//s+1, (W−p)//s+1), e.g. 256×128 with p=16, s=12 → 21×10. timm builds the
  position embedding for that grid, and when weights are loaded its checkpoint filter resamples the
  pretrained grid (224/16 = 14×14) to it with :func:`timm.layers.resample_abs_pos_embed`.
- Side information embedding (SIE): a learned vector per camera (truncated normal, std .02) times
  ``sie_coef`` added to every token (``sie_mode="all"``: TransReID, DPM) or to the CLS token only
  (``"cls"``: CLIP-ReID).
- Taps: patch tokens after chosen blocks (1-based), the input of DPM's hierarchical mask generator.
- ``attn_logits``: the last block's scaled, pre-softmax CLS→patch attention logits (B × heads × N), which
  DPM's head-enrich loss uses. timm runs fused attention, which never exposes them, so they are recomputed
  from the block's normalised input with the block's own q/k weights (:func:`cls_attention_logits`).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import timm
import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, to_2tuple, trunc_normal_
from torch import nn

from occreid.errors import OccreidError
from occreid.models.base import BackboneOutput

log = logging.getLogger(__name__)
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".npz", ".ckpt")


class OverlapPatchEmbed(PatchEmbed):
    """timm's PatchEmbed with a convolution stride that may be smaller than the patch (overlapping patches)."""

    def __init__(self, *args: Any, stride: int | None = None, **kwargs: Any):
        self._stride = stride  # read by _init_img_size, which the parent constructor calls
        super().__init__(*args, **kwargs)
        if self.stride != self.patch_size:
            old = self.proj
            self.proj = nn.Conv2d(
                old.in_channels, old.out_channels, kernel_size=self.patch_size, stride=self.stride,
                bias=old.bias is not None,
            )

    @property
    def stride(self) -> tuple[int, int]:
        return to_2tuple(self._stride) if self._stride else tuple(self.patch_size)

    def _init_img_size(self, img_size):
        if img_size is None:
            return None, None, None
        img_size = to_2tuple(img_size)
        for s, p, st in zip(img_size, self.patch_size, self.stride):
            if not 1 <= st <= p:
                raise OccreidError(f"patch stride must be in 1..{p} (the patch size), got {st}")
            if s < p:
                raise OccreidError(f"image size {tuple(img_size)} is smaller than the patch size {p}")
        grid = tuple((s - p) // st + 1 for s, p, st in zip(img_size, self.patch_size, self.stride))
        return img_size, grid, grid[0] * grid[1]

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return tuple((s - p) // st + 1 for s, p, st in zip(img_size, self.patch_size, self.stride))


def cls_attention_logits(block: nn.Module, x: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Scaled pre-softmax attention logits of the CLS query against the patch keys of a timm ``Block``.

    ``x`` is the block's input [B, T, D] (prefix tokens first). Returns [B, heads, T − num_prefix_tokens].
    Only the CLS query and the keys are projected (the q and k thirds of the fused qkv weight).
    """
    attn = block.attn
    y = block.norm1(x)
    w_q, w_k, _ = attn.qkv.weight.chunk(3, dim=0)
    b_q, b_k = (None, None) if attn.qkv.bias is None else attn.qkv.bias.chunk(3, dim=0)[:2]
    B, T, _ = y.shape
    q = F.linear(y[:, :1], w_q, b_q).reshape(B, 1, attn.num_heads, attn.head_dim).transpose(1, 2)
    k = F.linear(y, w_k, b_k).reshape(B, T, attn.num_heads, attn.head_dim).transpose(1, 2)
    q, k = attn.q_norm(q), attn.k_norm(k)
    logits = (q * attn.scale) @ k.transpose(-2, -1)  # [B, heads, 1, T]
    return logits[:, :, 0, num_prefix_tokens:]


class ViTBackbone(nn.Module):
    """A timm ViT plus SIE, taps and CLS attention logits; ``forward(x, camids) -> BackboneOutput``."""

    def __init__(
        self,
        vit: nn.Module,
        *,
        num_cams: int = 0,
        sie_coef: float = 3.0,
        sie_mode: str = "all",
        taps: Sequence[int] = (),
        return_attn: bool = False,
    ):
        super().__init__()
        self.vit = vit
        depth = len(vit.blocks)
        bad = [t for t in taps if not 1 <= t <= depth]
        if bad:
            raise OccreidError(f"taps {list(bad)} outside blocks 1..{depth} (taps are 1-based block numbers)")
        if sie_mode not in ("all", "cls"):
            raise OccreidError(f"sie_mode must be 'all' or 'cls', got {sie_mode!r}")
        self.taps = tuple(int(t) for t in taps)
        self.sie_mode = sie_mode
        self.sie_coef = float(sie_coef)
        self.return_attn = return_attn
        self.sie_embed: nn.Parameter | None = None
        if num_cams > 0 and sie_coef != 0:
            self.sie_embed = nn.Parameter(torch.zeros(num_cams, 1, vit.embed_dim))
            trunc_normal_(self.sie_embed, std=0.02)

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def num_heads(self) -> int:
        return self.vit.blocks[-1].attn.num_heads

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.vit.patch_embed.grid_size)

    @property
    def img_size(self) -> tuple[int, int]:
        return tuple(self.vit.patch_embed.img_size)

    def forward(self, x: torch.Tensor, camids: torch.Tensor | None = None) -> BackboneOutput:
        vit = self.vit
        n_prefix = vit.num_prefix_tokens
        x = vit._pos_embed(vit.patch_embed(x))  # timm's own step: CLS concatenated, position embedding added
        if self.sie_embed is not None:
            if camids is None:
                raise ValueError("this backbone has a camera embedding (SIE): pass camids")
            sie = self.sie_coef * self.sie_embed[camids]  # [B, 1, D]
            if self.sie_mode == "all":
                x = x + sie
            else:
                x = torch.cat([x[:, :1] + sie, x[:, 1:]], dim=1)
        x = vit.norm_pre(vit.patch_drop(x))
        taps: list[torch.Tensor] = []
        attn_logits = None
        last = len(vit.blocks) - 1
        for i, block in enumerate(vit.blocks):
            if i == last and self.return_attn:
                attn_logits = cls_attention_logits(block, x, n_prefix)
            x = block(x)
            if i + 1 in self.taps:
                taps.append(x[:, n_prefix:])
        x = vit.norm(x)
        return BackboneOutput(
            cls=x[:, 0], tokens=x[:, n_prefix:], taps=taps, attn_logits=attn_logits, grid=self.grid
        )


def is_weights_file(pretrained: str) -> bool:
    """A ``pretrained`` value naming a file (a path or a weights suffix) rather than a timm tag."""
    return (
        "/" in pretrained or "\\" in pretrained or pretrained.endswith(WEIGHT_SUFFIXES) or Path(pretrained).is_file()
    )


def _file_keys(path: Path) -> set[str]:
    """Parameter names stored in a weights file, read without loading the tensors (memory-mapped)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return set(state)


def build_vit(
    spec: Any,
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
) -> ViTBackbone:
    """Build a :class:`ViTBackbone` from a ``BackboneSpec`` (see :mod:`occreid.models.factory`).

    ``pretrained``: ``None`` random init; a file path (timm-format state dict, loaded by timm through
    ``pretrained_cfg_overlay=dict(file=...)``); ``"default"`` or a timm tag (e.g. ``"orig_in21k_ft_in1k"``)
    downloaded by timm from its hub.
    """
    kwargs = dict(
        spec.arch,
        num_classes=0,
        img_size=tuple(img_size),
        drop_path_rate=spec.drop_path if drop_path is None else drop_path,
        embed_layer=partial(OverlapPatchEmbed, stride=stride),
    )
    if pretrained is None:
        vit = timm.create_model(spec.source, pretrained=False, **kwargs)
    elif is_weights_file(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise OccreidError("pretrained weights file not found", path=path,
                               fix="correct the path, or use pretrained: null")
        fix = "pass a timm-format state dict of the same architecture (or convert it with a checkpoint adapter)"
        overlay = dict(file=str(path), input_size=(3, *spec.pretrained_size))
        try:
            vit = timm.create_model(spec.source, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except (RuntimeError, KeyError, ValueError) as e:  # shape mismatches, unreadable content
            raise OccreidError(f"weights file does not fit backbone '{spec.name}': {e}", path=path, fix=fix) from e
        expected = {k for k in vit.state_dict() if not k.startswith("head.")}
        missing = sorted(expected - _file_keys(path))
        if missing:  # timm loads non-strictly when the classifier differs: check coverage ourselves
            raise OccreidError(f"weights file does not fit backbone '{spec.name}': {len(missing)} missing keys, "
                               f"e.g. {missing[:3]}", path=path, fix=fix)
        log.info("backbone %s: weights from %s", spec.name, path)
    else:
        tag = spec.default_tag if pretrained == "default" else pretrained
        if tag is None:
            raise OccreidError(f"backbone '{spec.name}' has no published weights",
                               fix="use pretrained: null or a file path")
        try:
            vit = timm.create_model(f"{spec.source}.{tag}", pretrained=True, **kwargs)
        except Exception as e:  # offline, unknown tag, hub errors: all mean "no weights"
            raise OccreidError(
                f"cannot get pretrained weights {spec.source}.{tag} from the timm hub: {e}",
                fix="run once with network access (timm caches the file) or pass the local file path as pretrained",
            ) from e
        log.info("backbone %s: weights %s.%s", spec.name, spec.source, tag)
    return ViTBackbone(
        vit,
        num_cams=num_cams,
        sie_coef=sie_coef,
        sie_mode=sie_mode,
        taps=spec.taps if taps is None else taps,
        return_attn=return_attn,
    )
