"""Published split sizes, checked after parsing: an incomplete download should stop the run, not train.

A missing quarter of the gallery still trains and evaluates — to a wrong number nobody notices. So the sizes
are compared with the published ones and a mismatch is an error saying which split, expected against found,
the probable cause, and how to switch the check off for deliberate subsets.
"""

from __future__ import annotations

from pathlib import Path

from occreid.data.parsers.common import ExpectedCounts
from occreid.data.records import Splits
from occreid.errors import OccreidError


def check_split_counts(
    name: str, root: Path, files: dict[str, int], splits: Splits, expected: ExpectedCounts
) -> None:
    """Compare ``files`` (images per split, as published: junk included) and the ids of ``splits`` with
    ``expected``; raise one error listing every mismatch."""
    found_ids = {
        "train": len({r.pid for r in splits.train}),
        "query": len({r.pid for r in splits.query}),
        "gallery": len({r.pid for r in splits.gallery}),
    }
    problems = []
    for split, want in expected.images.items():
        got = files.get(split, 0)
        if got != want:
            problems.append(f"split '{split}': expected {want:,} images, found {got:,}")
    for split, want in expected.ids.items():
        got = found_ids[split]
        if got != want:
            problems.append(f"split '{split}': expected {want:,} identities, found {got:,}")
    if not problems:
        return
    short = any(files.get(s, 0) < n for s, n in expected.images.items())
    cause = (
        "an incomplete download or extraction (files missing)"
        if short
        else "a different release of the dataset, or files from elsewhere mixed in"
    )
    raise OccreidError(
        f"{name} does not have its published split sizes:\n    " + "\n    ".join(problems)
        + f"\n  probable cause: {cause}",
        path=root,
        fix=f"delete {root} and its raw archive and re-run `python -m stages.prepare_data --dataset {name}`; "
        f"if this subset is deliberate, disable the check with check_counts=False "
        f"(params: datasets.{name}.check_counts: false)",
    )
