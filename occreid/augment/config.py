"""Params schemas of saliency-guided patch transfer: building partner sets (``spt``), using them (``TransferConfig``).

Two dataclasses because two different things depend on them: :class:`SptConfig` is the ``spt`` section,
read by the ``spt_sets`` stage that builds the partner table once per dataset; :class:`TransferConfig` is
a training-time switch set a method embeds in its own config (probability, pixel or token space, the
baseline occlusion synthesisers), so changing it re-trains without rebuilding the partner table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from occreid.errors import OccreidError


@dataclass
class SptConfig:
    """Section ``spt`` (stage ``spt_sets``): binarisation, OIoU admission and the partner table's size.

    ``alpha1`` (OIoU threshold): partner j is accepted for source i when some admitted roll r gives
    OIoU_r(i, j) = |roll(M_i, r) ∩ M_j| / |M_j| >= alpha1, i.e. i's (shifted) person covers at least alpha1 of
    the region that will be pasted (j's person region). ``alpha2`` (mask-rolling threshold): roll r is
    admitted for i when the rolled mask still overlaps its original by |roll(M_i, r) ∩ M_i| / |M_i| >= alpha2
    (r = 0 always), which keeps shifts small relative to the person's width; ``max_roll`` bounds |r| in patch
    columns (0 = no rolling, like SPT's acceptance on the un-rolled score).
    """

    threshold: float = 0.5  # saliency >= threshold ⇒ person (identity set)
    alpha1: float = 0.7
    alpha2: float = 0.5
    max_roll: int = 2
    candidates: int = 8  # partners kept per image
    prefer_other_ids: bool = True  # fill the table with other identities first, the same identity last
    seed: int = 0
    chunk_size: int = 256  # source rows per OIoU block: memory ~ chunk_size × N × 11 bytes (Occ-Duke: 44 MB)
    sheet_samples: int = 8  # rows of transfer_sheet.png

    def __post_init__(self) -> None:
        for name in ("threshold", "alpha1", "alpha2"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OccreidError(f"spt.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_roll < 0 or self.candidates < 1 or self.chunk_size < 1 or self.sheet_samples < 0:
            raise OccreidError("spt: max_roll >= 0, candidates >= 1, chunk_size >= 1, sheet_samples >= 0 are needed")


@dataclass
class CutPasteConfig:
    """Box sampling of the cut-and-paste and random-erasing baselines (areas are fractions of the image)."""

    area: list[float] = field(default_factory=lambda: [0.1, 0.4])
    aspect: list[float] = field(default_factory=lambda: [0.3, 3.3])  # height / width, drawn log-uniformly
    from_border: bool = True  # cut-and-paste boxes touch a random image side, as real occluders enter the frame

    def __post_init__(self) -> None:
        lo, hi = self.area if len(self.area) == 2 else (-1, -1)
        if not 0 < lo <= hi <= 1:
            raise OccreidError(f"area must be [lo, hi] with 0 < lo <= hi <= 1, got {self.area}")
        lo, hi = self.aspect if len(self.aspect) == 2 else (-1, -1)
        if not 0 < lo <= hi:
            raise OccreidError(f"aspect must be [lo, hi] with 0 < lo <= hi, got {self.aspect}")


@dataclass
class TransferConfig:
    """How training makes the occluded views of occlusion-aware pairs (embed in a method's config).

    ``mode``: ``spt`` (saliency-guided patch transfer from the partner table), ``cut_paste`` (a box of a
    random other identity's image pasted in), ``random_erasing`` (a box of N(0, 1) noise in the normalised
    image), ``none`` (the pair's second view is just another augmentation of the same image).
    ``p``: probability that a pair slot holds an occluded view (else a second holistic view).
    ``pairs_per_id``: per identity and batch, that many of its K images get a paired view appended, so a
    batch holds P × (K + pairs_per_id) images. ``space``: ``pixel`` mixes images before augmentation;
    ``token`` hands both images and the mask to the model, which mixes patch embeddings
    (:func:`occreid.augment.transfer.transfer_tokens`).
    """

    mode: Literal["spt", "cut_paste", "random_erasing", "none"] = "spt"
    p: float = 0.5
    pairs_per_id: int = 2
    space: Literal["pixel", "token"] = "pixel"
    boxes: CutPasteConfig = field(default_factory=CutPasteConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise OccreidError(f"transfer.p must be in [0, 1], got {self.p}")
        if self.pairs_per_id < 0:
            raise OccreidError(f"transfer.pairs_per_id must be >= 0, got {self.pairs_per_id}")
        if self.space == "token" and self.mode != "spt":
            raise OccreidError(f"transfer.space 'token' exists for mode 'spt' only, got mode '{self.mode}'",
                               fix="use space: pixel")
