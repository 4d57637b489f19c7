"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in torch, walking the rows in chunks.

The algorithm (as in the authors' ``re_ranking.py``), on the (nq+ng)² distance matrix of all images:

1. each row is divided by its maximum (the released code divides columns and transposes — the same for the
   symmetric matrices used here); ``initial_rank`` = the k1+1 nearest items per row, ties by index;
2. R(i) = k-reciprocal neighbours of i (j in i's top k1+1 and i in j's); for each c in R(i), if more than
   2/3 of R½(c) (its reciprocal set with round(k1/2)) lies in R(i), R½(c) joins the expansion set;
   V[i, e] = exp(−d[i, e]) normalised to sum 1 over the expansion set;
3. local query expansion: V[i] ← mean of V over i's k2 nearest items (k2 = 1: unchanged);
4. Jaccard distance J[i, j] = 1 − Σ min(V_i, V_j) / (2 − Σ min(V_i, V_j)) for query i, gallery j;
5. final = (1 − λ)·J + λ·d[query, gallery].

Memory: the released code and TransReID / CLIP-ReID hold the full (nq+ng)² float matrix plus a dense V of
the same size (Occluded-Duke: 19,871² × 4 B ≈ 1.6 GB each; MSMT17: 93,820² × 4 B ≈ 35 GB). Here distance
rows are produced chunk by chunk (from the three blocks, or recomputed from the features) and only the
neighbour table ((nq+ng) × (k1+1) int64), the sparse V (a few dozen entries per row) and the (nq, ng)
result are kept: rows are computed three times (neighbours, weights, final mix) instead of stored.

Distances are used as given (no squaring, unlike the released code's ``np.power(d, 2)``);
:func:`re_ranking_features` squares euclidean-type metrics itself, which matches TransReID / CLIP-ReID
(squared euclidean of features) — and cosine needs no change: after the row-max division 1 − cos and the
squared euclidean of normalised features (2 − 2 cos) are the same.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..errors import OccreidError
from .chunking import chunks, rows_per_chunk
from .distance import PreparedGallery, as_features, compute_distance, prepare_gallery
from .metrics import check_distance
from .ordering import smallest_k

RowFn = Callable[[int, int], torch.Tensor]  # rows [a, b) of the (N, N) distance matrix, N = nq + ng
# bytes per (row, column) entry while a chunk of rows is processed: the float32 rows (and the copy that
# assembles them from blocks), the int64 ordering keys and their temporaries of the neighbour search
BYTES_PER_ENTRY = 32


def _check_params(k1: int, k2: int, lambda_value: float) -> None:
    if int(k1) < 1 or int(k2) < 1 or not 0.0 <= float(lambda_value) <= 1.0:
        raise OccreidError(f"re-ranking needs k1 >= 1, k2 >= 1 and 0 <= lambda <= 1, got k1={k1}, k2={k2}, "
                           f"lambda={lambda_value}", fix="use the defaults k1=20, k2=6, lambda_value=0.3")


def re_ranking(q_g_dist, q_q_dist, g_g_dist, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
               *, memory_budget_mb: float = 512) -> torch.Tensor:
    """Re-ranked (nq, ng) float32 distances from the query-gallery, query-query and gallery-gallery blocks.

    The three blocks together must form a symmetric matrix. Memory: the blocks (given) + the output +
    chunk work bounded by ``memory_budget_mb``.
    """
    _check_params(k1, k2, lambda_value)
    qg, qq, gg = (check_distance(x, name) for x, name in
                  ((q_g_dist, "q_g_dist"), (q_q_dist, "q_q_dist"), (g_g_dist, "g_g_dist")))
    nq, ng = qg.shape
    if qq.shape != (nq, nq) or gg.shape != (ng, ng):
        raise OccreidError(f"re-ranking blocks do not fit: q_g {tuple(qg.shape)}, q_q {tuple(qq.shape)}, "
                           f"g_g {tuple(gg.shape)}", fix="pass q_q as (nq, nq) and g_g as (ng, ng)")

    def rows(a: int, b: int) -> torch.Tensor:
        parts = []
        if a < nq:
            parts.append(torch.cat([qq[a:min(b, nq)], qg[a:min(b, nq)]], dim=1))
        if b > nq:
            s = max(a, nq) - nq
            parts.append(torch.cat([qg[:, s:b - nq].T, gg[s:b - nq]], dim=1))
        return torch.cat(parts, dim=0)

    return k_reciprocal(rows, nq, ng, k1, k2, lambda_value, memory_budget_mb)


def _subset(g: PreparedGallery, a: int, b: int) -> PreparedGallery:
    def cut(t):
        return None if t is None else t[a:b]
    return PreparedGallery(g.metric, g.normalize, g.feat[a:b], cut(g.norm2))


def re_ranking_features(qf, gf, metric: str = "cosine", q_mask=None, normalize: bool = True, k1: int = 20,
                        k2: int = 6, lambda_value: float = 0.3, *, memory_budget_mb: float = 512) -> torch.Tensor:
    """Re-ranked (nq, ng) distances computed from features, never holding an (N, N) matrix.

    Query-gallery entries use ``metric`` (masked metrics with each query's mask); query-query and
    gallery-gallery entries use the same metric with an all-ones mask (no gallery masks exist), which keeps
    one scale (masked_cosine: the angle; masked_euclidean: plain euclidean). Euclidean-type metrics are
    squared first (see the module docstring).
    """
    _check_params(k1, k2, lambda_value)
    q = as_features(qf, "query features")
    pg = prepare_gallery(gf, metric, normalize)
    pq = prepare_gallery(q, metric, normalize)
    if q.shape[1] != pg.dim:
        raise OccreidError(f"query features have dimension {q.shape[1]} but gallery features {pg.dim}",
                           fix="extract query and gallery features with the same model")
    nq, ng = q.shape[0], pg.num
    masked = metric.startswith("masked")
    if masked and q_mask is None:
        compute_distance(q[:1], _subset(pg, 0, 1), metric, None, normalize)  # raises the missing-mask error
    mask = as_features(q_mask, "query masks").to(q.dtype) if masked else None

    def dist(x, g, m):
        if masked and m is None:
            m = torch.ones_like(x)
        d = compute_distance(x, g, metric, m, normalize)
        return d.square_() if metric.endswith("euclidean") else d

    def rows(a: int, b: int) -> torch.Tensor:
        parts = []
        if a < nq:
            s, e = a, min(b, nq)
            m = None if mask is None else mask[s:e]
            parts.append(torch.cat([dist(q[s:e], pq, None), dist(q[s:e], pg, m)], dim=1))
        if b > nq:
            s, e = max(a, nq) - nq, b - nq
            sub = _subset(pg, s, e)
            parts.append(torch.cat([dist(q, sub, mask).T, dist(sub.feat, pg, None)], dim=1))
        return torch.cat(parts, dim=0)

    return k_reciprocal(rows, nq, ng, k1, k2, lambda_value, memory_budget_mb)


def _row_max(d: torch.Tensor) -> torch.Tensor:
    """float64 maximum of each row: rows are divided by it (guarded against an all-zero row)."""
    return d.max(dim=1).values.to(torch.float64).clamp_min(torch.finfo(torch.float64).tiny)


def _reciprocal(F: torch.Tensor, who: torch.Tensor) -> torch.Tensor:
    """recip[r, t] = row who[r] is among the neighbours of its neighbour F[who[r], t]."""
    return (F[F[who]] == who[:, None, None]).any(dim=-1)


def k_reciprocal(rows: RowFn, nq: int, ng: int, k1: int, k2: int, lambda_value: float,
                 memory_budget_mb: float) -> torch.Tensor:
    """Zhong et al.'s re-ranking given a row provider; returns the (nq, ng) float32 final distance."""
    n = nq + ng
    step = rows_per_chunk(memory_budget_mb, n, BYTES_PER_ENTRY)
    k1, k2 = min(int(k1), n - 1), min(int(k2), n)
    kh = min(int(round(k1 / 2)), n - 1)  # round half to even, as numpy.around in the released code
    width = max(k1 + 1, k2)
    initial = torch.cat([smallest_k(rows(a, b), width) for a, b in chunks(n, step)])
    F, Fh = initial[:, : k1 + 1], initial[:, : kh + 1]
    recip_h = torch.cat([_reciprocal(Fh, torch.arange(a, b)) for a, b in chunks(n, max(1, step * 4))])

    # V: sparse rows (row, col, weight)
    vr, vc, vv = [], [], []
    for a, b in chunks(n, step):
        who = torch.arange(a, b)
        recip = _reciprocal(F, who)  # (c, k1+1): F[who, t] is in R(who)
        cand = F[who]
        E = Fh[cand]  # (c, k1+1, kh+1): candidate's half neighbours
        Eok = recip_h[cand]  # which of them form R½(candidate)
        member = ((E[..., None] == cand[:, None, None, :]) & recip[:, None, None, :]).any(dim=-1)
        inter = (member & Eok).sum(dim=-1)
        accept = recip & (3 * inter > 2 * Eok.sum(dim=-1))  # |R½(c) ∩ R(i)| > 2/3 |R½(c)|, exact
        expand = torch.zeros(b - a, n, dtype=torch.bool)
        r = torch.arange(b - a)
        expand[r[:, None].expand_as(cand)[recip], cand[recip]] = True
        sel = accept[..., None] & Eok
        expand[r[:, None, None].expand_as(E)[sel], E[sel]] = True
        i, j = expand.nonzero(as_tuple=True)  # row-major: each row's expansion set in index order
        d = rows(a, b)
        w = torch.exp(-(d[i, j].to(torch.float64) / _row_max(d)[i]))  # only the expansion entries
        del d
        total = torch.zeros(b - a, dtype=torch.float64).index_add_(0, i, w)
        vr.append(i + a), vc.append(j), vv.append(w / total[i])
    V = _csr(torch.cat(vr), torch.cat(vc), torch.cat(vv), n)
    if k2 > 1:
        V = _query_expansion(V, initial[:, :k2], n)
    return _final(rows, V, nq, ng, lambda_value, step)


def _csr(r: torch.Tensor, c: torch.Tensor, v: torch.Tensor, n: int):
    """Row-major sparse matrix as (row pointer, column, value), rows sorted by (row, column)."""
    order = torch.argsort(r * n + c)
    r, c, v = r[order], c[order], v[order]
    ptr = torch.zeros(n + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(torch.bincount(r, minlength=n), 0)
    return ptr, c, v


def _gather_rows(V, who: torch.Tensor):
    """Entries of rows ``who`` of CSR ``V``: (position in ``who``, column, value)."""
    ptr, col, val = V
    counts = ptr[who + 1] - ptr[who]
    owner = torch.repeat_interleave(torch.arange(who.numel()), counts)
    at = ptr[who][owner] + torch.arange(owner.numel()) - (torch.cumsum(counts, 0) - counts)[owner]
    return owner, col[at], val[at]


def _query_expansion(V, nearest: torch.Tensor, n: int):
    """V[i] ← mean of V[nearest[i, :]] (sparse, float64)."""
    k2 = nearest.shape[1]
    owner, col, val = _gather_rows(V, nearest.flatten())
    row = owner // k2
    keys, inv = torch.unique(row * n + col, return_inverse=True)
    sums = torch.zeros(keys.numel(), dtype=torch.float64).index_add_(0, inv, val)
    return _csr(keys // n, keys % n, sums / k2, n)


def _final(rows: RowFn, V, nq: int, ng: int, lambda_value: float, step: int) -> torch.Tensor:
    """(1 − λ)·Jaccard + λ·d for query rows, gallery columns; Σ min via the gallery rows' inverted index."""
    n = nq + ng
    ptr, col, val = V
    g_start = int(ptr[nq])
    # inverted index (column → gallery rows holding it): CSR of the transposed gallery part of V
    g_rows = torch.repeat_interleave(torch.arange(nq, n), ptr[nq + 1:] - ptr[nq:-1]) - nq
    inv = _csr(col[g_start:], g_rows, val[g_start:], n)
    out = torch.empty(nq, ng, dtype=torch.float32)
    for a, b in chunks(nq, step):
        owner, c, v_i = _gather_rows(V, torch.arange(a, b))  # query rows' entries
        pair, g, v_g = _gather_rows(inv, c)  # gallery rows sharing each column
        acc = torch.zeros((b - a) * ng, dtype=torch.float64)
        acc.index_add_(0, owner[pair] * ng + g, torch.minimum(v_i[pair], v_g))
        acc = acc.view(b - a, ng)
        jaccard = acc.div_(2.0 - acc).neg_().add_(1.0)  # 1 - Σmin / (2 - Σmin), in place
        d = rows(a, b)
        original = d[:, nq:].to(torch.float64).div_(_row_max(d)[:, None])
        del d
        out[a:b] = jaccard.mul_(1.0 - lambda_value).add_(original.mul_(lambda_value))
    return out
