"""The contact sheet of an occluder library: objects on a checkerboard, so the mask's edge is visible.

Each cell shows one object fitted (aspect kept) and centred; the checkerboard shows through where the alpha
is 0, so one glance tells whether the masks follow object outlines or cut out noise.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

PAD = 2
SQUARE = 8  # checkerboard square, pixels
LIGHT, DARK = 205, 150


def checkerboard(size: tuple[int, int]) -> Image.Image:
    """A grey checkerboard of ``size`` = (w, h)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    board = np.where(((yy // SQUARE) + (xx // SQUARE)) % 2 == 0, LIGHT, DARK).astype(np.uint8)
    return Image.fromarray(np.repeat(board[..., None], 3, axis=2))


def fit_cell(obj: Image.Image, cell: int) -> Image.Image:
    """``obj`` (RGBA) scaled to fit a ``cell``-pixel square (aspect kept), composited over a checkerboard."""
    scale = cell / max(obj.size)
    size = (max(1, round(obj.width * scale)), max(1, round(obj.height * scale)))
    tile = checkerboard((cell, cell))
    tile.paste(obj.resize(size, Image.BILINEAR), ((cell - size[0]) // 2, (cell - size[1]) // 2),
               obj.resize(size, Image.BILINEAR))
    return tile


def contact_sheet(objects: Sequence[Image.Image], cell: int = 64, per_row: int = 8) -> Image.Image:
    """The objects in rows of ``per_row`` cells on white (a 1×1 white image when there are none)."""
    if not objects:
        return Image.new("RGB", (1, 1), (255, 255, 255))
    cols = min(per_row, len(objects))
    rows = -(-len(objects) // cols)
    sheet = Image.new("RGB", (PAD + cols * (cell + PAD), PAD + rows * (cell + PAD)), (255, 255, 255))
    for i, obj in enumerate(objects):
        r, c = divmod(i, cols)
        sheet.paste(fit_cell(obj, cell), (PAD + c * (cell + PAD), PAD + r * (cell + PAD)))
    return sheet


def evenly_spaced(n: int, k: int) -> list[int]:
    """``k`` indices spread over ``range(n)`` (all when k >= n): the sheet's deterministic sample."""
    if k >= n:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / max(k - 1, 1))) for i in range(k)})
