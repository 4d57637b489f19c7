"""Reports: the metrics.json contract, the papers' tables (Markdown, LaTeX, CSV, HTML) and figures.

Importing this package is light (no matplotlib): the params validator imports :class:`TablesConfig`.
"""

from __future__ import annotations

from occreid.reports.build import build_reports
from occreid.reports.collect import (
    METRICS_FILE,
    ExperimentMetrics,
    collect_metrics,
    load_metrics,
    make_metrics,
    metrics_path,
    subset_metrics,
    validate_metrics,
)
from occreid.reports.spec import SweepSpec, TablesConfig, TableSpec, build_table, sweep_series
from occreid.reports.tables import Table, to_csv, to_html, to_latex, to_markdown

__all__ = [
    "METRICS_FILE",
    "ExperimentMetrics",
    "SweepSpec",
    "Table",
    "TableSpec",
    "TablesConfig",
    "build_reports",
    "build_table",
    "collect_metrics",
    "load_metrics",
    "make_metrics",
    "metrics_path",
    "subset_metrics",
    "sweep_series",
    "to_csv",
    "to_html",
    "to_latex",
    "to_markdown",
    "validate_metrics",
]
