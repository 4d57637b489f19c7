"""Stage ``tables``: ``python -m stages.tables [--params params.yaml] [--out reports/tables]``.

Reads the ``tables`` section (:class:`occreid.reports.TablesConfig`) and ``experiments`` of params.yaml and
every experiment's ``reports/eval/<experiment>/metrics.json``, then writes ``reports/tables/``: per table
``<name>.md``, ``.tex`` (booktabs), ``.csv``, ``.html``; ``cmc.png``; ``sweep_<name>.png`` for sweep tables;
``index.md`` and ``index.html``. A missing metrics file names the evaluate job to run; exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from occreid.reports import TablesConfig, build_reports
from occreid.reports.spec import table_specs
from stages import common
from stages.params import PARAMS_FILE
from stages.profiles import PROFILE_KEYS, selected_experiments, tables_in_profile

log = logging.getLogger("stages.tables")
EVAL_DIR = Path("reports/eval")
OUT_DIR = Path("reports/tables")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.tables", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    parser.add_argument("--out", default=str(OUT_DIR), help=f"output folder (default: {OUT_DIR})")
    parser.add_argument("--eval-dir", default=str(EVAL_DIR), help=f"evaluate stage outputs (default: {EVAL_DIR})")
    args = parser.parse_args(argv)
    params = common.load("tables", path=args.params)
    cfg = params.section(TablesConfig, "tables")
    selected = selected_experiments({k: params.get(k, None) for k in (*PROFILE_KEYS, "experiments")}, args.params)
    experiments = {name: spec for name, spec in params.get("experiments").items() if name in selected}
    kept, dropped = tables_in_profile(table_specs(cfg, str(args.params)), selected)
    if dropped:
        log.info("profile %s: leaving out table(s) %s (rows not in the profile)", params.get("profile", None),
                 ", ".join(dropped))
        cfg = dataclasses.replace(cfg, tables=kept)
    base = {section: params.get(section, {}) for section in common.OVERRIDABLE}  # sweep rows at the default
    written = build_reports(cfg, experiments, args.eval_dir, args.out, source=str(args.params), base=base)
    log.info("tables stage done: %d files in %s", len(written), Path(args.out).resolve())


if __name__ == "__main__":
    common.run(main)
