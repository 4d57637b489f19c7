"""The ``tables`` stage command: reads params.yaml and reports/eval, writes reports/tables, exits 2 on errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from occreid.io import write_json
from occreid.reports import TablesConfig
from stages import common
from stages import tables as stage

from test_tables import DOCS, EXPERIMENTS  # noqa: E402  (tests/ is on sys.path under pytest)

PARAMS = {
    "datasets": {"occluded_duke": {}, "market1501": {}},
    "methods": {"vit": {}, "dpmpp": {}},
    "experiments": EXPERIMENTS,
    "tables": {"decimals": 2, "tables": [{"name": "occduke", "title": "Occluded-Duke",
                                          "rows": ["vit_occduke", "dpmpp_occduke"], "subsets": ["all"]}]},
}


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    monkeypatch.chdir(tmp_path)
    # Whole-file validation (stages.common.validate) needs every section's schema; it is tested with them.
    monkeypatch.setattr(common, "validate", lambda params, source=None: None)
    return tmp_path


def test_tables_section_schema_is_registered():
    assert common.schema(common.SECTIONS["tables"]) is TablesConfig


def test_stage_writes_the_declared_tables(project, caplog):
    for name, d in DOCS.items():
        write_json(project / "reports" / "eval" / name / "metrics.json", d)
    with caplog.at_level("INFO"):
        stage.main([])
    out = project / "reports" / "tables"
    assert {p.name for p in out.iterdir()} == {"occduke.md", "occduke.tex", "occduke.csv", "occduke.html",
                                               "cmc.png", "index.md", "index.html"}
    assert "| ViT | **71.23** | 80.00 |" in (out / "occduke.md").read_text()  # decimals: 2
    assert str(out.resolve()) in caplog.text


def test_stage_missing_metrics_exit_2_with_the_job_to_run(project, capsys):
    write_json(project / "reports" / "eval" / "vit_occduke" / "metrics.json", DOCS["vit_occduke"])
    with pytest.raises(SystemExit) as exit_:
        common.run(stage.main, ["--out", "elsewhere"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "reports/eval/dpmpp_occduke/metrics.json" in err and "dvc repro evaluate@dpmpp_occduke" in err
    assert not (project / "elsewhere").exists()


def test_tables_section_from_yaml_with_a_sweep():
    from stages.params import from_dict
    from occreid.errors import OccreidError

    section = yaml.safe_load("""
decimals: 1
tables:
  - name: alpha1
    rows: [a, b]
    row_labels: {a: "α1 = 0.1"}
    sweep: {param: methods.dpmpp.alpha1, label: "α1"}
""")
    cfg = from_dict(TablesConfig, section, key="tables")
    spec = cfg.tables[0]
    assert (spec.rows, spec.row_labels, spec.columns) == (["a", "b"], {"a": "α1 = 0.1"}, ["R1", "R5", "R10", "mAP"])
    assert (spec.sweep.param, spec.sweep.label, spec.sweep.metrics) == ("methods.dpmpp.alpha1", "α1", ["mAP", "R1"])
    with pytest.raises(OccreidError, match="unknown params key 'tables.tables\\[0\\].colums'"):
        from_dict(TablesConfig, {"tables": [{"name": "t", "colums": ["R1"]}]}, key="tables")
