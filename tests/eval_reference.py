"""Straightforward reference implementations for the evaluation tests, written independently of
``occreid.eval``: a full stable argsort per query, DPM's per-query masked-distance loop, and Zhong et al.'s
re-ranking with its original loops. Slow and obvious on purpose — the library must agree with them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def brute_force_metrics(dist, q_pids, g_pids, q_cams, g_cams, max_rank: int, protocol: str) -> dict:
    """Per query: sort the whole gallery (stable), drop removed items, read off the positives' ranks."""
    dist, q_pids, g_pids = np.asarray(dist), np.asarray(q_pids), np.asarray(g_pids)
    q_cams, g_cams = np.asarray(q_cams), np.asarray(g_cams)
    first, aps, inps, topk = [], [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        keep = g_pids[order] >= 0
        if protocol == "market":
            keep &= ~((g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]))
        ranked = order[keep]
        topk.append(ranked)
        hits = np.flatnonzero(g_pids[ranked] == q_pids[i]) + 1  # 1-based ranks of the positives
        if hits.size == 0:
            first.append(0)
            continue
        first.append(int(hits[0]))
        aps.append(np.mean(np.arange(1, hits.size + 1) / hits))
        inps.append(hits.size / hits[-1])
    first = np.array(first)
    valid = first > 0
    cmc = np.array([np.mean(first[valid] <= k) for k in range(1, max_rank + 1)]) if valid.any() else None
    return {"first_match": first, "ap": np.array(aps), "inp": np.array(inps), "cmc": cmc,
            "mAP": float(np.mean(aps)) if aps else None, "mINP": float(np.mean(inps)) if inps else None,
            "num_valid": int(valid.sum()), "ranked": topk}


def dpm_masked_loop(qf: torch.Tensor, gf: torch.Tensor, q_mask: torch.Tensor) -> torch.Tensor:
    """DPM's ``cosine_single``: one query at a time, mask applied to normalised gallery features."""
    g = F.normalize(gf, dim=1)
    out = []
    for i in range(qf.shape[0]):
        gm = F.normalize(g * q_mask[i], dim=1)
        sim = gm @ F.normalize(qf[i], dim=0)
        out.append(torch.arccos(torch.clamp(sim, -1 + 1e-5, 1 - 1e-5)))
    return torch.stack(out)


def zhong_re_ranking(q_g, q_q, g_g, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """The released python re_ranking (zhunzhong07/person-re-ranking) with its loops, in float64, minus
    the squaring of the input; argsort made stable so ties have one answer."""
    original = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    original = np.transpose(original.astype(np.float64) / np.max(original, axis=0))
    n, nq = original.shape[0], q_g.shape[0]
    V = np.zeros_like(original)
    rank = np.argsort(original, axis=1, kind="stable")
    half = int(np.around(k1 / 2.0))
    for i in range(n):
        forward = rank[i, : k1 + 1]
        backward = rank[forward, : k1 + 1]
        recip = forward[np.where(backward == i)[0]]
        expansion = recip
        for cand in recip:
            cf = rank[cand, : half + 1]
            cb = rank[cf, : half + 1]
            cand_recip = cf[np.where(cb == cand)[0]]
            if len(np.intersect1d(cand_recip, recip)) > 2.0 / 3 * len(cand_recip):
                expansion = np.append(expansion, cand_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = weight / np.sum(weight)
    if k2 != 1:
        V = np.stack([np.mean(V[rank[i, :k2], :], axis=0) for i in range(n)])
    jaccard = np.zeros((nq, n))
    for i in range(nq):
        inter = np.minimum(V[i], V).sum(axis=1)
        jaccard[i] = 1 - inter / (2.0 - inter)
    final = jaccard * (1 - lambda_value) + original[:nq] * lambda_value
    return final[:, nq:]
