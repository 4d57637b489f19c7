"""Ranking metrics (CMC, mAP, mINP) without sorting the gallery.

Protocol — which gallery items a query is ranked against:

- Gallery items with pid < 0 are *junk* under every protocol (Market-1501's "-1" images, as in the
  original Market MATLAB evaluation): removed from the ranking, never a match and never a negative.
  pid 0 (Market's distractors) is an ordinary identity: it matches nothing the queries hold.
- ``market`` (default): also removes gallery items with the query's pid AND the query's camera.
- ``cross_camera_free`` (alias ``occluded_reid``): removes nothing else. Occluded-REID's queries (camera 0)
  and gallery (camera 2) come from different "cameras" by construction, so the same-camera rule is not part
  of its protocol — the cameras are ignored, explicitly.
- ``single_camera``: removes nothing else either; for data recorded by one camera, where the same-camera
  rule would remove every match. Same arithmetic as ``cross_camera_free``; a separate name so that
  reports say which assumption was made.

A query whose remaining gallery holds no item of its pid (including a query with pid < 0) is skipped and
counted in ``num_skipped``.

Per valid query, with the remaining items ranked by ascending distance and ties broken by gallery order
(lower gallery index first, as a stable sort would), positives at 1-based ranks r_1 < … < r_n:
first match = r_1; AP = (1/n) Σ_j j / r_j; INP = n / r_n (Ye et al. 2021). CMC@k = fraction of valid
queries with r_1 ≤ k. If ``max_rank`` exceeds the remaining gallery size the CMC is simply continued:
every valid query has r_1 ≤ its gallery size, so the curve is 1 there (a per-query CMC is 0 before the
first match and 1 from it on) — no truncation as in torchreid.

How, without an argsort of the gallery: the rank of positive j is 1 + the number of remaining items
ordered before it. Only items no farther than the query's farthest positive can be, so one comparison
pass and ``nonzero`` pick those *candidates* (a few percent of the gallery for a useful model). Each
positive and candidate gets one int64 key packing (query row, an order-preserving 32-bit code of the
distance, gallery index), so keys sort exactly like (distance, gallery index) — the tie rule — and all
queries' positives form one sorted array; one ``searchsorted`` gives each candidate the number of its
query's positives before it, and a histogram of those counts, cumulated, gives the negatives before
each positive. Work O(nq·ng) plus O(candidates · log positives), exact, ties included. Distances that
float32 cannot hold exactly (float64 input) are coded by their dense rank in the block instead.

Aggregates are computed once from the per-query arrays in float64, so results do not depend on how the
queries were chunked (bit-identical).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import OccreidError
from .chunking import chunks, ranking_rows
from .config import canonical_protocol
from .ordering import max_block_rows, packed_keys


@dataclass
class RankingResult:
    """Metrics over the valid queries and the per-query results they come from.

    cmc[k-1] = CMC@k; ap / inp hold one value per valid query (query order); first_match holds the 1-based
    rank of the first match per query (0 = skipped query); valid marks the queries that were scored.
    topk (optional) holds per query the gallery indices of its ``save_topk`` nearest remaining items.
    """

    cmc: np.ndarray
    mAP: float
    mINP: float
    num_valid: int
    num_skipped: int
    ap: np.ndarray
    first_match: np.ndarray
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    inp: np.ndarray = field(default_factory=lambda: np.zeros(0))
    protocol: str = "market"
    topk: np.ndarray | None = None

    def summary(self, ranks: tuple[int, ...] = (1, 5, 10)) -> dict:
        """Plain-JSON metrics (fractions in [0, 1]; None where undefined, e.g. an empty subset)."""
        def num(x: float):
            return None if not np.isfinite(x) else float(x)

        out = {"mAP": num(self.mAP), "mINP": num(self.mINP), "num_valid": int(self.num_valid),
               "num_skipped": int(self.num_skipped), "protocol": self.protocol}
        for k in ranks:
            if k <= len(self.cmc):
                out[f"rank{k}"] = num(self.cmc[k - 1])
        return out


def _ids(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 1:
        raise OccreidError(f"{name} must be a 1-D array, got shape {tuple(t.shape)}",
                           fix="pass one id per image, e.g. [r.pid for r in records]")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise OccreidError(f"{name} must hold integers, got {t.dtype}",
                           fix="pass integer ids (Record.pid / Record.camid)")
    return t.to(torch.int64)


def check_ids(nq: int, ng: int, q_pids, g_pids, q_camids, g_camids):
    """Validated int64 id tensors whose lengths match the distance matrix."""
    out = []
    named = (("q_pids", q_pids, nq), ("g_pids", g_pids, ng), ("q_camids", q_camids, nq), ("g_camids", g_camids, ng))
    for name, x, n in named:
        t = _ids(x, name)
        if t.shape[0] != n:
            side = "queries" if name.startswith("q") else "gallery items"
            raise OccreidError(f"{name} has {t.shape[0]} entries but there are {n} {side}",
                               fix="pass the ids of the same images, in the same order, as the features")
        out.append(t)
    return out


class PidIndex:
    """Gallery items grouped by pid, so a query's same-pid items are found without scanning the gallery."""

    def __init__(self, g_pids: torch.Tensor):
        self.order = torch.argsort(g_pids, stable=True)
        self.sorted = g_pids[self.order]

    def members(self, q_pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, gallery index) of every gallery item sharing query row's pid; row-major, gallery order."""
        lo = torch.searchsorted(self.sorted, q_pids, side="left")
        n = torch.searchsorted(self.sorted, q_pids, side="right") - lo
        rows = torch.repeat_interleave(torch.arange(q_pids.shape[0]), n)
        within = torch.arange(rows.numel()) - (torch.cumsum(n, 0) - n)[rows]
        return rows, self.order[lo[rows] + within]


def positive_ranks(d: torch.Tensor, q_pids: torch.Tensor, q_cams: torch.Tensor, g_pids: torch.Tensor,
                   g_cams: torch.Tensor, index: PidIndex, protocol: str,
                   g_valid: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based ranks (c, P) of each query's positives in ascending order (padding: 0) and their count (c,).

    Only items at or before a query's farthest positive can precede a positive, so just those
    *candidates* (one comparison pass + ``nonzero``; same-pid items and junk — ``g_valid`` False — are
    cleared first) get keys. A key packs (row, value code, gallery index) into one int64 so that all
    rows' positives form one sorted array: one flat ``searchsorted`` places every candidate, no padding.
    """
    c, ng = d.shape
    same_r, same_c = index.members(q_pids)
    ok = g_pids[same_c] >= 0
    if protocol == "market":
        ok &= g_cams[same_c] != q_cams[same_r]
    rows, cols = same_r[ok], same_c[ok]
    npos = torch.bincount(rows, minlength=c)
    P = int(npos.max()) if c else 0
    if P == 0:
        return torch.zeros(c, 0, dtype=torch.int64), npos
    pdist = d[rows, cols]
    pmax = torch.full((c,), float("-inf"), dtype=d.dtype).scatter_reduce_(0, rows, pdist, "amax")
    # numpy: its comparison and flatnonzero run several times faster than torch's on one core
    cand = d.numpy() <= pmax.numpy()[:, None]
    if g_valid is not None:
        cand &= g_valid
    cand[same_r.numpy(), same_c.numpy()] = False  # positives and same-pid removals are never negatives
    flat = torch.from_numpy(np.flatnonzero(cand))
    cr = torch.div(flat, ng, rounding_mode="floor")
    cc = flat - cr * ng
    keys = packed_keys(torch.cat([rows, cr]), torch.cat([pdist, d.reshape(-1)[flat]]), torch.cat([cols, cc]), ng)
    n = rows.numel()
    sorted_pos = torch.sort(keys[:n]).values  # grouped by row (rows are in the high bits)
    # flat bins: row r owns npos[r] + 1 bins from start[r] + r; bin b = positives of r ordered before it
    bins = torch.searchsorted(sorted_pos, keys[n:]) + cr
    hist = torch.bincount(bins, minlength=n + c)
    cum = torch.cumsum(hist, 0)
    start = torch.cumsum(npos, 0) - npos
    first_bin = start + torch.arange(c)
    base = cum[first_bin] - hist[first_bin]
    owner = torch.repeat_interleave(torch.arange(c), npos)  # row of each sorted positive
    j = torch.arange(n) - start[owner]
    ranks = torch.zeros(c, P, dtype=torch.int64)
    ranks[owner, j] = j + 1 + cum[torch.arange(n) + owner] - base[owner]
    return ranks, npos


def per_query(ranks: torch.Tensor, npos: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first_match, ap, inp) per query from positive ranks; skipped queries get 0, nan, nan.

    AP is a running (cumulative, sequential) sum read at the last positive, so padding never changes it.
    """
    c = npos.shape[0]
    first = np.zeros(c, dtype=np.int64)
    ap = np.full(c, np.nan)
    inp = np.full(c, np.nan)
    ok = npos > 0
    if bool(ok.any()):
        r = ranks[ok].to(torch.float64)
        n = npos[ok]
        last = (n - 1)[:, None]
        prec = torch.arange(1, r.shape[1] + 1, dtype=torch.float64)[None, :] / r.clamp_min(1.0)
        cum = torch.cumsum(prec, dim=1).gather(1, last).squeeze(1)
        okn = ok.numpy()
        first[okn] = ranks[ok, 0].numpy()
        ap[okn] = (cum / n.to(torch.float64)).numpy()
        inp[okn] = (n.to(torch.float64) / r.gather(1, last).squeeze(1)).numpy()
    return first, ap, inp


def aggregate(first: np.ndarray, ap: np.ndarray, inp: np.ndarray, max_rank: int, protocol: str,
              topk: np.ndarray | None = None) -> RankingResult:
    """Metrics from per-query arrays (all queries; skipped ones have first == 0)."""
    valid = first > 0
    n = int(valid.sum())
    hits = np.bincount(np.minimum(first[valid], max_rank + 1), minlength=max_rank + 2)[1 : max_rank + 1]
    cmc = np.cumsum(hits).astype(np.float64) / n if n else np.full(max_rank, np.nan)
    ap_v, inp_v = ap[valid].astype(np.float64), inp[valid].astype(np.float64)
    return RankingResult(
        cmc=cmc,
        mAP=float(np.mean(ap_v)) if n else float("nan"),
        mINP=float(np.mean(inp_v)) if n else float("nan"),
        num_valid=n,
        num_skipped=int(first.shape[0] - n),
        ap=ap_v,
        first_match=first.astype(np.int64),
        valid=valid,
        inp=inp_v,
        protocol=protocol,
        topk=topk,
    )


def check_distance(dist, name: str = "distance matrix") -> torch.Tensor:
    d = torch.as_tensor(np.asarray(dist) if not isinstance(dist, torch.Tensor) else dist)
    if d.ndim != 2:
        raise OccreidError(f"{name} must be 2-D (num_query, num_gallery), got shape {tuple(d.shape)}",
                           fix="pass the query × gallery distance block")
    d = d.detach().cpu()
    if not d.is_floating_point():
        d = d.to(torch.float64)
    elif d.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
        d = d.to(torch.float32)
    d = d.contiguous()
    if d.numel() and not all(map(math.isfinite, torch.aminmax(d))):  # NaN propagates; no bool copy
        raise OccreidError(f"{name} contains NaN or infinite values",
                           fix="check the features for NaN (AMP overflow) and the distance metric")
    return d


def rank_chunk(d: torch.Tensor, q_pids, g_pids, q_cams, g_cams, protocol: str,
               rows: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query (first_match, ap, inp) of a distance block, walked in cache-sized row blocks."""
    rows = min(ranking_rows(d.shape[1]) if rows is None else rows, max_block_rows(d.shape[1]))
    index = PidIndex(g_pids)
    g_valid = (g_pids >= 0).numpy()[None, :] if bool((g_pids < 0).any()) else None
    parts = [per_query(*positive_ranks(d[a:b], q_pids[a:b], q_cams[a:b], g_pids, g_cams, index, protocol, g_valid))
             for a, b in chunks(d.shape[0], rows)]
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]


def rank_metrics(dist, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, protocol: str = "market",
                 *, chunk_rows: int | None = None) -> RankingResult:
    """CMC / mAP / mINP of a (nq, ng) distance matrix under ``protocol`` (see the module docstring).

    ``chunk_rows`` sets the row block of the internal walk (default: cache-sized); results are identical
    for every value. Raises :class:`OccreidError` if no query has a valid match.
    """
    protocol = canonical_protocol(protocol)
    if not isinstance(max_rank, int) or max_rank < 1:
        raise OccreidError(f"max_rank = {max_rank!r} must be a positive integer", fix="use e.g. max_rank=50")
    d = check_distance(dist)
    q_pids, g_pids, q_camids, g_camids = check_ids(*d.shape, q_pids, g_pids, q_camids, g_camids)
    first, ap, inp = rank_chunk(d, q_pids, g_pids, q_camids, g_camids, protocol, chunk_rows)
    result = aggregate(first, ap, inp, max_rank, protocol)
    require_valid(result)
    return result


def require_valid(result: RankingResult) -> None:
    if result.num_valid == 0:
        raise OccreidError(
            f"no query has a matching gallery item under protocol '{result.protocol}' "
            f"({result.num_skipped} queries skipped)",
            fix="check that query and gallery pids/camids come from the same split and the protocol fits the "
                "dataset (Occluded-REID needs protocol 'occluded_reid')",
        )


def subset_metrics(result: RankingResult, query_mask) -> RankingResult:
    """Metrics of the queries selected by ``query_mask`` (bool, one per query), from the per-query results.

    An empty or match-less subset gives NaN metrics with ``num_valid == 0`` (``summary`` turns them into None).
    """
    mask = np.asarray(query_mask)
    nq = result.first_match.shape[0]
    if mask.dtype != bool or mask.shape != (nq,):
        raise OccreidError(f"query_mask must be a boolean array of length {nq}, got {mask.dtype} {mask.shape}",
                           fix="pass one True/False per query, e.g. np.array([r.occluded for r in splits.query])")
    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    ap[result.valid] = result.ap
    inp[result.valid] = result.inp
    topk = None if result.topk is None else result.topk[mask]
    return aggregate(result.first_match[mask], ap[mask], inp[mask], len(result.cmc), result.protocol, topk)
