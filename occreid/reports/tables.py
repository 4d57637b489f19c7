"""Render a table of metrics as Markdown, LaTeX (booktabs), CSV and HTML, in the papers' layout.

Why one model and four printers: the numbers, their rounding and which cell is best are decided once
(:class:`Table`, :meth:`Table.cells`, :meth:`Table.best`), so the four formats can never disagree. Values are
percentages with ``decimals`` digits; the best value of each column (after rounding, ties all bold) is
bold in Markdown, LaTeX and HTML. A missing value (an experiment without that subset, or a row without
that dataset) prints as a dash.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass

DATASET_NAMES = {
    "market1501": "Market-1501",
    "dukemtmc": "DukeMTMC-reID",
    "occluded_duke": "Occluded-Duke",
    "occluded_reid": "Occluded-REID",
    "msmt17": "MSMT17",
    "synthocc": "SynthOcc",
}
SUBSET_NAMES = {"all": "all", "occluded": "occluded", "whole_body": "whole-body"}
DASH = "-"
ROW_HEADER = "Method"


@dataclass(frozen=True)
class Group:
    """A column group: one dataset, one query subset."""

    dataset: str
    subset: str


@dataclass
class Table:
    """Rows x (groups x columns) of fractions (None = missing)."""

    name: str
    title: str
    labels: list[str]
    experiments: list[list[str]]
    groups: list[Group]
    columns: list[str]
    values: list[list[float | None]]
    decimals: int = 1
    # Seed replicates (``replicate_of`` in params.yaml): per row the number of runs averaged in ``values`` and
    # per cell their sample standard deviation (None: one run, or the cell is missing).
    runs: list[int] | None = None
    spread: list[list[float | None]] | None = None

    def group_title(self, group: Group) -> str:
        """The dataset's name, plus the subset when the table shows more than one subset."""
        name = DATASET_NAMES.get(group.dataset, group.dataset)
        if len({g.subset for g in self.groups}) > 1:
            name += f" ({SUBSET_NAMES.get(group.subset, group.subset)})"
        return name

    def header(self) -> list[str]:
        """Flat column names (``Occluded-Duke R1``) for formats without column groups."""
        return [f"{self.group_title(g)} {c}" for g in self.groups for c in self.columns]

    def cells(self) -> list[list[str]]:
        """The values as printed: percentages rounded to ``decimals``, or a dash."""
        return [[DASH if v is None else f"{100 * v:.{self.decimals}f}" for v in row] for row in self.values]

    def spread_cells(self) -> list[list[str | None]]:
        """The standard deviations as printed (None where a cell has none)."""
        spread = self.spread or [[None] * len(row) for row in self.values]
        return [[None if s is None else f"{100 * s:.{self.decimals}f}" for s in row] for row in spread]

    def shown(self) -> list[list[str]]:
        """What the human-readable formats print: ``mean ± sd`` over seed replicates, else the value."""
        return [[c if s is None else f"{c} ± {s}" for c, s in zip(row, srow)]
                for row, srow in zip(self.cells(), self.spread_cells())]

    def note(self) -> str:
        """The footnote: units, bold, and how many seeds the averaged rows have."""
        text = "Values in %; best per column in bold"
        if self.runs and max(self.runs) > 1:
            text += "; a row run with several seeds (replicate_of) shows mean ± sample sd over its seeds"
        return text + "."

    def label(self, i: int) -> str:
        """Row label, with the number of seeds when the row averages several."""
        n = self.runs[i] if self.runs else 1
        return self.labels[i] if n <= 1 else f"{self.labels[i]} ({n} seeds)"

    def best(self) -> set[tuple[int, int]]:
        """(row, column) of the best printed value per column; only columns with at least two values."""
        out: set[tuple[int, int]] = set()
        cells = self.cells()
        for j in range(len(self.header())):
            shown = {i: float(row[j]) for i, row in enumerate(cells) if row[j] != DASH}
            if len(shown) >= 2:
                top = max(shown.values())
                out |= {(i, j) for i, v in shown.items() if v == top}
        return out


def to_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table under a heading; column groups are folded into the header."""
    cells, best = table.shown(), table.best()
    esc = lambda s: s.replace("|", r"\|")  # noqa: E731
    lines = [f"# {table.title}", "", "| " + " | ".join([ROW_HEADER, *map(esc, table.header())]) + " |",
             "|:--" + "|--:" * len(table.header()) + "|"]
    for i, row in enumerate(cells):
        shown = [f"**{c}**" if (i, j) in best else c for j, c in enumerate(row)]
        lines.append("| " + " | ".join([esc(table.label(i)), *shown]) + " |")
    lines += ["", f"{table.note()} Table `{table.name}`.", ""]
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A ``table`` float with a booktabs ``tabular``: group headers with cmidrules, then metric names."""
    cells, best = [[c.replace("±", r"$\pm$") for c in row] for row in table.shown()], table.best()
    n = len(table.columns)
    spec = "l" + "".join(" " + "c" * n for _ in table.groups)
    group_row = " & ".join([""] + [rf"\multicolumn{{{n}}}{{c}}{{{tex_escape(table.group_title(g))}}}"
                                   for g in table.groups])
    rules = " ".join(rf"\cmidrule(lr){{{2 + k * n}-{1 + (k + 1) * n}}}" for k in range(len(table.groups)))
    metric_row = " & ".join([ROW_HEADER] + [tex_escape(c) for _ in table.groups for c in table.columns])
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             rf"\caption{{{tex_escape(table.title)}}}", rf"\label{{tab:{tex_escape(table.name)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule", group_row + r" \\", rules, metric_row + r" \\",
             r"\midrule"]
    for i, row in enumerate(cells):
        shown = [rf"\textbf{{{c}}}" if (i, j) in best else ("--" if c == DASH else c) for j, c in enumerate(row)]
        lines.append(" & ".join([tex_escape(table.label(i)), *shown]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def csv_header(table: Table) -> list[str]:
    """Machine-readable column names: ``row`` then ``<dataset>/<subset>/<metric>``; with seed replicates also
    ``runs`` and a ``.../<metric>_sd`` column after each metric."""
    cols = [f"{g.dataset}/{g.subset}/{c}" for g in table.groups for c in table.columns]
    if not table.spread:
        return ["row", *cols]
    return ["row", "runs", *(x for c in cols for x in (c, f"{c}_sd"))]


def to_csv(table: Table) -> str:
    """Plain numbers (percent, rounded like the table; empty when missing), no bold."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_header(table))
    for i, (label, row, srow) in enumerate(zip(table.labels, table.cells(), table.spread_cells())):
        values = ["" if c == DASH else c for c in row]
        if table.spread:
            runs = table.runs[i] if table.runs else 1
            values = [runs, *(x for c, s in zip(values, srow) for x in (c, s or ""))]
        writer.writerow([label, *values])
    return buf.getvalue()


_CSS = ("table.occreid{border-collapse:collapse;font-family:sans-serif;margin:1em 0}"
        "table.occreid caption{font-weight:bold;margin-bottom:.4em}"
        "table.occreid th,table.occreid td{padding:.2em .6em;text-align:center}"
        "table.occreid thead{border-top:2px solid #000;border-bottom:1px solid #000}"
        "table.occreid tbody{border-bottom:2px solid #000}table.occreid tbody th{text-align:left}")


def to_html(table: Table, standalone: bool = True) -> str:
    """An HTML table (two header rows: groups, then metrics); a whole page when ``standalone``."""
    cells, best = table.shown(), table.best()
    n = len(table.columns)
    e = html.escape
    out = [f'<table class="occreid" id="{e(table.name)}">', f"<caption>{e(table.title)}</caption>", "<thead>",
           f'<tr><th rowspan="2" scope="col">{ROW_HEADER}</th>'
           + "".join(f'<th colspan="{n}" scope="colgroup">{e(table.group_title(g))}</th>' for g in table.groups)
           + "</tr>",
           "<tr>" + "".join(f'<th scope="col">{e(c)}</th>' for _ in table.groups for c in table.columns) + "</tr>",
           "</thead>", "<tbody>"]
    for i, row in enumerate(cells):
        tds = "".join(f"<td><b>{e(c)}</b></td>" if (i, j) in best else f"<td>{e(c)}</td>" for j, c in enumerate(row))
        out.append(f'<tr><th scope="row">{e(table.label(i))}</th>{tds}</tr>')
    out += ["</tbody>", "</table>"]
    body = "\n".join(out)
    if not standalone:
        return body + "\n"
    return page(table.title, body + f"\n<p>{e(table.note())}</p>")


def page(title: str, body: str) -> str:
    """A minimal self-contained HTML page."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}'
            f"</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")
