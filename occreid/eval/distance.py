"""Query × gallery distances for one chunk of queries, including DPM's per-query masked distance.

Metrics (smaller = more similar):

- ``cosine``: 1 − cos(q, g), in [0, 2]. Scale invariant, so ``normalize`` changes nothing. Ranking by it
  equals ranking by the squared euclidean distance of L2-normalised features (= 2·(1 − cos)), what
  TransReID / CLIP-ReID evaluate with ``FEAT_NORM: yes``.
- ``euclidean``: ‖q − g‖₂, of L2-normalised features when ``normalize`` (the default), else raw.
- ``masked_cosine`` (DPM, ``cosine_single``): for query i with channel mask mᵢ, each gallery feature is
  L2-normalised, multiplied channel-wise by mᵢ, re-normalised and dotted with the normalised query; the
  distance is the angle arccos(clip(sim, −1+1e-5, 1−1e-5)) in radians. DPM loops over queries; here it is
  two matrix products, because Σ_c q_c m_c ĝ_c = (q̂⊙m)·ĝ and ‖m⊙ĝ‖² = (m²)·(ĝ²):
  sim = ((q̂⊙m) @ ĝᵀ) / sqrt((m²) @ (ĝ²)ᵀ). Gallery masks are not used (as in DPM). The metric is scale
  invariant in q and g, so ``normalize`` changes nothing.
- ``masked_euclidean`` (ours): euclidean distance with channel weights w = m² / mean(m²), i.e.
  sqrt(Σ_c w_c (q_c − g_c)²) = ‖m⊙(q − g)‖ / rms(m): both sides are seen through the query's mask,
  so channels the mask calls occluded count less. Dividing by mean(m²) makes the scale independent of the
  mask's overall level: a constant mask (DPM's initial 0.5) gives exactly ``euclidean``. Also two matrix
  products: Σ w q² − 2 (w⊙q) @ gᵀ + w @ (g²)ᵀ.

With an all-ones mask each masked metric ranks like its plain one (masked_cosine = arccos of cosine
similarity). Computation is float32 (float64 if the inputs are float64, for exact checks); float16
features are upcast per chunk. The gallery side is prepared once (:func:`prepare_gallery`: float32 copy,
L2-normalised where needed) and reused by every query chunk; ĝ² is formed block by block inside the
product instead of being kept (:func:`squared_matmul`), which saves a second gallery-sized copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import OccreidError
from .config import check_metric

CLIP_EPS = 1e-5  # DPM clips the similarity to [-1 + 1e-5, 1 - 1e-5] before arccos
NORM_EPS = 1e-12  # as torch.nn.functional.normalize: x / max(‖x‖, eps)
SQUARE_BLOCK = 4096  # gallery rows squared at a time by squared_matmul


@dataclass(frozen=True)
class PreparedGallery:
    """Gallery features in the form a metric needs, computed once for all query chunks."""

    metric: str
    normalize: bool
    feat: torch.Tensor  # [ng, D] float32/64; L2-normalised for cosine-type metrics or when normalize
    norm2: torch.Tensor | None = None  # ‖feat‖² per row (euclidean)

    @property
    def num(self) -> int:
        return int(self.feat.shape[0])

    @property
    def dim(self) -> int:
        return int(self.feat.shape[1])


def _features(x, name: str) -> tuple[torch.Tensor, bool]:
    """(validated tensor, whether it is a private copy of ``x``)."""
    raw = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if raw.ndim != 2:
        raise OccreidError(f"{name} must be a 2-D [N, D] array, got shape {tuple(raw.shape)}",
                           fix="stack one feature vector per image into an [N, D] array")
    t = raw if raw.dtype in (torch.float32, torch.float64) else raw.to(torch.float32)
    copied = t is not raw or not isinstance(x, (torch.Tensor, np.ndarray))
    if t.numel() == 0 or all(map(math.isfinite, torch.aminmax(t))):  # NaN propagates; no bool copy
        return t, copied
    bad = ~torch.isfinite(t).all(dim=1)
    rows = torch.nonzero(bad).flatten()[:5].tolist()
    raise OccreidError(
        f"{name} contain NaN or infinite values ({int(bad.sum())} rows, e.g. {rows})",
        fix="check the checkpoint and the embedding (AMP overflow, a diverged model); re-extract the features",
    )


def as_features(x, name: str) -> torch.Tensor:
    """A finite 2-D floating tensor (float32, or float64 if given), else an :class:`OccreidError`."""
    return _features(x, name)[0]


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2.0, dim=1, eps=NORM_EPS)


def _normalise_(x: torch.Tensor) -> torch.Tensor:
    """In-place F.normalize (same arithmetic: x / max(‖x‖, eps))."""
    return x.div_(x.norm(p=2.0, dim=1, keepdim=True).clamp_min_(NORM_EPS))


def prepare_gallery(gf, metric: str = "cosine", normalize: bool = True) -> PreparedGallery:
    """Validate the gallery features and precompute what ``metric`` reuses across query chunks.

    An already prepared gallery for the same metric and normalize is returned as is."""
    check_metric(metric)
    if isinstance(gf, PreparedGallery):
        if gf.metric != metric or gf.normalize != bool(normalize):
            raise OccreidError(
                f"gallery was prepared for metric={gf.metric!r}, normalize={gf.normalize} but "
                f"metric={metric!r}, normalize={bool(normalize)} is asked for",
                fix="prepare the gallery with the same metric and normalize as the distance",
            )
        return gf
    g, copied = _features(gf, "gallery features")
    if metric in ("cosine", "masked_cosine") or normalize:
        g = _normalise_(g) if copied else _normalise(g)  # in place on a private copy: one copy less
    norm2 = (g * g).sum(dim=1) if metric == "euclidean" else None
    return PreparedGallery(metric, bool(normalize), g, norm2)


def _check_mask(q_mask, q: torch.Tensor, metric: str) -> torch.Tensor:
    if q_mask is None:
        raise OccreidError(
            f"metric '{metric}' needs a channel mask per query (q_mask), none was given",
            fix="evaluate a method that outputs masks (dpm, dpmpp) or use metric 'cosine' / 'euclidean'",
        )
    m = as_features(q_mask, "query masks").to(q.dtype)
    if m.shape != q.shape:
        raise OccreidError(f"query masks have shape {tuple(m.shape)} but query features {tuple(q.shape)}",
                           fix="pass one mask per query with the feature dimension (the method's Embedding.mask)")
    return m


def compute_distance(qf, gf, metric: str = "cosine", q_mask=None, normalize: bool = True) -> torch.Tensor:
    """Distances (nq, ng) between a chunk of queries and the whole gallery; see the module docstring.

    ``gf`` is a feature array or a :class:`PreparedGallery` (from :func:`prepare_gallery` with the same
    metric and normalize). ``q_mask`` [nq, D] is required by the masked metrics and ignored by the others.
    Callers chunk the queries (:func:`occreid.eval.evaluate_features` does).
    """
    check_metric(metric)
    g = prepare_gallery(gf, metric, normalize)
    q = as_features(qf, "query features")
    if q.shape[1] != g.dim:
        raise OccreidError(f"query features have dimension {q.shape[1]} but gallery features {g.dim}",
                           fix="extract query and gallery features with the same model")
    q = q.to(g.feat.dtype)
    if metric == "cosine":
        return _cosine(q, g.feat)
    if metric == "euclidean":
        return _euclidean(_normalise(q) if normalize else q, g.feat, g.norm2)
    m = _check_mask(q_mask, q, metric).to(g.feat.dtype)
    if metric == "masked_cosine":
        return masked_cosine(q, m, g.feat)
    return masked_euclidean(_normalise(q) if normalize else q, m, g.feat)


def _cosine(q: torch.Tensor, g_hat: torch.Tensor) -> torch.Tensor:
    d = _normalise(q) @ g_hat.T
    return torch.sub(1.0, d, out=d)


def _euclidean(q: torch.Tensor, g: torch.Tensor, g_norm2: torch.Tensor) -> torch.Tensor:
    d = q @ g.T
    d.mul_(-2.0).add_(g_norm2[None, :]).add_((q * q).sum(dim=1, keepdim=True))
    return d.clamp_min_(0.0).sqrt_()


def squared_matmul(w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """w @ (g²)ᵀ, squaring the gallery block by block instead of keeping a second [ng, D] copy (g²):
    one extra elementwise pass per query chunk buys 252 MB less on MSMT17 (82,161 × 768 float32)."""
    out = torch.empty(w.shape[0], g.shape[0], dtype=w.dtype)
    for a in range(0, g.shape[0], SQUARE_BLOCK):
        block = g[a:a + SQUARE_BLOCK]
        out[:, a:a + block.shape[0]] = w @ (block * block).T
    return out


def masked_cosine(q: torch.Tensor, m: torch.Tensor, g_hat: torch.Tensor) -> torch.Tensor:
    """DPM's angle as matrix products; ``g_hat`` is the L2-normalised gallery."""
    num = (_normalise(q) * m) @ g_hat.T
    den = squared_matmul(m * m, g_hat)
    den.sqrt_().clamp_min_(NORM_EPS)
    return num.div_(den).clamp_(-1.0 + CLIP_EPS, 1.0 - CLIP_EPS).acos_()


def masked_euclidean(q: torch.Tensor, m: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """sqrt(Σ_c w_c (q_c − g_c)²) with w = m² / mean(m²), as matrix products."""
    w = m * m
    w.div_(w.mean(dim=1, keepdim=True).clamp_min(NORM_EPS))
    d = (w * q) @ g.T
    d.mul_(-2.0).add_(squared_matmul(w, g)).add_((w * q * q).sum(dim=1, keepdim=True))
    return d.clamp_min_(0.0).sqrt_()
