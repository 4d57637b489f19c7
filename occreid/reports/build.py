"""Write the whole ``reports/tables/`` folder: every table in four formats, the figures and an index.

Why one function: the folder is one DVC output, so it is built under a temporary name and renamed into
place whole (``occreid.io.atomic_path``) — a failed run leaves the previous reports intact and no stale
table of a since-removed spec survives.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from occreid.errors import OccreidError
from occreid.io import atomic_path, write_text
from occreid.reports.collect import ExperimentMetrics, collect_metrics
from occreid.reports.plots import plot_cmc, plot_sweep
from occreid.reports.paper import comparison
from occreid.reports.paper import to_csv as paper_csv
from occreid.reports.paper import to_markdown as paper_md
from occreid.reports.spec import TablesConfig, build_table, rows_of, runs_of, sweep_series, table_specs
from occreid.reports.tables import Table, page, to_csv, to_html, to_latex, to_markdown

log = logging.getLogger(__name__)
FORMATS = ("md", "tex", "csv", "html")
CMC_FILE = "cmc.png"


def check_experiments(experiments: Mapping[str, Any], metrics: Mapping[str, ExperimentMetrics],
                      source: str = "params.yaml") -> None:
    """Refuse metrics that disagree with params.yaml's experiment (a stale or misplaced metrics.json)."""
    for name, m in metrics.items():
        spec = experiments[name] or {}
        for key in ("dataset", "method"):
            if spec.get(key) is not None and spec.get(key) != getattr(m, key):
                raise OccreidError(
                    f"{key} is '{getattr(m, key)}' but {source} says experiment '{name}' uses '{spec.get(key)}'",
                    path=m.path, fix=f"re-run its evaluation: dvc repro evaluate@{name}")


def _index_md(tables: list[Table], figures: list[str]) -> str:
    lines = ["# Tables", "", "Values in %; best per column in bold.", "", "| table | title | files |",
             "|:--|:--|:--|"]
    for t in tables:
        files = " ".join(f"[{ext}]({t.name}.{ext})" for ext in FORMATS)
        lines.append(f"| {t.name} | {t.title} | {files} |")
    lines += ["", "# Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def _index_html(tables: list[Table], figures: list[str]) -> str:
    parts = ["<h1>Tables</h1>"]
    for t in tables:
        links = " ".join(f'<a href="{t.name}.{ext}">{ext}</a>' for ext in FORMATS)
        parts += [f"<h2>{html.escape(t.title)}</h2>", f"<p>{links}</p>", to_html(t, standalone=False)]
    parts.append("<h1>Figures</h1>")
    parts += [f'<figure><img src="{f}" alt="{f}"><figcaption>{f}</figcaption></figure>' for f in figures]
    return page("occreid reports", "\n".join(parts))


def build_reports(cfg: TablesConfig, experiments: Mapping[str, Any], eval_dir: str | Path, out_dir: str | Path,
                  *, source: str = "params.yaml", base: Mapping[str, Any] | None = None) -> list[Path]:
    """Render the tables of ``cfg`` for ``experiments`` (params.yaml's name → {dataset, method, overrides})
    from ``<eval_dir>/<experiment>/metrics.json`` into ``out_dir``; returns the files written. ``base``: the
    params sections a sweep row that does not override the swept key is read from."""
    specs = table_specs(cfg, source)
    runs = runs_of(experiments)  # a row with seed replicates needs their metrics too
    needed = list(dict.fromkeys(r for spec in specs for e in rows_of(spec, experiments, source) for r in runs[e]))
    metrics = collect_metrics(needed, eval_dir)
    check_experiments(experiments, metrics, source)
    tables = [build_table(spec, experiments, metrics, cfg.decimals, source) for spec in specs]
    sweeps = {spec.name: sweep_series(spec, experiments, metrics, source, base) for spec in specs if spec.sweep}
    out_dir = Path(out_dir)
    names: list[str] = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        for t in tables:
            for ext, render in zip(FORMATS, (to_markdown, to_latex, to_csv, to_html)):
                write_text(tmp / f"{t.name}.{ext}", render(t))
                names.append(f"{t.name}.{ext}")
        for spec in specs:
            if spec.paper:
                rows = comparison(rows_of(spec, experiments, source), metrics)
                title = f"{spec.title or spec.name}: ours beside the papers"
                write_text(tmp / f"{spec.name}_paper.md", paper_md(title, rows, cfg.decimals))
                write_text(tmp / f"{spec.name}_paper.csv", paper_csv(rows, cfg.decimals))
                names += [f"{spec.name}_paper.md", f"{spec.name}_paper.csv"]
        curves = {e: (metrics[e].dataset, metrics[e].cmc["all"]) for e in needed}
        plot_cmc(curves, tmp / CMC_FILE, cfg.cmc_max_rank)
        figures = [CMC_FILE]
        for spec in specs:
            if spec.sweep:
                name = f"sweep_{spec.name}.png"
                plot_sweep(sweeps[spec.name], tmp / name, spec.sweep.label or spec.sweep.param,
                           spec.title or spec.name)
                figures.append(name)
        write_text(tmp / "index.md", _index_md(tables, figures))
        write_text(tmp / "index.html", _index_html(tables, figures))
        names += figures + ["index.md", "index.html"]
    log.info("wrote %d table(s) (%s) and %d figure(s) to %s", len(tables), ", ".join(t.name for t in tables),
             len(figures), out_dir)
    log.info("open %s", out_dir / "index.html")
    return [out_dir / n for n in names]
