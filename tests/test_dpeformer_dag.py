"""The DPEFormer rows in the DAG: DVC and Snakemake build the same graph for them (synthocc's occluder library
once, before every dpeformer training), and ``dvc repro`` on the demo's Table X rows (shrunk to seconds) builds the
library, trains the rows and renders their table."""

from __future__ import annotations

import re

import pytest

from dag_fixtures import ROOT, project_copy, run, tiny
from stages import registry as reg
from stages.params import read_yaml
import test_dag_engines as engines

ROWS = ("dpeformer_cut_paste", "dpeformer_random_erasing")  # Table X's baselines (the e2e test runs `dpeformer`)


def dpeformer_only(params: dict) -> dict:
    """The tiny demo with the Table X baselines only, and their table (its `dpeformer` row left out)."""
    experiments = {k: params["experiments"][k] for k in ROWS}
    table = next(t for t in params["tables"]["tables"] if t["name"] == "dpeformer_table10")
    table = {**table, "rows": list(ROWS), "row_labels": {k: table["row_labels"][k] for k in ROWS}}
    params = tiny(params)
    params["experiments"], params["tables"]["tables"] = experiments, [table]
    return params


def test_dvc_and_snakemake_build_the_same_graph_for_the_demo_rows(tmp_path):
    demo = read_yaml(ROOT / "params.yaml")["experiments"]
    rows = {k: v for k, v in demo.items() if k.startswith("dpeformer") or k in ("vit", "dpmpp")}
    repo = engines.stub_repo(tmp_path / "repo", rows)
    engines.run([str(engines.BIN / "dvc"), "init", "--no-scm", "-q"], repo)
    plan = reg.build_plan(read_yaml(repo / "params.yaml"))
    jobs = {j.id for j in plan.jobs}
    assert {v for u, v in plan.edges() if u == "occluders@synthocc"} == {f"train@{k}" for k in rows
                                                                         if k.startswith("dpeformer")}
    assert engines.dvc_graph(repo) == (jobs, plan.edges()) == engines.snakemake_graph(repo)


@pytest.mark.slow
def test_dvc_repro_builds_the_library_trains_the_rows_and_renders_the_table(tmp_path):
    project = project_copy(tmp_path / "p", change=dpeformer_only)
    run(["dvc", "init", "--no-scm", "-q"], project)
    out = run(["dvc", "repro"], project).stdout
    ran = re.findall(r"Running stage '([^']+)'", out)
    assert sorted(ran) == sorted(["prepare_data@synthocc", "occluders@synthocc", "tables"]
                                 + [f"{s}@{e}" for s in ("train", "evaluate") for e in ROWS])
    assert ran.index("occluders@synthocc") < min(ran.index(f"train@{e}") for e in ROWS)
    table = (project / "reports/tables/dpeformer_table10.md").read_text()
    for label in ("Cut&Paste (same objects' boxes)", "Random erasing"):
        assert label in table
    assert (project / "data/occluders/synthocc/contact_sheet.png").is_file()
