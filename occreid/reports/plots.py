"""Figures of the reports: CMC curves and hyper-parameter sensitivity sweeps (PNG, matplotlib Agg).

Why the object API (``matplotlib.figure.Figure``) and not pyplot: no global figure state and no backend
switch, so it works headless on a cluster and inside tests. PNG metadata is stripped of the software
version so the bytes depend on the data only (DVC hashes outputs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from occreid.io import atomic_path
from occreid.reports.tables import DATASET_NAMES

_METADATA = {"Software": None}


def _save(fig: Any, out: Path) -> Path:
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata=_METADATA, bbox_inches="tight")
    return out


def plot_cmc(curves: Mapping[str, tuple[str, Sequence[float]]], out: str | Path, max_rank: int = 20) -> Path:
    """CMC curves, one panel per dataset (curves of different galleries are not comparable).

    ``curves`` maps a legend label to ``(dataset, cmc as fractions from rank 1)``; y is printed in percent.
    """
    from matplotlib.figure import Figure

    by_dataset: dict[str, list[tuple[str, Sequence[float]]]] = {}
    for label, (dataset, curve) in curves.items():
        by_dataset.setdefault(dataset, []).append((label, curve))
    panels = max(1, len(by_dataset))
    fig = Figure(figsize=(4.5 * panels, 3.6))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, (dataset, items) in zip(axes, by_dataset.items()):
        for label, curve in items:
            ranks = list(range(1, min(max_rank, len(curve)) + 1))
            ax.plot(ranks, [100 * v for v in curve[: len(ranks)]], marker="o", markersize=3, label=label)
        ax.set_title(DATASET_NAMES.get(dataset, dataset))
        ax.set_xlabel("rank")
        ax.set_ylabel("matching rate (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
    if not by_dataset:
        axes[0].text(0.5, 0.5, "no CMC curves", ha="center", va="center")
    return _save(fig, Path(out))


def plot_sweep(series: Mapping[str, Sequence[tuple[Any, Mapping[str, float | None]]]], out: str | Path,
               xlabel: str, title: str = "") -> Path:
    """Metric (%) against a swept parameter: one line per dataset x metric.

    ``series`` is :func:`occreid.reports.spec.sweep_series`'s output. Numeric x values get a numeric axis;
    anything else (e.g. names of settings) is placed evenly in row order.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 3.6))
    ax = fig.subplots()
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for pts in series.values() for x, _ in pts)
    for dataset, points in series.items():
        xs = [x for x, _ in points]
        pos = xs if numeric else list(range(len(xs)))
        metrics = list(dict.fromkeys(k for _, vals in points for k in vals))
        for metric in metrics:
            ys = [None if vals.get(metric) is None else 100 * vals[metric] for _, vals in points]
            label = metric if len(series) == 1 else f"{DATASET_NAMES.get(dataset, dataset)} {metric}"
            ax.plot(pos, [float("nan") if y is None else y for y in ys], marker="o", label=label)
        if not numeric:
            ax.set_xticks(pos, [str(x) for x in xs])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("%")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, Path(out))
