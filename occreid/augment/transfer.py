"""Saliency-guided patch transfer: person i placed into partner j's scene, in pixels or in patch embeddings.

The rule, for source i, partner j and roll r (from the partner table):

    new_i = roll(x_i, r) ⊙ M + x_j ⊙ (1 − M),   M = M_j (the partner's person mask),   label = i

Why M = M_j (as SPT): the pasted region must remove *all* of j's person — any of j's body left in the
image would be a second identity under label i — and everything outside it is j's background and
occluders, the "real scene prior" that makes the occlusion realistic. The OIoU admission
(``|roll(M_i, r) ∩ M_j| / |M_j| >= α1``) guarantees that at least α1 of the pasted region is i's person,
so what is lost is mostly i's own background; i's body parts that fall outside M_j are hidden by j's
scene — that is the synthetic occlusion. The alternative M = roll(M_i, r) ∩ M_j would leave the rest of
j's person visible, and M = roll(M_i, r) would paste i over j's person without hiding it.

Pixel space: M is upsampled to pixels by the patch geometry (:meth:`PatchGeometry.upsample`) and the roll
becomes a circular shift by ``r × column stride`` pixels; the output is a selection (``np.where``), so
every pixel is exactly a pixel of roll(x_i) or of x_j. Both images must have the geometry's size (the
saliency stage's image size): the transfer runs on resized images before the training augmentation.
Token space (:func:`transfer_tokens`): the same selection on patch embeddings ``[B, N, D]``, with the roll
applied on the grid, for use inside :func:`occreid.saliency.geometry.patch_tokens_hook`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from occreid.saliency.geometry import PatchGeometry
from occreid.saliency.store import compose_sheet


def pixel_mask(mask: np.ndarray, geometry: PatchGeometry) -> np.ndarray:
    """Grid mask ``[h, w]`` → pixel mask ``[H, W]`` (bool) by the patch ownership rule."""
    return geometry.upsample(np.asarray(mask, bool))


def transfer_image(x_i: np.ndarray, x_j: np.ndarray, mask_j: np.ndarray, roll: int,
                   geometry: PatchGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(new image, pixel mask)``: roll(x_i) where the partner's upsampled person mask is set, x_j elsewhere.

    ``x_i``, ``x_j``: ``[H, W, C]`` arrays of the geometry's size; ``mask_j``: bool ``[h, w]``.
    """
    x_i, x_j = np.asarray(x_i), np.asarray(x_j)
    if x_i.shape != x_j.shape or tuple(x_i.shape[:2]) != geometry.img_size:
        raise ValueError(f"images {x_i.shape}, {x_j.shape} must both be {geometry.img_size} (H, W)")
    pm = pixel_mask(mask_j, geometry)
    src = np.roll(x_i, geometry.column_shift(roll), axis=1)
    return np.where(pm[..., None], src, x_j), pm


def roll_tokens(tokens: torch.Tensor, rolls: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, N, D]`` tokens on an (h, w) grid, each sample rolled circularly by its own number of columns."""
    b, n, d = tokens.shape
    h, w = grid
    cols = torch.arange(w, device=tokens.device)
    src_col = (cols[None, :] - rolls.to(tokens.device).long()[:, None]) % w  # [B, w]: new col c takes old c − r
    idx = src_col[:, None, :, None].expand(b, h, w, d)
    return torch.gather(tokens.reshape(b, h, w, d), 2, idx).reshape(b, n, d)


def transfer_tokens(tokens_i: torch.Tensor, tokens_j: torch.Tensor, masks_j: torch.Tensor, rolls: torch.Tensor,
                    grid: tuple[int, int]) -> torch.Tensor:
    """Token-space transfer: roll(tokens_i) where ``masks_j`` ``[B, h, w]`` is set, tokens_j elsewhere.

    A sample with an all-True mask and roll 0 is returned unchanged, so a whole batch (transferred and
    holistic items) goes through one call.
    """
    if tokens_i.shape != tokens_j.shape or tokens_i.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"token shapes {tuple(tokens_i.shape)}, {tuple(tokens_j.shape)} do not fit the grid {grid}")
    keep = masks_j.to(tokens_i.device).bool().reshape(len(tokens_i), -1, 1)
    return torch.where(keep, roll_tokens(tokens_i, rolls, grid), tokens_j)


def transfer_sheet(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                   geometry: PatchGeometry) -> np.ndarray:
    """Contact sheet, one row per sample: x_i | x_j | M_j over x_j (pasted region lit) | result."""
    tiles = []
    for x_i, x_j, mask_j, result in rows:
        pm = pixel_mask(mask_j, geometry)[..., None]
        shown = np.where(pm, np.clip(x_j.astype(np.int16) // 2 + 128, 0, 255), x_j // 3).astype(np.uint8)
        tiles.append([x_i, x_j, shown, result])
    return compose_sheet(tiles, pad=3)
