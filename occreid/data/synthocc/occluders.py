"""Occluders placed in front of the person so that a sampled share of the person is hidden.

The kinds follow Occluded-Duke: objects standing on the ground hide the lower body (boxes, bins, low walls,
parked cars), pillars and other pedestrians hide one side, signs and foliage hang over the upper body. All
surfaces are crops of real photographs; pedestrians come from a pool of passers-by who are never labelled.

Placement is exact rather than guessed: each occluder is drawn once on a *sheet* larger than the image
along one axis, every window of the sheet is a candidate position, and the hidden share of the person for
all positions at once is a single tensor contraction of the person mask with the sliding windows. A position
with the hidden share inside [low, high] and near the sampled target is picked at random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageDraw

from .identity import passerby
from .render import VIEWS, Layer, Pose, render_person
from .scenes import texture

KINDS = ("box", "car", "pillar", "sign", "pedestrian")
KIND_PROBS = (0.25, 0.2, 0.15, 0.1, 0.3)
CAR_COLOURS = ((0.85, 0.85, 0.86), (0.55, 0.56, 0.6), (0.1, 0.1, 0.12), (0.6, 0.08, 0.08), (0.12, 0.22, 0.5),
               (0.14, 0.3, 0.18))
NEAR_TARGET = 0.03  # positions this close to the target share are equally good


@dataclass(frozen=True)
class Figure:
    """Where the occluded person stands in the image (pixels)."""

    cx: float
    top: float
    height: float


@dataclass
class Sheet:
    """An occluder drawn on a canvas that extends the image along ``axis`` (0 rows, 1 columns)."""

    kind: str
    layer: Layer
    axis: int

    def window(self, offset: int, size: tuple[int, int]) -> Layer:
        h, w = size
        rows = slice(offset, offset + h) if self.axis == 0 else slice(0, h)
        cols = slice(offset, offset + w) if self.axis == 1 else slice(0, w)
        return Layer(self.layer.rgb[rows, cols], self.layer.alpha[rows, cols])


def hidden_shares(person: np.ndarray, cover: np.ndarray, axis: int) -> np.ndarray:
    """For every window position of boolean ``cover`` along ``axis``, the share of ``person`` it hides."""
    h, w = person.shape
    windows = sliding_window_view(cover.astype(np.float32), (h, w))
    windows = windows[:, 0] if axis == 0 else windows[0]
    hidden = np.tensordot(windows, person.astype(np.float32), axes=([1, 2], [0, 1]))  # exact pixel counts
    return np.rint(hidden).astype(np.float64) / max(int(person.sum()), 1)


def occlude(rng: np.random.Generator, person_alpha: np.ndarray, figure: Figure, low: float, high: float,
            seed: int) -> tuple[Layer, float, str]:
    """An occluder layer hiding a share in [low, high] of the person (alpha > 0.5), that share, and its kind.

    The kind is sampled; when it cannot reach the range (a thin pillar cannot hide 60%, and in a tiny image
    one pixel row may be more than the range is wide), a box rising from the ground takes its place, with
    its top edge stepped by one row at the exact pixel that hides the target share.
    """
    size = person_alpha.shape
    person = person_alpha > 0.5
    target = float(rng.uniform(low, high))
    kind = KINDS[int(rng.choice(len(KINDS), p=KIND_PROBS))]
    sheet = make_sheet(kind, rng, size, figure, seed)
    shares = hidden_shares(person, sheet.layer.alpha > 0.5, sheet.axis)
    valid = (shares >= low) & (shares <= high)
    if valid.any():
        gap = np.where(valid, np.abs(shares - target), np.inf)
        near = np.flatnonzero(gap <= max(NEAR_TARGET, float(gap.min())))
        offset = int(near[int(rng.integers(len(near)))])
        return sheet.window(offset, size), float(shares[offset]), sheet.kind
    layer, share = exact_box(rng, person, target, low, high)
    return layer, share, "box"


def exact_box(rng: np.random.Generator, person: np.ndarray, target: float, low: float,
              high: float) -> tuple[Layer, float]:
    """A full-width box from the ground hiding exactly k person pixels, k/area in [low, high] nearest the target.

    Person pixels are counted bottom row first, left to right; the box covers every row below the k-th
    pixel's row and that row up to its column.
    """
    h, w = person.shape
    area = int(person.sum())
    lo, hi = math.ceil(low * area), math.floor(high * area)
    if area == 0 or lo > hi or lo < 1:
        raise RuntimeError(f"a person of {area} pixels cannot be hidden by {low}..{high}")  # config forbids it
    k = min(max(round(target * area), lo), hi)
    rows, cols = np.nonzero(person)
    order = np.lexsort((cols, -rows))
    row, col = int(rows[order[k - 1]]), int(cols[order[k - 1]])
    alpha = np.zeros((h, w), np.float32)
    alpha[row + 1:] = 1.0
    alpha[row, :col + 1] = 1.0
    surface = texture(rng, (h, w))
    surface *= np.linspace(0.75, 1.0, h, dtype=np.float32)[::-1, None, None]
    return Layer(np.clip(surface, 0, 1) * alpha[..., None], alpha), k / area


def make_sheet(kind: str, rng: np.random.Generator, size: tuple[int, int], figure: Figure, seed: int) -> Sheet:
    """Draw one occluder of ``kind`` on its sheet."""
    h, w = size
    if kind == "pedestrian":
        other = passerby(seed, int(rng.integers(1 << 30)))
        view = VIEWS[int(rng.integers(len(VIEWS)))]
        pose = Pose(view, bool(rng.random() < 0.5) and view == "side", float(rng.uniform(0.1, 1.0)),
                    float(rng.uniform(-1.0, 1.0)))
        height = figure.height * float(rng.uniform(1.0, 1.2))
        top = figure.top + float(rng.uniform(-0.05, 0.12)) * h
        return Sheet(kind, render_person(other, pose, (h, 3 * w), 1.5 * w, top, height), axis=1)
    if kind == "pillar":
        return Sheet(kind, _pillar(rng, h, w), axis=1)
    if kind == "sign":
        return Sheet(kind, _hanging(rng, h, w, figure), axis=0)
    if kind == "car":
        return Sheet(kind, _car(rng, h, w, figure), axis=0)
    return Sheet("box", _box(rng, h, w, figure), axis=0)


def _span(rng: np.random.Generator, cx: float, w: int, scale: tuple[float, float]) -> tuple[int, int]:
    """Columns [x0, x1) of an object of width ``scale`` × w that covers the person's centre column."""
    width = float(rng.uniform(*scale)) * w
    x0 = float(rng.uniform(cx + 0.15 * w - width, cx - 0.15 * w))
    return int(round(x0)), int(round(x0 + width))


def _paste(rgb: np.ndarray, alpha: np.ndarray, rows: slice, x0: int, x1: int, surface: np.ndarray) -> None:
    """Write ``surface`` (covering columns x0..x1, maybe beyond the sheet) into rows ``rows`` of the sheet."""
    lo, hi = max(x0, 0), min(x1, rgb.shape[1])
    if hi > lo:
        rgb[rows, lo:hi] = surface[:, lo - x0:hi - x0]
        alpha[rows, lo:hi] = 1.0


def _box(rng: np.random.Generator, h: int, w: int, figure: Figure) -> Layer:
    """A crate, bin or low wall standing on the ground, its top edge at sheet row h."""
    x0, x1 = _span(rng, figure.cx, w, (0.7, 1.3))
    surface = texture(rng, (h, x1 - x0))
    surface[:2] *= 1.35  # lit top edge
    surface[:, :2] *= 0.6
    surface[:, -2:] *= 0.6
    surface *= np.linspace(1.0, 0.75, h, dtype=np.float32)[:, None, None]
    rgb, alpha = np.zeros((2 * h, w, 3), np.float32), np.zeros((2 * h, w), np.float32)
    _paste(rgb, alpha, slice(h, 2 * h), x0, x1, np.clip(surface, 0, 1))
    return Layer(rgb * alpha[..., None], alpha)


def _pillar(rng: np.random.Generator, h: int, w: int) -> Layer:
    """A pillar, pole or tree trunk over the full height, in the middle of a 3w-wide sheet."""
    width = max(int(round(float(rng.uniform(0.2, 0.45)) * w)), 2)
    x0 = int(round(1.5 * w - width / 2))
    surface = texture(rng, (h, width), ("brick", "gravel", "moon", "camera", "coins", "grass", "coffee"))
    across = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    surface *= (1.0 - 0.45 * across**2)[None, :, None]
    rgb, alpha = np.zeros((h, 3 * w, 3), np.float32), np.zeros((h, 3 * w), np.float32)
    _paste(rgb, alpha, slice(0, h), x0, x0 + width, np.clip(surface, 0, 1))
    return Layer(rgb * alpha[..., None], alpha)


def _hanging(rng: np.random.Generator, h: int, w: int, figure: Figure) -> Layer:
    """A sign board or foliage hanging from above; its bottom edge at sheet row h."""
    x0, x1 = _span(rng, figure.cx, w, (0.7, 1.2))
    foliage = bool(rng.random() < 0.4)
    names = ("grass",) if foliage else ("page", "text", "coins", "astronaut", "rocket", "coffee")
    surface = texture(rng, (h, x1 - x0), names)
    if foliage:
        surface *= np.asarray((0.55, 0.95, 0.45), np.float32)
    else:
        surface[-2:] *= 0.45  # frame of the board
        surface[:, :2] *= 0.45
        surface[:, -2:] *= 0.45
    rgb, alpha = np.zeros((2 * h, w, 3), np.float32), np.zeros((2 * h, w), np.float32)
    _paste(rgb, alpha, slice(0, h), x0, x1, np.clip(surface, 0, 1))
    if foliage:  # ragged lower edge: leaves hang down by a random, smooth amount per column
        drop = np.cumsum(rng.normal(0.0, 0.03 * h, w)).astype(np.float32)
        drop = np.abs(drop - drop.mean()) + 0.02 * h
        rows = np.arange(2 * h, dtype=np.float32)[:, None]
        cut = (rows >= h - drop[None, :]) & (rows < h)
        alpha[cut] = 0.0
    return Layer(rgb * alpha[..., None], alpha)


def _car(rng: np.random.Generator, h: int, w: int, figure: Figure) -> Layer:
    """A parked car seen from the side: a body to the ground and a glazed cabin; its roof at sheet row h."""
    length = float(rng.uniform(2.0, 3.5)) * w
    left = float(rng.uniform(figure.cx + 0.2 * w - length, figure.cx - 0.2 * w))
    cabin_h, roof0, roof1 = 0.22 * h, left + 0.3 * length, left + 0.68 * length
    labels = Image.new("L", (w, 2 * h), 0)
    draw = ImageDraw.Draw(labels)
    body_top = h + cabin_h
    draw.polygon([(roof0 - 0.12 * length, body_top + 1), (roof0, h), (roof1, h), (roof1 + 0.1 * length, body_top + 1)],
                 fill=1)
    draw.polygon([(roof0 - 0.09 * length, body_top - 1), (roof0 + 0.02 * length, h + 3),
                  (roof1 - 0.02 * length, h + 3), (roof1 + 0.07 * length, body_top - 1)], fill=2)
    draw.rounded_rectangle([left, body_top, left + length, 2 * h + 10], radius=0.08 * h, fill=1)
    draw.rectangle([left, body_top + 0.18 * h, left + length, body_top + 0.18 * h + 1], fill=3)
    lab = np.asarray(labels)
    colour = np.asarray(CAR_COLOURS[int(rng.integers(len(CAR_COLOURS)))], np.float32)
    paint = colour * (0.75 + 0.5 * texture(rng, (2 * h, w), ("moon", "gravel")).mean(-1, keepdims=True))
    glass = texture(rng, (2 * h, w), ("rocket", "camera", "coffee")) * np.asarray((0.45, 0.5, 0.6), np.float32)
    rgb = np.where((lab == 2)[..., None], glass, paint)
    rgb = np.where((lab == 3)[..., None], 0.08, rgb).astype(np.float32)
    alpha = (lab > 0).astype(np.float32)
    return Layer(np.clip(rgb, 0, 1) * alpha[..., None], alpha)
