"""Published numbers beside ours: ``paper_results.yaml`` (shipped with the package) and the comparison table a
``tables`` entry with ``paper: true`` adds (``<name>_paper.md`` / ``.csv``).

Why: a researcher's first question of a paper preset's run is "how far from the paper?". The comparison names the
paper's source for every number and marks the ones not read off the paper text, so a recalled number is never
mistaken for a checked one. Rows whose (method, evaluated dataset) has no published number show a dash — the
synthetic demo rows always do.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

from occreid.errors import OccreidError
from occreid.reports.collect import ExperimentMetrics

METRICS = ("R1", "mAP")


@dataclass(frozen=True)
class Published:
    """One published result: percentages (None where the paper gives none) and where it stands."""

    values: dict[str, float | None]
    source: str
    checked: bool


@lru_cache(maxsize=1)
def paper_results() -> dict[str, dict[str, Published]]:
    """method → dataset → :class:`Published`, read from the shipped ``paper_results.yaml``."""
    text = resources.files("occreid.reports").joinpath("paper_results.yaml").read_text(encoding="utf-8")
    out: dict[str, dict[str, Published]] = {}
    for method, datasets in (yaml.safe_load(text) or {}).items():
        for dataset, entry in datasets.items():
            missing = {*METRICS, "source", "checked"} - set(entry)
            if missing:
                raise OccreidError(f"paper_results.yaml: {method}.{dataset} lacks {sorted(missing)}",
                                   fix="give R1, mAP (null if unpublished), source and checked")
            out.setdefault(method, {})[dataset] = Published({m: entry[m] for m in METRICS}, str(entry["source"]),
                                                            bool(entry["checked"]))
    return out


@dataclass(frozen=True)
class ComparisonRow:
    experiment: str
    method: str
    dataset: str
    ours: dict[str, float | None]
    paper: Published | None

    def delta(self, metric: str) -> float | None:
        ours, theirs = self.ours.get(metric), self.paper.values.get(metric) if self.paper else None
        return None if ours is None or theirs is None else ours - theirs


def comparison(rows: list[str], metrics: Mapping[str, ExperimentMetrics]) -> list[ComparisonRow]:
    """Ours (percent, the ``all`` subset) beside the published number of the same method on the same dataset."""
    table = paper_results()
    out = []
    for name in rows:
        m = metrics[name]
        ours = {k: (None if (v := m.value("all", k)) is None else 100.0 * v) for k in METRICS}
        out.append(ComparisonRow(name, m.method, m.dataset, ours, table.get(m.method, {}).get(m.dataset)))
    return out


def _fmt(value: float | None, decimals: int, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{decimals}f}" if sign else f"{value:.{decimals}f}"


HEADER = ["experiment", "method", "dataset", *(f"{w} {m}" for m in METRICS for w in ("ours", "paper", "Δ")), "source"]


def _cells(row: ComparisonRow, decimals: int) -> list[str]:
    cells = [row.experiment, row.method, row.dataset]
    for m in METRICS:
        paper = row.paper.values.get(m) if row.paper else None
        cells += [_fmt(row.ours.get(m), decimals), _fmt(paper, decimals), _fmt(row.delta(m), decimals, sign=True)]
    source = "" if row.paper is None else row.paper.source + ("" if row.paper.checked else " (unchecked)")
    return cells + [source]


def to_markdown(title: str, rows: list[ComparisonRow], decimals: int) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(HEADER) + " |",
             "|" + "|".join(["---"] * 3 + ["--:"] * (3 * len(METRICS)) + ["---"]) + "|"]
    lines += ["| " + " | ".join(_cells(r, decimals)) + " |" for r in rows]
    return "\n".join(lines) + "\n\nΔ = ours − paper (points). — : no published number for this method and dataset.\n"


def to_csv(rows: list[ComparisonRow], decimals: int) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(_cells(r, decimals) for r in rows)
    return buf.getvalue()
