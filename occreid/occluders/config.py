"""The params schema of the ``occluders`` section: where the photographs come from, which mask backend cuts
the objects out, and which objects are kept.

DPEFormer's realistic occlusion augmentation (ROA) pastes objects that SAM segmented from natural images
(the paper: 9,913 masks from the first 100 images of SA-1B) onto training images. The ``occluders`` stage
builds that object library once per training dataset; this section (or a dataset's own
``dataset_stages.<dataset>.occluders``) is its whole configuration:

- ``source``: a folder of photographs (e.g. an SA-1B subset; sorted, the first ``max_images``), or null for
  the photographs scikit-image bundles (no download).
- ``backend``: ``sam`` (``segment_anything``'s automatic mask generator; ``sam.model_type`` vit_b / vit_l /
  vit_h with a checkpoint from a local file or a URL pinned by sha256, or ``tiny``: a randomly initialised
  SAM for tests) or ``classical`` (graph-based segmentation, weight-free: the CPU demo's, since a random
  SAM yields nothing object-like — docs/DPEFORMER.md has the measurement).
- ``filters``: area / aspect / fill bounds, per-image and total caps, and the size objects are stored at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from occreid.errors import OccreidError

SAM_TYPES = ("tiny", "vit_b", "vit_l", "vit_h")


@dataclass
class SamConfig:
    """SAM's model, weights and automatic-mask-generator settings (``occluders.sam``).

    Weights: ``checkpoint`` (a local ``.pth``) wins; else the file is downloaded from ``urls`` (empty: Meta's
    official URL of ``model_type``) into ``cache_dir`` and checked against ``sha256`` (an unknown hash is
    printed and accepted only with ``accept_unknown_hash``). ``tiny`` needs no weights: it is built at random
    (seeded by ``occluders.seed``), and yields masks only with the quality thresholds at 0.
    """

    model_type: Literal["tiny", "vit_b", "vit_l", "vit_h"] = "vit_h"
    checkpoint: str | None = None
    urls: list[str] = field(default_factory=list)
    sha256: str | None = None
    accept_unknown_hash: bool = False
    cache_dir: str | None = None  # null: $OCCREID_CACHE/sam, else ~/.cache/occreid/sam
    # segment_anything.SamAutomaticMaskGenerator (its defaults)
    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0

    def __post_init__(self) -> None:
        if self.points_per_side < 1 or self.points_per_batch < 1 or self.crop_n_layers < 0:
            raise OccreidError("occluders.sam: points_per_side >= 1, points_per_batch >= 1 and crop_n_layers >= 0 "
                               "are needed")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OccreidError(f"occluders.sam.{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass
class ClassicalConfig:
    """Weight-free segmentation (``occluders.classical``): scikit-image's Felzenszwalb graph segmentation
    (``scale`` larger → larger regions) or SLIC superpixels (``n_segments``, ``compactness``)."""

    method: Literal["felzenszwalb", "slic"] = "felzenszwalb"
    scale: float = 200.0
    sigma: float = 0.8
    min_size: int = 100  # pixels: Felzenszwalb merges smaller regions
    n_segments: int = 60
    compactness: float = 10.0

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.sigma < 0 or self.min_size < 1 or self.n_segments < 2 or self.compactness <= 0:
            raise OccreidError("occluders.classical: scale > 0, sigma >= 0, min_size >= 1, n_segments >= 2 and "
                               "compactness > 0 are needed")


@dataclass
class FilterConfig:
    """Which masks become library objects (``occluders.filters``). Areas are fractions of the source image
    (after ``image_max_side``); ``aspect`` is the bounding box's height / width; ``fill`` the mask's share of
    its bounding box (thin, stringy masks make poor occluders)."""

    min_area: float = 0.005
    max_area: float = 0.3
    aspect: list[float] = field(default_factory=lambda: [0.2, 5.0])
    min_fill: float = 0.3
    min_side: int = 8  # pixels, both sides of the bounding box
    exclude_border: bool = True  # drop masks touching the image border (mostly background, or cut objects)
    max_per_image: int | None = 100  # the highest-scoring masks of each image
    max_objects: int | None = None  # total cap: a seeded sample over all images
    object_max_side: int | None = 256  # stored objects are downscaled to this longest side (null: as cut)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_area <= self.max_area <= 1.0:
            raise OccreidError(f"occluders.filters: 0 <= min_area <= max_area <= 1 is needed, got "
                               f"{self.min_area}, {self.max_area}")
        if len(self.aspect) != 2 or not 0 < self.aspect[0] <= self.aspect[1]:
            raise OccreidError(f"occluders.filters.aspect must be [lo, hi] with 0 < lo <= hi, got {self.aspect}")
        if not 0.0 <= self.min_fill <= 1.0 or self.min_side < 1:
            raise OccreidError("occluders.filters: min_fill in [0, 1] and min_side >= 1 are needed")
        for name in ("max_per_image", "max_objects", "object_max_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OccreidError(f"occluders.filters.{name} must be >= 1 or null, got {value}")


@dataclass
class OccludersConfig:
    """Section ``occluders`` of params.yaml, or ``dataset_stages.<dataset>.occluders`` (the ``occluders`` stage:
    the ROA object library)."""

    source: str | None = None  # folder of photographs; null: scikit-image's bundled photographs
    max_images: int | None = None  # the first N images (sorted by path); the paper: 100 of SA-1B
    image_max_side: int | None = 1024  # photographs are downscaled to this longest side before segmenting
    backend: Literal["sam", "classical"] = "sam"
    sam: SamConfig = field(default_factory=SamConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    seed: int = 0  # the tiny SAM's initialisation and the max_objects sample
    sheet_objects: int = 64  # objects on contact_sheet.png
    sheet_cell: int = 64  # pixels per contact-sheet cell

    def __post_init__(self) -> None:
        for name in ("max_images", "image_max_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OccreidError(f"occluders.{name} must be >= 1 or null, got {value}")
        if self.seed < 0 or self.sheet_objects < 0 or self.sheet_cell < 8:
            raise OccreidError("occluders: seed >= 0, sheet_objects >= 0 and sheet_cell >= 8 are needed")
