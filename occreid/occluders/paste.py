"""Realistic occlusion augmentation (DPEFormer's ROA, Algorithm 1): paste a library object onto an image.

The paper's rule, for an image of ``W × H`` and a randomly chosen object whose box is ``h_o × w_o``:
draw an area ``A ~ U(1/2, 3/4) · W · H`` (the object's *box*; the mask covers less). A tall object
(``h_o / w_o > 2``) is stretched to the full height and ``A / H`` wide; any other to the full width and
``A / W`` high. It is flipped horizontally at random and put at one of three positions, ``(0, 0)``,
``(0, H − h)`` or ``(W − w, 0)`` — so tall objects stand at the left or right edge and the others lie along
the top or bottom. The reference code (``model/SAM.py``) differs in two ways, offered as switches: it
always flips (``flip_p: 1``) and picks one of the four corners (``positions: corners``); it applies the
augmentation with probability 0.5 (``p``). ``shape: box`` pastes the object's whole bounding box from its
photograph instead of the masked object: the paper's Cut&Paste comparison "with the same object instances"
(Table X). Random erasing, the other baseline, is timm's (``train.transforms.random_erasing_p``).

Compositing is exact: every output pixel is ``round(image · (1 − a) + object · a)`` with ``a = alpha / 255``
of the rendered object (in integers: ``(image · (255 − α) + object · α + 127) // 255``), so with hard edges
(the default: the resized mask thresholded at 1/2, as both the paper and the code paste a binary mask) each
pixel is exactly the image's or the object's. Randomness comes from the global ``torch`` generator, which the
engine seeds per run and the loader per worker and epoch, so an augmented epoch is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from PIL import Image

from occreid.errors import OccreidError

from .library import OccluderLibrary


@dataclass
class PasteConfig:
    """How an object is pasted (a method embeds this in its config; see the module docstring)."""

    p: float = 0.5  # probability that an image is occluded (the reference code's EPSILON)
    area: list[float] = field(default_factory=lambda: [0.5, 0.75])  # the pasted box, fraction of the image
    tall_ratio: float = 2.0  # box height / width above which an object spans the full height
    positions: Literal["paper", "corners"] = "paper"  # paper: (0,0), (0,H-h), (W-w,0); corners: all four
    flip_p: float = 0.5  # horizontal flip probability (the code: 1.0, always)
    shape: Literal["mask", "box"] = "mask"  # mask: ROA; box: Cut&Paste of the same instances
    soft_edges: bool = False  # keep the resized mask's anti-aliased edge instead of thresholding it

    def __post_init__(self) -> None:
        for name in ("p", "flip_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OccreidError(f"paste.{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.area) != 2 or not 0.0 < self.area[0] <= self.area[1] <= 1.0:
            raise OccreidError(f"paste.area must be [lo, hi] with 0 < lo <= hi <= 1, got {self.area}")
        if self.tall_ratio <= 0:
            raise OccreidError(f"paste.tall_ratio must be > 0, got {self.tall_ratio}")


@dataclass(frozen=True)
class Placement:
    """One paste: object ``index`` resized to ``width × height``, flipped or not, with its top-left at (x, y)."""

    index: int
    x: int
    y: int
    width: int
    height: int
    flip: bool


def positions(size: tuple[int, int], box: tuple[int, int], kind: str) -> list[tuple[int, int]]:
    """The (x, y) a ``box`` = (w, h) may take in an image of ``size`` = (W, H) (Algorithm 1 line 16, or the
    reference code's four corners)."""
    (W, H), (w, h) = size, box
    if kind == "paper":
        return [(0, 0), (0, H - h), (W - w, 0)]
    return [(0, 0), (W - w, 0), (0, H - h), (W - w, H - h)]


def composite(image: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> np.ndarray:
    """``image`` [H, W, 3] uint8 with ``rgb`` [h, w, 3] blended in at (x, y) by ``alpha`` [h, w] uint8:
    ``(image · (255 − α) + rgb · α + 127) // 255`` (= round(image · (1 − a) + rgb · a), never a tie)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    h, w = alpha.shape
    region = out[y:y + h, x:x + w].astype(np.uint32)
    a = alpha.astype(np.uint32)[..., None]
    out[y:y + h, x:x + w] = ((region * (255 - a) + rgb.astype(np.uint32) * a + 127) // 255).astype(np.uint8)
    return out


class OccluderPaste:
    """A transform PIL RGB image → PIL RGB image: with probability ``cfg.p`` one library object is pasted
    (:meth:`sample` draws the placement, :meth:`render` the resized object, :meth:`apply` composites)."""

    def __init__(self, library: OccluderLibrary, cfg: PasteConfig | None = None):
        if len(library) == 0:
            raise OccreidError("the occluder library is empty", path=getattr(library, "folder", None),
                               fix="loosen occluders.filters or add source images, then rebuild")
        self.library = library
        self.cfg = cfg or PasteConfig()

    def __call__(self, image: Image.Image) -> Image.Image:
        p = self.cfg.p
        if p <= 0.0 or (p < 1.0 and float(torch.rand(())) >= p):
            return image
        return self.apply(image, self.sample(image.size))

    def sample(self, size: tuple[int, int]) -> Placement:
        """A placement for an image of ``size`` = (W, H), drawn from the global torch generator."""
        W, H = size
        index = int(torch.randint(len(self.library), ()))
        lo, hi = self.cfg.area
        share = lo + (hi - lo) * float(torch.rand(()))  # random area / image area
        obj_h, obj_w = self.library.size(index)
        if obj_h / obj_w > self.cfg.tall_ratio:
            width, height = min(W, max(1, round(share * W))), H
        else:
            width, height = W, min(H, max(1, round(share * H)))
        flip = float(torch.rand(())) < self.cfg.flip_p
        choices = positions((W, H), (width, height), self.cfg.positions)
        x, y = choices[int(torch.randint(len(choices), ()))]
        return Placement(index, x, y, width, height, flip)

    def render(self, placement: Placement) -> tuple[np.ndarray, np.ndarray]:
        """The object of ``placement`` as pasted: RGB [h, w, 3] and alpha [h, w] uint8 (resized, flipped;
        the alpha hard 0/255 unless ``soft_edges``; all 255 for ``shape: box``)."""
        obj = self.library.object(placement.index)
        size = (placement.width, placement.height)
        rgb = np.asarray(obj.convert("RGB").resize(size, Image.BILINEAR))
        if self.cfg.shape == "box":
            alpha = np.full((placement.height, placement.width), 255, np.uint8)
        else:
            alpha = np.asarray(obj.getchannel("A").resize(size, Image.BILINEAR))
            if not self.cfg.soft_edges:
                alpha = np.where(alpha >= 128, 255, 0).astype(np.uint8)
        if placement.flip:
            rgb, alpha = rgb[:, ::-1], alpha[:, ::-1]
        return np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)

    def apply(self, image: Image.Image, placement: Placement) -> Image.Image:
        """``image`` with the object of ``placement`` composited in (see :func:`composite`)."""
        rgb, alpha = self.render(placement)
        out = composite(np.asarray(image.convert("RGB")), rgb, alpha, placement.x, placement.y)
        return Image.fromarray(out)
