"""The dataset registry: each name's layout, id/camera bounds, published sizes and occlusion facts.

``create_dataset(name, root)`` parses a *prepared* folder (see :mod:`occreid.data.prepare`) into
:class:`~occreid.data.records.Splits`: records sorted by path, train pids relabelled over the sorted unique
pids, junk (pid -1) dropped, cameras 0-based, occlusion facts attached, sizes checked against the
published ones. Each dataset is data (a :class:`DatasetSpec`), the parsing lives in :mod:`.parsers`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from occreid.data.parsers.common import DatasetSpec, ExpectedCounts, verify_images as _verify
from occreid.data.parsers.counts import check_split_counts
from occreid.data.parsers.market_layout import parse_market_layout
from occreid.data.parsers.msmt17 import parse_msmt17
from occreid.data.records import Splits
from occreid.registry import Registry

log = logging.getLogger(__name__)

DATASETS: Registry[DatasetSpec] = Registry("dataset")

_SPECS = [
    DatasetSpec(
        name="market1501", title="Market-1501", layout="market", pid_range=(0, 1501), cam_range=(1, 6),
        expected=ExpectedCounts(images={"train": 12936, "query": 3368, "gallery": 19732},
                                ids={"train": 751, "query": 750, "gallery": 751}),
    ),
    DatasetSpec(
        name="dukemtmc", title="DukeMTMC-reID", layout="market", pid_range=(0, 7140), cam_range=(1, 8),
        expected=ExpectedCounts(images={"train": 16522, "query": 2228, "gallery": 17661},
                                ids={"train": 702, "query": 702, "gallery": 1110}),
    ),
    DatasetSpec(
        name="occluded_duke", title="Occluded-Duke", layout="market", pid_range=(0, 7140), cam_range=(1, 8),
        expected=ExpectedCounts(images={"train": 15618, "query": 2210, "gallery": 17661},
                                ids={"train": 702, "query": 519, "gallery": 1110}),
        occluded_by_split={"query": True},
    ),
    DatasetSpec(
        # Arranged by prepare_data as the reference does: occluded images -> query c1, whole-body -> gallery c3.
        name="occluded_reid", title="Occluded-REID", layout="market", pid_range=(0, 200), cam_range=(1, 3),
        expected=ExpectedCounts(images={"query": 1000, "gallery": 1000}, ids={"query": 200, "gallery": 200}),
        occluded_by_split={"query": True, "gallery": False}, has_train=False,
    ),
    DatasetSpec(
        name="msmt17", title="MSMT17", layout="msmt17", pid_range=(0, 3059), cam_range=(1, 15),
        expected=ExpectedCounts(images={"train": 32621, "query": 11659, "gallery": 82161},
                                ids={"train": 1041, "query": 3060, "gallery": 3060}),
    ),
    DatasetSpec(
        # Generated: its size is whatever its config asks for, so there is no published count.
        name="synthocc", title="synthocc", layout="market", pid_range=(0, 9999), cam_range=(1, 9),
    ),
]
for _spec in _SPECS:
    DATASETS.register(_spec.name)(_spec)

_PARSERS = {"market": parse_market_layout, "msmt17": parse_msmt17}


def create_dataset(
    name: str,
    root: str | Path,
    *,
    check_counts: bool = True,
    verify_images: bool = False,
    expected: ExpectedCounts | None = None,
) -> Splits:
    """Parse the prepared folder ``root`` of dataset ``name``.

    ``check_counts`` compares split sizes with the published ones (``expected`` overrides them, e.g. for a
    deliberate subset); ``verify_images`` decodes every image with PIL (slow; catches corrupt files early).
    """
    spec = DATASETS.get(name)
    root = Path(root)
    splits, files = _PARSERS[spec.layout](spec, root)
    want = expected if expected is not None else spec.expected
    if check_counts and want is not None:
        check_split_counts(name, root, files, splits, want)
    if verify_images:
        for split in ("train", "query", "gallery"):
            _verify(getattr(splits, split), f"{name}/{split}")
    log.info("%s from %s: %s", name, root, splits.summary())
    return splits
