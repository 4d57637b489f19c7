"""The knobs of the synthetic occluded re-ID generator, validated when the config is built.

:class:`SynthOccConfig` is also the schema of the ``synthocc`` params section (``stages.params.from_dict``
builds it), so every field has a default and a flat scalar type. Values are checked in ``__post_init__``:
a bad value raises :class:`~occreid.errors.OccreidError` naming the field, the allowed range and the fix,
before any file is written.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from occreid.errors import OccreidError

MAX_PID = 9999  # Market-1501 file names hold the person id in 4 digits; 0 is reserved (Market "distractor")
MAX_CAMERAS = 9  # one digit after "c" in Market-1501 file names
MIN_OCCLUSION_SPAN = 0.05  # occlusion is realised in pixel rows/columns; a narrower range cannot be hit


@dataclass
class SynthOccConfig:
    """Size, splits, occlusion and image settings of a synthocc dataset.

    ``images_per_id`` is the TOTAL number of images of one identity over all its cameras. For a test identity,
    ``queries_per_id`` of them (all from one camera) go to ``query/`` and the rest to ``bounding_box_test/``
    (from the identity's other cameras). The ``*_occluded_share`` fields give the exact share (rounded to whole
    images) of each split whose person is hidden by an occluder; an occluded image hides between
    ``occlusion_min`` and ``occlusion_max`` of the person's pixels. The contact sheet shows
    ``min(contact_sheet_ids, num_test_ids)`` test identities, each with its queries and up to
    ``contact_sheet_gallery`` gallery images.
    """

    seed: int = 0
    num_train_ids: int = 60
    num_test_ids: int = 60
    images_per_id: int = 16
    queries_per_id: int = 2
    num_cameras: int = 6
    height: int = 128
    width: int = 64
    train_occluded_share: float = 0.3
    query_occluded_share: float = 0.9
    gallery_occluded_share: float = 0.1
    occlusion_min: float = 0.2
    occlusion_max: float = 0.6
    jpeg_quality: int = 95
    contact_sheet_ids: int = 8
    contact_sheet_gallery: int = 5

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        _check_range("seed", self.seed, 0, 2**63 - 1, "use a non-negative integer seed")
        _check_range("num_train_ids", self.num_train_ids, 1, MAX_PID - 1, "use at least one training identity")
        _check_range("num_test_ids", self.num_test_ids, 1, MAX_PID - 1, "use at least one test identity")
        if self.num_train_ids + self.num_test_ids > MAX_PID:
            raise _error(
                f"num_train_ids + num_test_ids = {self.num_train_ids + self.num_test_ids} exceeds {MAX_PID}",
                "Market-1501 file names hold the person id in 4 digits; lower the number of identities",
            )
        _check_range("queries_per_id", self.queries_per_id, 1, 99, "use 1 to 99 query images per test identity")
        _check_range("images_per_id", self.images_per_id, 2, 9999, "use 2 to 9999 images per identity")
        if self.images_per_id <= self.queries_per_id:
            raise _error(
                f"images_per_id ({self.images_per_id}) must exceed queries_per_id ({self.queries_per_id})",
                "every test identity needs at least one gallery image: raise images_per_id or lower queries_per_id",
            )
        _check_range("num_cameras", self.num_cameras, 2, MAX_CAMERAS,
                     f"use 2 to {MAX_CAMERAS} cameras (query and gallery come from different cameras)")
        _check_range("height", self.height, 32, 1024, "use an image height of 32 to 1024 pixels")
        _check_range("width", self.width, 16, 1024, "use an image width of 16 to 1024 pixels")
        for name in ("train_occluded_share", "query_occluded_share", "gallery_occluded_share"):
            _check_range(name, getattr(self, name), 0.0, 1.0, "use a share between 0 and 1")
        _check_range("occlusion_min", self.occlusion_min, 0.01, 0.9, "hide between 1% and 90% of the person")
        _check_range("occlusion_max", self.occlusion_max, 0.06, 0.95, "hide at most 95% of the person")
        if self.occlusion_max - self.occlusion_min < MIN_OCCLUSION_SPAN - 1e-9:
            raise _error(
                f"occlusion range [{self.occlusion_min}, {self.occlusion_max}] is narrower than {MIN_OCCLUSION_SPAN}",
                f"set occlusion_max >= occlusion_min + {MIN_OCCLUSION_SPAN} (occlusion is placed pixel row by row)",
            )
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100, "use a JPEG quality from 1 to 100")
        _check_range("contact_sheet_ids", self.contact_sheet_ids, 1, 1000, "show 1 to 1000 identities")
        _check_range("contact_sheet_gallery", self.contact_sheet_gallery, 1, 100, "show 1 to 100 gallery images")

    @property
    def gallery_per_id(self) -> int:
        """Gallery images of one test identity."""
        return self.images_per_id - self.queries_per_id

    def split_sizes(self) -> dict[str, int]:
        """Number of images in each split, as the generator writes them."""
        return {
            "train": self.num_train_ids * self.images_per_id,
            "query": self.num_test_ids * self.queries_per_id,
            "gallery": self.num_test_ids * self.gallery_per_id,
        }

    def occluded_share(self, split: str) -> float:
        return {"train": self.train_occluded_share, "query": self.query_occluded_share,
                "gallery": self.gallery_occluded_share}[split]


def _error(problem: str, fix: str) -> OccreidError:
    return OccreidError(f"synthocc config: {problem}", fix=fix)


def _check_type(name: str, value: object, annotation: object) -> None:
    """Fields are annotated with the strings 'int' or 'float' (postponed annotations)."""
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # float: an int is acceptable too
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise _error(f"'{name}' must be {kind}, got {value!r} ({type(value).__name__})",
                     f"give '{name}' a plain {kind} value")


def _check_range(name: str, value: float, low: float, high: float, fix: str) -> None:
    if not low <= value <= high:
        raise _error(f"'{name}' = {value!r} is outside [{low}, {high}]", fix)
