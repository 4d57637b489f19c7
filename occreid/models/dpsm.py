"""DPEFormer's dynamic patch token selection (DPSM, Zhang et al. 2024, Sec. III-A) as pure tensor functions.

For each image: the *proxy* is the patch token with the largest inner product with the global (class) token —
the class token is trained by the identity loss, so this is the paper's "label-guided proxy" (Eq. 1). Every
patch token is scored by its inner product with the proxy (Eq. 2, the proxy itself included); the scores are
sorted in descending order (Eq. 3) and the split point is the largest first-order drop of the sorted curve
(Eqs. 4-6): the tokens before the drop are the body (occlusion-free) tokens, the rest are discarded. The count
is raised to a minimum ``k_min`` (the relaxation of Sec. III-A; 48 of 128 tokens in the paper, Table V), and
the selected tokens are adaptively average-pooled into ``P`` local part features.

Selection is a hard decision (indices, no gradient); the part features are differentiable in the tokens.
Pooling is written as a matrix ``W [B, P, N]`` over the tokens in sorted order, so a batch whose images keep
different numbers of tokens is pooled in one ``bmm``; the rows of ``W`` equal ``nn.AdaptiveAvgPool1d``'s bins.

Switches (docs/DPEFORMER.md): ``proxy`` (patch | cls: paper Table VII), ``selection`` (dynamic | fixed: the
FPSM of Table IV), ``split_rule`` (paper: the tokens before the largest drop; code: one fewer, the released
code's 0-based argmax), ``pooling`` (direct: each image's k tokens into P bins; batch_min: the released code's
two stages, k → the batch's smallest k → P, which makes an image's features depend on its batch), ``order``
(similarity: tokens pooled in the order of their score, as the released code; spatial: in raster order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from occreid.errors import OccreidError


@dataclass
class DPSMConfig:
    """How DPSM selects and pools tokens (``methods.dpeformer.selection``). Paper values are the defaults."""

    proxy: Literal["patch", "cls"] = "patch"  # Table VII: the closest patch token (ours) or the global token
    selection: Literal["dynamic", "fixed"] = "dynamic"  # Table IV: fixed = the top fixed_k tokens (FPSM)
    k_min: int = 48  # Table V: the least number of selected tokens (released code: 24)
    fixed_k: int = 48  # tokens kept by selection: fixed
    split_rule: Literal["paper", "code"] = "paper"  # paper: k = tokens before the largest drop; code: k − 1
    pooling: Literal["direct", "batch_min"] = "direct"  # batch_min: the released code's k → min_b k → P
    order: Literal["similarity", "spatial"] = "similarity"  # order of the kept tokens when pooled into parts

    def __post_init__(self) -> None:
        if self.k_min < 0 or self.fixed_k < 1:
            raise OccreidError(f"selection.k_min must be >= 0 and fixed_k >= 1, got {self.k_min}, {self.fixed_k}")
        choices = {"proxy": ("patch", "cls"), "selection": ("dynamic", "fixed"), "split_rule": ("paper", "code"),
                   "pooling": ("direct", "batch_min"), "order": ("similarity", "spatial")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise OccreidError(f"selection.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")

    def check_tokens(self, num_tokens: int) -> None:
        """Refuse counts the backbone's patch grid cannot give (named, with the grid size)."""
        need = self.fixed_k if self.selection == "fixed" else self.k_min
        key = "fixed_k" if self.selection == "fixed" else "k_min"
        if need > num_tokens:
            raise OccreidError(f"selection.{key} = {need} exceeds the backbone's {num_tokens} patch tokens",
                               fix=f"set selection.{key} <= {num_tokens} (the paper keeps 48 of 128 ViT-B/16 tokens)")


@dataclass
class Selection:
    """DPSM's output for a batch: the part features and what was kept (for tests and visualisation)."""

    parts: torch.Tensor  # [B, P, D] local part features
    counts: torch.Tensor  # [B] int64, tokens kept per image
    proxy: torch.Tensor  # [B] int64, index of the proxy token (-1 for proxy "cls")
    kept: torch.Tensor  # [B, N] bool, the kept tokens in grid (raster) order


def proxy_scores(global_feat: torch.Tensor, tokens: torch.Tensor, proxy: str = "patch") -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores [B, N], proxy index [B])``: inner products of every token with the proxy (Eqs. 1-2).

    ``proxy="patch"``: the proxy is the token most similar to ``global_feat`` (first one on ties);
    ``"cls"``: ``global_feat`` itself (index −1)."""
    to_global = torch.einsum("bnd,bd->bn", tokens, global_feat)
    if proxy == "cls":
        return to_global, torch.full(to_global.shape[:1], -1, dtype=torch.long, device=tokens.device)
    index = to_global.argmax(dim=1)
    anchor = tokens[torch.arange(tokens.shape[0], device=tokens.device), index]  # [B, D]
    return torch.einsum("bnd,bd->bn", tokens, anchor), index


def split_counts(sorted_scores: torch.Tensor, rule: str = "paper") -> torch.Tensor:
    """Tokens kept per row of descending ``sorted_scores`` [B, N] by the largest first-order drop (Eqs. 4-6).

    With D[i] = S[i] − S[i+1] (i = 1..N−1) and k = argmax D (the first one on ties), ``paper`` keeps the k
    tokens before the drop; ``code`` keeps k − 1 (the released code takes the 0-based argmax as the count)."""
    if sorted_scores.shape[1] < 2:
        return torch.full(sorted_scores.shape[:1], sorted_scores.shape[1], dtype=torch.long,
                          device=sorted_scores.device)
    drop = sorted_scores[:, :-1] - sorted_scores[:, 1:]
    first_max = drop.argmax(dim=1)  # 0-based position of the largest drop
    return first_max + 1 if rule == "paper" else first_max


def adaptive_pool_matrix(length: int, bins: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """``[bins, length]`` averaging matrix equal to ``nn.AdaptiveAvgPool1d(bins)`` on a sequence of ``length``:
    bin i averages positions floor(i·L/bins) .. ceil((i+1)·L/bins) − 1 (bins overlap when L is not a multiple)."""
    if length < 1 or bins < 1:
        raise ValueError(f"adaptive pooling needs length >= 1 and bins >= 1, got {length}, {bins}")
    out = torch.zeros(bins, length, dtype=dtype, device=device)
    for i in range(bins):
        start, end = (i * length) // bins, -((-(i + 1) * length) // bins)
        out[i, start:end] = 1.0 / (end - start)
    return out


def pooling_weights(counts: torch.Tensor, bins: int, num_tokens: int, pooling: str = "direct",
                    *, dtype=torch.float32) -> torch.Tensor:
    """``[B, bins, N]``: per image, the pooling of its first ``counts[b]`` tokens into ``bins`` parts.

    ``direct``: one adaptive pooling k → bins. ``batch_min``: k → m (the smallest count of the batch) → bins,
    composed (the released code's two stages; m → m is the identity)."""
    device = counts.device
    out = torch.zeros(counts.shape[0], bins, num_tokens, dtype=dtype, device=device)
    floor = int(counts.min()) if pooling == "batch_min" else 0
    cache: dict[int, torch.Tensor] = {}
    for b, k in enumerate(counts.tolist()):
        if k not in cache:
            if pooling == "batch_min" and k != floor:
                matrix = adaptive_pool_matrix(floor, bins, dtype=dtype, device=device) @ \
                    adaptive_pool_matrix(k, floor, dtype=dtype, device=device)
            else:
                matrix = adaptive_pool_matrix(k, bins, dtype=dtype, device=device)
            cache[k] = matrix
        out[b, :, :k] = cache[k]
    return out


def spatial_parts(tokens: torch.Tensor, bins: int) -> torch.Tensor:
    """``[B, bins, D]``: all tokens pooled in raster order (horizontal stripes): the feature without DPSM and the
    memory bank's input (the paper's "ViT encoder, average pooling, and concatenation")."""
    weights = adaptive_pool_matrix(tokens.shape[1], bins, dtype=tokens.dtype, device=tokens.device)
    return torch.einsum("pn,bnd->bpd", weights, tokens)


def select_parts(global_feat: torch.Tensor, tokens: torch.Tensor, cfg: DPSMConfig, bins: int) -> Selection:
    """DPSM on a batch: ``global_feat`` [B, D] (the class token), ``tokens`` [B, N, D] (patch tokens after the
    backbone's final norm) → :class:`Selection` with ``bins`` part features per image."""
    B, N, _ = tokens.shape
    cfg.check_tokens(N)
    with torch.no_grad():  # the selection is a hard decision; gradients flow through the pooled tokens only
        scores, proxy = proxy_scores(global_feat.float(), tokens.float(), cfg.proxy)
        ranked, order = torch.sort(scores, dim=1, descending=True, stable=True)
        if cfg.selection == "fixed":
            counts = torch.full((B,), cfg.fixed_k, dtype=torch.long, device=tokens.device)
        else:
            counts = split_counts(ranked, cfg.split_rule).clamp(min=cfg.k_min, max=N)
        kept = torch.zeros(B, N, dtype=torch.bool, device=tokens.device)
        kept.scatter_(1, order, torch.arange(N, device=tokens.device).expand(B, N) < counts[:, None])
        if cfg.order == "spatial":  # kept tokens first, in raster order
            position = torch.arange(N, device=tokens.device).expand(B, N)
            order = torch.argsort(torch.where(kept, position, position + N), dim=1)
        weights = pooling_weights(counts, bins, N, cfg.pooling, dtype=tokens.dtype)
    ordered = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[2]))
    return Selection(parts=torch.bmm(weights, ordered), counts=counts, proxy=proxy, kept=kept)
