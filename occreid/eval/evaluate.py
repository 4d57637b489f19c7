"""Features → metrics in query chunks, and the compact per-query ranking file used by the figures.

:func:`evaluate_features` never holds the (nq, ng) float matrix (except with re-ranking, which returns
it): each chunk of queries gets its distance block, is ranked, and is dropped. The chunk size comes from
``EvalConfig.memory_budget_mb``, so MSMT17 (11,659 × 82,161) runs in bounded memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import OccreidError
from ..io import atomic_path
from .chunking import chunks, distance_rows, ranking_rows
from .config import EvalConfig
from .distance import as_features, compute_distance, prepare_gallery
from .metrics import PidIndex, RankingResult, aggregate, check_distance, check_ids, rank_chunk, require_valid
from .ordering import max_block_rows, packed_keys
from .rerank import re_ranking_features

log = logging.getLogger(__name__)


def top_k(d: torch.Tensor, q_pids: torch.Tensor, q_cams: torch.Tensor, g_pids: torch.Tensor,
          g_cams: torch.Tensor, protocol: str, k: int) -> np.ndarray:
    """int32 gallery indices (nq, min(k, ng)) of each query's k nearest *remaining* items (protocol
    removals and junk excluded), ascending, ties by gallery order; -1 pads rows with fewer items.

    Per block: removed items are set to +inf in a copy, ``torch.topk`` finds each row's k-th smallest
    value t, and the items ≤ t (k of them, more only with ties at t) are ordered exactly by packed keys.
    """
    d = check_distance(d)
    ng = d.shape[1]
    k = min(int(k), ng)
    index = PidIndex(g_pids)
    junk = torch.nonzero(g_pids < 0).flatten()
    out = np.full((d.shape[0], k), -1, dtype=np.int32)
    for a, b in chunks(d.shape[0], min(ranking_rows(ng), max_block_rows(ng))):
        block = d[a:b].clone()
        block[:, junk] = float("inf")
        if protocol == "market":
            rows, cols = index.members(q_pids[a:b])
            gone = g_cams[cols] == q_cams[a:b][rows]
            block[rows[gone], cols[gone]] = float("inf")
        t = torch.topk(block, k, dim=1, largest=False, sorted=False).values.max(dim=1).values
        t = t.clamp_max(torch.finfo(block.dtype).max)  # rows short of k items: all finite ones
        flat = torch.from_numpy(np.flatnonzero(block.numpy() <= t.numpy()[:, None]))
        rows = torch.div(flat, ng, rounding_mode="floor")
        cols = flat - rows * ng
        order = torch.argsort(packed_keys(rows, block.reshape(-1)[flat], cols, ng))
        rows, cols = rows[order], cols[order]
        count = torch.bincount(rows, minlength=b - a)
        pos = torch.arange(rows.numel()) - (torch.cumsum(count, 0) - count)[rows]
        take = pos < k
        out[a + rows[take].numpy(), pos[take].numpy()] = cols[take].numpy()
    return out


def evaluate_features(qf, gf, q_pids, g_pids, q_camids, g_camids, cfg: EvalConfig,
                      q_mask=None) -> RankingResult:
    """Rank the gallery for every query and compute CMC / mAP / mINP under ``cfg.protocol``.

    ``qf``/``gf``: [nq, D] / [ng, D] features (float16/32/64, numpy or torch); ``q_mask``: [nq, D] query
    masks for the masked metrics. With ``cfg.save_topk`` > 0 the result carries the top-k lists for
    :func:`save_ranks`. Raises :class:`OccreidError` on bad input or when no query has a match.
    """
    if not isinstance(cfg, EvalConfig):
        raise OccreidError(f"cfg must be an EvalConfig, got {type(cfg).__name__}",
                           fix="build it with EvalConfig(...) or stages.params.from_dict(EvalConfig, ...)")
    q = as_features(qf, "query features")
    gallery = prepare_gallery(gf, cfg.metric, cfg.normalize)
    if q.shape[1] != gallery.dim:
        raise OccreidError(f"query features have dimension {q.shape[1]} but gallery features {gallery.dim}",
                           fix="extract query and gallery features with the same model")
    nq, ng = q.shape[0], gallery.num
    if nq == 0 or ng == 0:
        raise OccreidError(f"nothing to evaluate: {nq} query and {ng} gallery features",
                           fix="check that the test split's query and gallery folders hold images")
    q_pids, g_pids, q_camids, g_camids = check_ids(nq, ng, q_pids, g_pids, q_camids, g_camids)
    mask = None
    if cfg.metric.startswith("masked") and q_mask is not None:
        mask = as_features(q_mask, "query masks")
        if mask.shape != q.shape:
            raise OccreidError(f"query masks have shape {tuple(mask.shape)} but query features {tuple(q.shape)}",
                               fix="pass one mask per query with the feature dimension (the method's Embedding.mask)")

    def blocks():
        """(start, stop, distance block) over the queries."""
        if cfg.rerank:
            log.info("re-ranking %d queries x %d gallery items (k1=%d, k2=%d, lambda=%.2f)",
                     nq, ng, cfg.k1, cfg.k2, cfg.lambda_value)
            yield 0, nq, re_ranking_features(q, gallery, cfg.metric, mask, cfg.normalize, cfg.k1, cfg.k2,
                                             cfg.lambda_value, memory_budget_mb=cfg.memory_budget_mb)
            return
        for a, b in chunks(nq, distance_rows(cfg.memory_budget_mb, ng, gallery.dim)):
            yield a, b, compute_distance(q[a:b], gallery, cfg.metric, None if mask is None else mask[a:b],
                                         cfg.normalize)

    firsts, aps, inps, tops = [], [], [], []
    with tqdm(total=nq, desc="evaluate", unit="query", leave=False) as bar:
        for a, b, d in blocks():
            first, ap, inp = rank_chunk(d, q_pids[a:b], g_pids, q_camids[a:b], g_camids, cfg.protocol)
            firsts.append(first), aps.append(ap), inps.append(inp)
            if cfg.save_topk:
                tops.append(top_k(d, q_pids[a:b], q_camids[a:b], g_pids, g_camids, cfg.protocol, cfg.save_topk))
            bar.update(b - a)
            del d
    topk = np.concatenate(tops) if tops else None
    result = aggregate(np.concatenate(firsts), np.concatenate(aps), np.concatenate(inps), cfg.max_rank,
                       cfg.protocol, topk)
    require_valid(result)
    log.info("evaluated %d queries (%d skipped): mAP %.2f%%, rank-1 %.2f%%", result.num_valid,
             result.num_skipped, 100 * result.mAP, 100 * result.cmc[0])
    return result


def save_ranks(path: str | Path, result: RankingResult, topk: np.ndarray | None = None) -> Path:
    """Write ``ranks.npz`` atomically: per query ``first_match`` (int32, 0 = skipped), ``ap`` / ``inp``
    (float64, NaN for skipped queries), ``valid`` (bool) and ``topk`` (int32 [nq, k] gallery indices,
    -1 padded; from ``topk`` or ``result.topk``, omitted if neither)."""
    nq = result.first_match.shape[0]
    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    ap[result.valid] = result.ap
    inp[result.valid] = result.inp
    arrays = {"first_match": result.first_match.astype(np.int32), "ap": ap, "inp": inp, "valid": result.valid,
              "cmc": result.cmc}
    topk = result.topk if topk is None else np.asarray(topk)
    if topk is not None:
        if topk.ndim != 2 or topk.shape[0] != nq:
            raise OccreidError(f"topk must be [num_query={nq}, k], got shape {topk.shape}",
                               fix="pass one row of gallery indices per query")
        arrays["topk"] = topk.astype(np.int32)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    log.info("wrote per-query ranks to %s", path)
    return path
