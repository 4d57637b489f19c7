"""``dvc repro`` on the demo's DPEFormer rows (shrunk to seconds): the occluder library is built once, every row
trains with it and the DPEFormer table (paper Table X: how the occluded view is made) is rendered."""

from __future__ import annotations

import re

import pytest

from dag_fixtures import project_copy, run, tiny

pytestmark = pytest.mark.slow
ROWS = ("dpeformer", "dpeformer_cut_paste", "dpeformer_random_erasing")


def dpeformer_only(params: dict) -> dict:
    experiments = {k: params["experiments"][k] for k in ROWS}
    tables = [t for t in params["tables"]["tables"] if t["name"] == "dpeformer_table10"]
    params = tiny(params)
    params["experiments"], params["tables"]["tables"] = experiments, tables
    return params


def test_dvc_repro_builds_the_library_trains_the_rows_and_renders_the_table(tmp_path):
    project = project_copy(tmp_path / "p", change=dpeformer_only)
    run(["dvc", "init", "--no-scm", "-q"], project)
    out = run(["dvc", "repro"], project).stdout
    ran = re.findall(r"Running stage '([^']+)'", out)
    assert sorted(ran) == sorted(["prepare_data@synthocc", "occluders", "tables"]
                                 + [f"{s}@{e}" for s in ("train", "evaluate") for e in ROWS])
    assert ran.index("occluders") < min(ran.index(f"train@{e}") for e in ROWS)
    table = (project / "reports/tables/dpeformer_table10.md").read_text()
    for label in ("ROA (SAM-library paste)", "Cut&Paste (same objects' boxes)", "Random erasing"):
        assert label in table
    assert (project / "data/occluders/contact_sheet.png").is_file()
