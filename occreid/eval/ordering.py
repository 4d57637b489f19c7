"""Exact, tie-stable ordering without full sorts: integer keys that sort like (distance, gallery index).

Every ranking in ``occreid.eval`` (metrics, saved top-k lists, re-ranking's neighbour lists) breaks ties
by gallery order, as a stable sort would. Encoding (distance, index) into one unique int64 per entry makes
that rule hold for any comparison-based primitive (``searchsorted``, ``topk``) — no argsort of a whole row
is needed and no tie can make results depend on the algorithm or the chunking.
"""

from __future__ import annotations

import torch

_SIGN_MASK = 0x7FFFFFFF
PAD_KEY = torch.iinfo(torch.int64).max  # sorts after every real key


def value_bits(d: torch.Tensor) -> torch.Tensor:
    """int64 in [0, 2³²), same shape as ``d``, ordered exactly like the values of ``d``; equal values get
    equal codes.

    float32 (and float16/bfloat16, or float64 holding float32 values): the IEEE bit pattern made
    order-preserving — negative numbers get their magnitude bits flipped, -0.0 is folded into +0.0 so they
    tie, and 2³¹ is added so all codes are non-negative. Other float64 values: their dense rank within
    ``d`` instead (a sort, only on that input).
    """
    if d.dtype != torch.float32:
        d32 = d.to(torch.float32)
        if d.dtype in (torch.float16, torch.bfloat16) or torch.equal(d32.to(d.dtype), d):
            d = d32
    if d.dtype != torch.float32:
        return torch.unique(d, sorted=True, return_inverse=True)[1].to(torch.int64)
    bits = (d + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 turns -0.0 into +0.0
    return torch.where(bits < 0, bits ^ _SIGN_MASK, bits).add_(1 << 31)


def order_keys(d: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
    """int64 keys (same shape as ``d``) ordered like (d, idx): the :func:`value_bits` code (moved to a
    signed range so that the product fits) times 2³² plus ``idx`` (gallery indices, < 2³²). ``idx``
    defaults to the column index, so keys are unique within a row.
    """
    high = value_bits(d).sub_(1 << 31)  # back to [-2³¹, 2³¹): the shift below cannot overflow
    if idx is None:
        idx = torch.arange(d.shape[-1], dtype=torch.int64)
    return high.mul_(1 << 32).add_(idx)


def index_bits(ng: int) -> int:
    """Bits that hold a gallery index below ``ng``."""
    return max(1, (ng - 1).bit_length())


def max_block_rows(ng: int) -> int:
    """Rows a :func:`packed_keys` block can address: 63 bits = row, 32-bit value code, gallery index."""
    return 1 << (31 - index_bits(ng))


def packed_keys(rows: torch.Tensor, values: torch.Tensor, cols: torch.Tensor, ng: int) -> torch.Tensor:
    """One int64 per entry ordered like (row, value, column): sorting entries of many rows at once
    groups them by row and orders each row exactly like a stable sort of its values. ``rows`` must be
    below :func:`max_block_rows`."""
    shift = index_bits(ng)
    return (rows << (32 + shift)) | (value_bits(values) << shift) | cols


def smallest_k(d: torch.Tensor, k: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Column indices (rows, k) of the k smallest entries per row, ascending, ties by column order.

    ``keep`` (bool, same shape) excludes entries; rows with fewer than k kept entries are padded with -1.
    """
    key = order_keys(d)
    if keep is not None:
        key.masked_fill_(~keep, PAD_KEY)
    k = min(int(k), d.shape[1])
    vals, idx = torch.topk(key, k, dim=1, largest=False, sorted=True)
    return idx.masked_fill_(vals == PAD_KEY, -1)
