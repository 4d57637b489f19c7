"""Occlusion-aware IoU (OIoU) between person masks on the patch grid, with horizontal mask rolling.

Definitions (our reading of SPT / DPM++, see :class:`~occreid.augment.config.SptConfig`):

- Person mask ``M = saliency >= threshold`` (identity set = 1, occlusion set = 0), bool ``[h, w]``.
- ``roll(M, r)``: circular shift by ``r`` patch columns (``np.roll`` on the last axis; r > 0 moves right).
- ``OIoU_r(i, j) = |roll(M_i, r) ∩ M_j| / |M_j|``, and 0 when ``|M_j| = 0``. Normalising by the partner's
  person area measures what the transfer needs: the pasted region is j's person region, and OIoU is the
  share of it that i's (shifted) person covers.
- Roll admission (α2): ``self_r(i) = |roll(M_i, r) ∩ M_i| / |M_i|`` (0 for an empty mask); roll r is
  admitted when ``r == 0`` or ``self_r(i) >= α2``.
- ``best(i, j)``: the largest OIoU over the admitted rolls of i; ties go to the roll met first in
  :func:`roll_order` (0, +1, −1, +2, −2, …: the smallest shift wins).

Everything is matrix products of flattened masks, one per roll, over blocks of source rows, so the memory
stays ``chunk × N`` whatever the dataset size.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


def binarise(saliency: np.ndarray, threshold: float) -> np.ndarray:
    """Person masks: ``saliency >= threshold`` (bool, same shape)."""
    return np.asarray(saliency, dtype=np.float32) >= np.float32(threshold)


def roll_order(max_roll: int) -> np.ndarray:
    """Rolls considered, in tie-break order: ``[0, 1, -1, 2, -2, ..., max_roll, -max_roll]`` (int64)."""
    out = [0]
    for r in range(1, max_roll + 1):
        out += [r, -r]
    return np.array(out, dtype=np.int64)


def oiou(m_i: np.ndarray, m_j: np.ndarray, r: int = 0) -> float:
    """OIoU of one pair and one roll (the reference definition; the matrix versions must agree with it)."""
    m_i, m_j = np.asarray(m_i, bool), np.asarray(m_j, bool)
    area = int(m_j.sum())
    return 0.0 if area == 0 else float((np.roll(m_i, r, axis=-1) & m_j).sum()) / area


def self_overlap(masks: np.ndarray, rolls: np.ndarray) -> np.ndarray:
    """``[N, R]``: |roll(M_i, r) ∩ M_i| / |M_i| per image and roll (0 where the mask is empty)."""
    masks = np.asarray(masks, bool)
    area = masks.reshape(len(masks), -1).sum(axis=1).astype(np.float64)
    out = np.zeros((len(masks), len(rolls)), np.float64)
    for k, r in enumerate(rolls):
        inter = (np.roll(masks, int(r), axis=-1) & masks).reshape(len(masks), -1).sum(axis=1)
        out[:, k] = np.divide(inter, area, out=np.zeros_like(area), where=area > 0)
    return out


def admitted_rolls(masks: np.ndarray, rolls: np.ndarray, alpha2: float) -> np.ndarray:
    """``[N, R]`` bool: roll r admitted for image i (r == 0, or self-overlap >= α2)."""
    return (np.asarray(rolls) == 0)[None, :] | (self_overlap(masks, rolls) >= alpha2)


def oiou_matrix(src: np.ndarray, dst: np.ndarray, rolls: np.ndarray) -> np.ndarray:
    """``[R, Ns, Nd]`` float32: OIoU_r(i, j) for every roll, source mask i and partner mask j."""
    src, dst = np.asarray(src, bool), np.asarray(dst, bool)
    d = dst.reshape(len(dst), -1).astype(np.float32)
    area = d.sum(axis=1)
    inv = np.divide(1.0, area, out=np.zeros_like(area), where=area > 0)
    out = np.empty((len(rolls), len(src), len(dst)), np.float32)
    for k, r in enumerate(rolls):
        s = np.roll(src, int(r), axis=-1).reshape(len(src), -1).astype(np.float32)
        out[k] = (s @ d.T) * inv[None, :]  # counts are exact in float32 (at most h·w)
    return out


def best_oiou_chunks(masks: np.ndarray, rolls: np.ndarray, alpha2: float,
                     chunk_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Per block of source rows: ``(start, best [c, N] float32, best_roll [c, N] int16)`` over admitted rolls.

    ``best[a, j]`` is the best OIoU of source ``start + a`` against partner j (the diagonal is included:
    the caller excludes self-pairs), ``best_roll`` the roll that reaches it (first in ``rolls`` order).
    """
    masks = np.asarray(masks, bool)
    n = len(masks)
    flat = masks.reshape(n, -1).astype(np.float32)
    area = flat.sum(axis=1)
    inv = np.divide(1.0, area, out=np.zeros_like(area), where=area > 0)
    admitted = admitted_rolls(masks, rolls, alpha2)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        best = np.full((stop - start, n), -1.0, np.float32)
        best_roll = np.zeros((stop - start, n), np.int16)
        for k, r in enumerate(rolls):
            s = np.roll(masks[start:stop], int(r), axis=-1).reshape(stop - start, -1).astype(np.float32)
            score = (s @ flat.T) * inv[None, :]
            score[~admitted[start:stop, k]] = -1.0
            better = score > best  # strict: an equal score later in roll order does not replace
            best[better] = score[better]
            best_roll[better] = r
        yield start, best, best_roll
