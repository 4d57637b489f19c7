"""What tables to render (the ``tables`` params section) and how a spec becomes a table of numbers.

Why: every table of the papers is "rows = methods or ablation settings, column groups = dataset x query
subset, columns = R1 R5 R10 mAP". A spec names the rows (experiments of params.yaml) and the groups, and
:func:`build_table` looks the numbers up; renderers (``tables.py``) only format. Experiments that share a
row label (for instance one method evaluated on two datasets) fill one row, each in its dataset's group.
Seed replicates (experiments with ``replicate_of: <name>``, written by ``occreid replicate``) are not rows
of their own: the row of ``<name>`` shows the mean and sample standard deviation over it and its replicates
(:func:`runs_of`), and a sweep point is their mean.

params.yaml::

    tables:
      decimals: 1
      cmc_max_rank: 20
      tables:                       # empty: one table "main" with every experiment
        - name: occluded_duke
          title: Comparison on Occluded-Duke
          rows: [vit_occduke, clipreid_occduke, dpmpp_occduke]
          row_labels: {vit_occduke: ViT-B/16}
          datasets: [occluded_duke]  # empty: the rows' datasets
          subsets: [all]             # empty: every subset present (all, occluded, whole_body)
          columns: [R1, R5, R10, mAP, mINP]
        - name: alpha1
          rows: [dpmpp_a1_0.1, dpmpp_a1_0.3, dpmpp_a1_0.5]
          sweep: {param: methods.dpmpp.alpha1, label: "α1", metrics: [mAP, R1]}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from occreid.errors import OccreidError, did_you_mean
from occreid.reports.collect import SUBSETS, ExperimentMetrics
from occreid.reports.tables import Group, Table

DEFAULT_COLUMNS = ["R1", "R5", "R10", "mAP"]
RESERVED_NAMES = {"index", "cmc"}
_COLUMN = re.compile(r"^(R[1-9][0-9]*|mAP|mINP)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

METHOD_NAMES = {"vit": "ViT", "clipreid": "CLIP-ReID", "dpm": "DPM", "dpeformer": "DPEFormer", "dpmpp": "DPM++"}


@dataclass
class SweepSpec:
    """A hyper-parameter sensitivity plot: x = ``param`` (dotted key into each row's ``overrides``)."""

    param: str
    label: str | None = None
    metrics: list[str] = field(default_factory=lambda: ["mAP", "R1"])
    subset: str = "all"


@dataclass
class TableSpec:
    """One table; see the module docstring."""

    name: str
    title: str = ""
    rows: list[str] = field(default_factory=list)
    row_labels: dict[str, str] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    subsets: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=lambda: list(DEFAULT_COLUMNS))
    sweep: SweepSpec | None = None
    paper: bool = False  # also write <name>_paper.md/.csv: the published number, ours and the delta per row


@dataclass
class TablesConfig:
    """The ``tables`` params section."""

    tables: list[TableSpec] = field(default_factory=list)
    decimals: int = 1
    cmc_max_rank: int = 20


def table_specs(cfg: TablesConfig, source: str = "params.yaml") -> list[TableSpec]:
    """The tables to render (the default "main" table when none is declared), with names checked."""
    specs = cfg.tables or [TableSpec(name="main", title="All experiments")]
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        key = f"tables.tables[{i}].name"
        if not _NAME.match(spec.name) or spec.name in RESERVED_NAMES:
            raise OccreidError(f"'{key}' = {spec.name!r} cannot be a file name", path=source,
                               fix=f"use letters, digits, '_', '-', '.'; not {sorted(RESERVED_NAMES)}")
        if spec.name in seen:
            raise OccreidError(f"two tables are named '{spec.name}'", path=source, fix="give each table its own name")
        seen.add(spec.name)
        for col in spec.columns + (spec.sweep.metrics if spec.sweep else []):
            if not _COLUMN.match(col):
                raise OccreidError(f"table '{spec.name}': unknown column '{col}'", path=source,
                                   fix="use R<k> (e.g. R1, R5, R10, R20), mAP or mINP")
    if cfg.decimals < 0 or cfg.cmc_max_rank < 1:
        raise OccreidError("tables.decimals must be >= 0 and tables.cmc_max_rank >= 1", path=source)
    return specs


def runs_of(experiments: Mapping[str, Any]) -> dict[str, list[str]]:
    """Experiment → the runs its row averages: itself, then the experiments that name it in ``replicate_of``
    (seed replicates, in params.yaml order). Validation (stages.common) makes sure replicates differ from
    their original in ``train.seed`` only."""
    out = {name: [name] for name in experiments}
    for name, spec in experiments.items():
        original = (spec or {}).get("replicate_of")
        if original in out:
            out[original].append(name)
    return out


def mean_sd(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the present values (sd None for fewer than two)."""
    have = [v for v in values if v is not None]
    if not have:
        return None, None
    mean = math.fsum(have) / len(have)
    if len(have) < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in have) / (len(have) - 1))


def rows_of(spec: TableSpec, experiments: Mapping[str, Any], source: str = "params.yaml") -> list[str]:
    """The experiments of a table (all of params.yaml's but seed replicates, which fold into their original's
    row, in order, when ``rows`` is empty), checked."""
    rows = list(spec.rows) or [n for n, e in experiments.items() if not (e or {}).get("replicate_of")]
    for name in rows:
        if name not in experiments:
            raise OccreidError(f"table '{spec.name}' lists unknown experiment '{name}'", path=source,
                               fix=did_you_mean(name, experiments))
    for name in spec.row_labels:
        if name not in rows:
            raise OccreidError(f"table '{spec.name}': row_labels names '{name}', which is not one of its rows",
                               path=source, fix=did_you_mean(name, rows))
    return rows


def _labels(spec: TableSpec, rows: list[str], metrics: Mapping[str, ExperimentMetrics]) -> list[str]:
    """Row label per experiment: ``row_labels``, else the method's name when it is unique per dataset among
    the rows (so a method's experiments on several datasets share a row), else the experiment name."""
    pairs = [(metrics[r].method, metrics[r].dataset) for r in rows]
    unique = len(set(pairs)) == len(pairs)
    return [spec.row_labels.get(r) or (METHOD_NAMES.get(m.method, m.method) if unique else r)
            for r, m in ((r, metrics[r]) for r in rows)]


def build_table(spec: TableSpec, experiments: Mapping[str, Any], metrics: Mapping[str, ExperimentMetrics],
                decimals: int = 1, source: str = "params.yaml") -> Table:
    """Look up the numbers of ``spec``; errors name params.yaml when the spec asks for absent data."""
    rows = rows_of(spec, experiments, source)
    present = list(dict.fromkeys(metrics[r].dataset for r in rows))
    datasets = list(spec.datasets) or present
    for ds in datasets:
        if ds not in present:
            raise OccreidError(f"table '{spec.name}': no row is evaluated on dataset '{ds}'", path=source,
                               fix=did_you_mean(ds, present))
    have = {s for r in rows for s in metrics[r].subsets}
    subsets = list(spec.subsets) or [s for s in SUBSETS if s in have] + sorted(have - set(SUBSETS))
    for s in subsets:
        if s not in have:
            raise OccreidError(f"table '{spec.name}': no row has the query subset '{s}'", path=source,
                               fix=did_you_mean(s, have))
    have_pair = {(metrics[r].dataset, s) for r in rows for s in metrics[r].subsets}
    groups = [Group(ds, s) for ds in datasets for s in subsets if (ds, s) in have_pair]  # no empty groups
    labels: list[str] = []
    members: list[list[str]] = []
    for exp, label in zip(rows, _labels(spec, rows, metrics)):
        if label not in labels:
            labels.append(label)
            members.append([])
        row = members[labels.index(label)]
        clash = [o for o in row if metrics[o].dataset == metrics[exp].dataset]
        if clash:
            raise OccreidError(f"table '{spec.name}': experiments '{clash[0]}' and '{exp}' share the label "
                               f"'{label}' on one dataset", path=source, fix="give them distinct row_labels")
        row.append(exp)
    runs = runs_of(experiments)
    values, spread, counts = [], [], []
    for row in members:
        by_ds = {metrics[e].dataset: e for e in row}
        cells = [mean_sd([metrics[r].value(g.subset, col) for r in runs[by_ds[g.dataset]]])
                 if g.dataset in by_ds else (None, None) for g in groups for col in spec.columns]
        values.append([m for m, _ in cells])
        spread.append([sd for _, sd in cells])
        counts.append(max(len(runs[e]) for e in row))
    replicated = any(n > 1 for n in counts)
    return Table(spec.name, spec.title or spec.name, labels, members, groups, list(spec.columns), values, decimals,
                 runs=counts if replicated else None, spread=spread if replicated else None)


def _lookup(overrides: Any, dotted: str) -> Any:
    node = overrides
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def sweep_series(spec: TableSpec, experiments: Mapping[str, Any], metrics: Mapping[str, ExperimentMetrics],
                 source: str = "params.yaml", base: Mapping[str, Any] | None = None,
                 ) -> dict[str, list[tuple[Any, dict[str, float | None]]]]:
    """Per dataset, the points ``(x, {metric: fraction})`` of a sweep table, sorted by x when x is numeric.

    x is ``overrides.<sweep.param>`` of each row's experiment in params.yaml or, for a row that does not
    override it (the main experiment at the default setting), the value in ``base`` (params.yaml's
    sections), so a sweep can include the main row without repeating its defaults.
    """
    assert spec.sweep is not None
    out: dict[str, list[tuple[Any, dict[str, float | None]]]] = {}
    runs = runs_of(experiments)
    for exp in rows_of(spec, experiments, source):
        try:
            x = _lookup((experiments[exp] or {}).get("overrides") or {}, spec.sweep.param)
        except KeyError:
            try:
                x = _lookup(base or {}, spec.sweep.param)
            except KeyError:
                raise OccreidError(f"sweep table '{spec.name}': experiment '{exp}' sets no "
                                   f"'overrides.{spec.sweep.param}' and params.yaml has no '{spec.sweep.param}'",
                                   path=source, fix="set the swept value in the row's overrides, or fix "
                                                    "sweep.param") from None
        m, reps = metrics[exp], runs[exp]  # a row with seed replicates: their mean
        out.setdefault(m.dataset, []).append((x, {k: mean_sd([metrics[r].value(spec.sweep.subset, k) for r in reps])[0]
                                                  for k in spec.sweep.metrics}))
    for points in out.values():
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in points):
            points.sort(key=lambda p: p[0])
    return out
