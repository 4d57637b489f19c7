"""The ``metrics.json`` contract between the evaluate stage and the reports, and its reader.

Why a written contract: the evaluate stage writes one file per experiment, DVC shows it as metrics, and the
tables stage reads all of them; each side is built and tested separately, so the format is fixed here and
checked on every read (a percentage where a fraction belongs, or a stale file, fails loudly instead of
printing a wrong table).

``reports/eval/<experiment>/metrics.json``::

    {
      "experiment": "dpmpp_occduke",          # the key of params.yaml ``experiments``
      "dataset": "occluded_duke",             # dataset registry name
      "method": "dpmpp",                      # method registry name
      "subsets": {                            # query subsets; "all" is required
        "all":        {"R1": 0.712, "R5": 0.83, "R10": 0.87, "mAP": 0.61, "mINP": 0.3,
                       "num_queries": 2210, "num_skipped": 0},
        "occluded":   {...same keys...},      # only when the queries carry occlusion labels
        "whole_body": {...same keys...}
      },
      "cmc": {"all": [0.712, ..., 0.95]}      # CMC at ranks 1..50 (fewer if the gallery is smaller);
    }                                         # other subsets' curves optional

- Metric values are fractions in [0, 1] (reports print percentages), R1 <= R5 <= R10, CMC non-decreasing,
  ``cmc[s][k-1] == subsets[s]["R<k>"]``. ``num_queries`` counts the subset's queries, ``num_skipped`` those
  without a valid gallery match (not in the averages). A subset with no valid query is left out.
- Extra keys are allowed and ignored (e.g. protocol, re-ranking, timings).

Build the dict with :func:`subset_metrics` and :func:`make_metrics` (which validate) and write it with
``occreid.io.write_json``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from occreid.errors import OccreidError

METRICS_FILE = "metrics.json"
SUBSETS = ("all", "occluded", "whole_body")
RATE_KEYS = ("R1", "R5", "R10", "mAP", "mINP")
COUNT_KEYS = ("num_queries", "num_skipped")
_RANK = re.compile(r"^R([1-9][0-9]*)$")
_TOL = 1e-6


def metrics_path(eval_dir: str | Path, experiment: str) -> Path:
    """Where the evaluate stage writes the metrics of ``experiment``."""
    return Path(eval_dir) / experiment / METRICS_FILE


def subset_metrics(cmc: Sequence[float], mAP: float, mINP: float, num_queries: int, num_skipped: int) -> dict:
    """One subset entry from a CMC curve (rank 1 first) and the averages: R1/R5/R10 are read off the curve."""
    cmc = [float(c) for c in cmc]
    out: dict[str, Any] = {f"R{k}": cmc[min(k, len(cmc)) - 1] for k in (1, 5, 10)}
    out.update(mAP=float(mAP), mINP=float(mINP), num_queries=int(num_queries), num_skipped=int(num_skipped))
    return out


def make_metrics(experiment: str, dataset: str, method: str, subsets: Mapping[str, Mapping[str, Any]],
                 cmc: Mapping[str, Sequence[float]], **extra: Any) -> dict:
    """The metrics.json document, validated (a ValueError names the broken field)."""
    doc = {"experiment": experiment, "dataset": dataset, "method": method,
           "subsets": {k: dict(v) for k, v in subsets.items()},
           "cmc": {k: [float(x) for x in v] for k, v in cmc.items()}, **extra}
    try:
        validate_metrics(doc, "<metrics>")
    except OccreidError as e:
        raise ValueError(e.problem) from None
    return doc


@dataclass(frozen=True)
class ExperimentMetrics:
    """The parsed metrics of one experiment."""

    experiment: str
    dataset: str
    method: str
    subsets: dict[str, dict[str, float]]
    cmc: dict[str, list[float]]
    path: Path = field(default=Path(METRICS_FILE))

    def value(self, subset: str, metric: str) -> float | None:
        """A metric as a fraction; ``R<k>`` beyond R1/R5/R10 is read off the CMC curve; None if absent."""
        entry = self.subsets.get(subset)
        if entry is None:
            return None
        if metric in entry:
            return entry[metric]
        match = _RANK.match(metric)
        curve = self.cmc.get(subset)
        if match and curve and int(match.group(1)) <= len(curve):
            return curve[int(match.group(1)) - 1]
        return None


def _fail(path: str | Path, problem: str) -> OccreidError:
    return OccreidError(problem, path=path, fix=f"re-run the evaluate stage that writes it (format: {__name__})")


def _rate(value: Any, where: str, path: str | Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, f"{where} must be a number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise _fail(path, f"{where} = {value} is outside [0, 1] (fractions, not percentages)")
    return float(value)


def validate_metrics(doc: Any, path: str | Path) -> ExperimentMetrics:
    """Check ``doc`` against the contract above; an OccreidError names the file and the field."""
    if not isinstance(doc, Mapping):
        raise _fail(path, "the top level must be an object")
    for key in ("experiment", "dataset", "method"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise _fail(path, f"'{key}' must be a non-empty string")
    subsets, cmc = doc.get("subsets"), doc.get("cmc")
    if not isinstance(subsets, Mapping) or "all" not in subsets:
        raise _fail(path, "'subsets' must be an object with at least the subset 'all'")
    if not isinstance(cmc, Mapping) or "all" not in cmc:
        raise _fail(path, "'cmc' must be an object with at least the curve 'all'")
    parsed: dict[str, dict[str, float]] = {}
    for name, entry in subsets.items():
        if not isinstance(entry, Mapping):
            raise _fail(path, f"subsets.{name} must be an object")
        missing = [k for k in RATE_KEYS + COUNT_KEYS if k not in entry]
        if missing:
            raise _fail(path, f"subsets.{name} lacks {', '.join(missing)}")
        values = {k: _rate(entry[k], f"subsets.{name}.{k}", path) for k in RATE_KEYS}
        if not values["R1"] <= values["R5"] + _TOL <= values["R10"] + 2 * _TOL:
            raise _fail(path, f"subsets.{name}: R1 <= R5 <= R10 does not hold")
        for k in COUNT_KEYS:
            if isinstance(entry[k], bool) or not isinstance(entry[k], int) or entry[k] < 0:
                raise _fail(path, f"subsets.{name}.{k} must be a non-negative integer, got {entry[k]!r}")
            values[k] = entry[k]
        parsed[str(name)] = values
    curves: dict[str, list[float]] = {}
    for name, curve in cmc.items():
        if not isinstance(curve, Sequence) or isinstance(curve, str) or not curve:
            raise _fail(path, f"cmc.{name} must be a non-empty list")
        values_list = [_rate(v, f"cmc.{name}[{i}]", path) for i, v in enumerate(curve)]
        if any(b < a - _TOL for a, b in zip(values_list, values_list[1:])):
            raise _fail(path, f"cmc.{name} decreases: a CMC curve is cumulative")
        if name in parsed:
            for k in (1, 5, 10):
                if k <= len(values_list) and abs(values_list[k - 1] - parsed[name][f"R{k}"]) > _TOL:
                    raise _fail(path, f"cmc.{name}[{k - 1}] differs from subsets.{name}.R{k}")
        curves[str(name)] = values_list
    return ExperimentMetrics(doc["experiment"], doc["dataset"], doc["method"], parsed, curves, Path(path))


def load_metrics(path: str | Path) -> ExperimentMetrics:
    """Read and validate one metrics.json."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise _fail(path, f"not valid JSON: {e}") from None
    return validate_metrics(doc, path)


def collect_metrics(experiments: Iterable[str], eval_dir: str | Path) -> dict[str, ExperimentMetrics]:
    """The metrics of each experiment, from ``<eval_dir>/<experiment>/metrics.json``.

    Every missing file is reported at once, with the command that produces it; a file written for
    another experiment (copied or stale) is refused.
    """
    names = list(dict.fromkeys(experiments))
    missing = [n for n in names if not metrics_path(eval_dir, n).is_file()]
    if missing:
        listed = ", ".join(missing)
        raise OccreidError(
            f"no metrics for experiment(s) {listed} ({len(missing)} of {len(names)} missing)",
            path=metrics_path(eval_dir, missing[0]),
            fix="run the evaluate stage for them first: "
            + " ; ".join(f"dvc repro evaluate@{n}" for n in missing)
            + f" (or: snakemake {' '.join(str(metrics_path(eval_dir, n)) for n in missing)})",
        )
    out: dict[str, ExperimentMetrics] = {}
    for name in names:
        metrics = load_metrics(metrics_path(eval_dir, name))
        if metrics.experiment != name:
            raise _fail(metrics.path, f"holds the metrics of experiment '{metrics.experiment}', not '{name}'")
        out[name] = metrics
    return out
