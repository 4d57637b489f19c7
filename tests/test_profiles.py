"""Profiles (stages/profiles.py): the fast and the full demo from one params.yaml, switching re-runs only what the
other profile adds, validation, the tables a profile renders, and `occreid profile`."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from occreid.cli import main as cli
from occreid.errors import OccreidError
from occreid.io import write_json
from stages import common, render_dvc
from stages import tables as tables_stage
from stages.params import read_yaml
from stages.profiles import selected_experiments, tables_in_profile, unknown_names
from stages.registry import build_plan

from test_tables import DOCS, EXPERIMENTS  # noqa: E402  (tests/ is on sys.path under pytest)

ROOT = Path(__file__).resolve().parents[1]
DEMO = read_yaml(ROOT / "params.yaml")
FAST_ROWS = {"vit", "clipreid", "dpm", "dpmpp"}  # the main table: every method


def plan_of(profile):
    return build_plan({**copy.deepcopy(DEMO), "profile": profile})


def test_fast_demo_keeps_every_method_and_the_ablation_tables():
    fast = plan_of("fast").experiments
    methods = {e.method for e in plan_of("full").experiments.values()}
    assert {e.method for e in fast.values()} == methods  # every method of the demo
    tables = {t["name"]: t["rows"] for t in DEMO["tables"]["tables"]}
    for name in ("main", "dpm_table3", "dpmpp_ablation"):
        assert set(tables[name]) <= set(fast), name
    assert not any(DEMO["experiments"][e].get("replicate_of") for e in fast)  # seed 0 only
    assert len(fast) < len(plan_of("full").experiments) == len(DEMO["experiments"])
    assert [j.id for j in plan_of("fast").jobs_of("spt_sets")] == ["spt_sets@synthocc-default"]  # no sweep tables


def test_switching_profiles_changes_no_shared_job():
    """A job in both profiles has the same command, dependencies, outputs and tracked params, so DVC finds it
    done after a switch; only the tables job (its metrics inputs) differs."""
    fast, full = ({j.id: j for j in plan_of(p).jobs} for p in ("fast", "full"))
    assert set(fast) < set(full)
    for job_id, job in fast.items():
        other = full[job_id]
        same = (job.cmd, job.outs, job.params) == (other.cmd, other.outs, other.params)
        assert same and (job.deps == other.deps or job_id == "tables"), job_id
    assert set(fast["tables"].deps) < set(full["tables"].deps)
    assert "profile" not in fast["train@vit"].params and "profiles" not in fast["tables"].params


def test_committed_dvc_yaml_is_the_active_profile():
    assert DEMO["profile"] == "fast"
    rendered = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert set(rendered["stages"]["train"]["foreach"]) == set(plan_of("fast").experiments)


def test_selection_rules_and_errors():
    params = copy.deepcopy(DEMO)
    params["experiments"]["mine"] = params["experiments"]["vit"]  # added by hand / a preset: runs everywhere
    assert "mine" in selected_experiments(params)
    assert selected_experiments({**params, "profile": None}) == list(params["experiments"])
    with pytest.raises(OccreidError, match="'fastt'.*not one of the profiles") as e:
        selected_experiments({**params, "profile": "fastt"})
    assert "did you mean 'fast'" in e.value.message
    typo = copy.deepcopy(params)
    typo["profiles"]["fast"]["leave_out"].append("vti")  # no such experiment: ignored, but pointed out
    assert selected_experiments(typo) == selected_experiments(params)
    assert unknown_names(typo) == {"fast": ["vti"]} and unknown_names(params) == {}
    bad = copy.deepcopy(params)
    bad["profiles"]["full"]["leave_out"] = "vit"  # checked even when another profile is active
    with pytest.raises(OccreidError, match="profiles.full.leave_out' must be a list"):
        selected_experiments(bad)
    everything = copy.deepcopy(params)
    everything["profiles"]["fast"]["leave_out"] = list(params["experiments"])
    with pytest.raises(OccreidError, match="leaves out every experiment"):
        selected_experiments(everything)
    typo = copy.deepcopy(params)
    typo["profiles"]["fast"] = {"leave": []}
    with pytest.raises(OccreidError, match="unknown key 'leave'"):
        selected_experiments(typo)
    with pytest.raises(OccreidError, match="profile"):
        common.validate({**params, "profile": "nope"})


def test_tables_of_a_profile():
    class Spec:
        def __init__(self, name, rows):
            self.name, self.rows = name, rows

    specs = [Spec("a", ["x", "y"]), Spec("b", ["x", "z"]), Spec("all", [])]
    kept, dropped = tables_in_profile(specs, ["x", "y"])
    assert [s.name for s in kept] == ["a", "all"] and dropped == ["b"]


def test_tables_stage_renders_the_profiles_tables(tmp_path, monkeypatch):
    params = {"datasets": {"occluded_duke": {}, "market1501": {}}, "methods": {"vit": {}, "dpmpp": {}},
              "experiments": EXPERIMENTS, "profile": "small",
              "profiles": {"small": {"leave_out": ["vit_market"]}, "all": {"leave_out": []}},
              "tables": {"tables": [{"name": "occduke", "rows": ["vit_occduke", "dpmpp_occduke"]},
                                    {"name": "market", "rows": ["vit_market"]}]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common, "validate", lambda params, source=None: None)  # schemas are tested elsewhere
    for name in ("vit_occduke", "dpmpp_occduke"):  # no metrics for vit_market: the profile does not run it
        write_json(tmp_path / "reports" / "eval" / name / "metrics.json", DOCS[name])
    assert {j.id for j in build_plan(params).jobs if j.stage.name == "evaluate"} == {
        "evaluate@vit_occduke", "evaluate@dpmpp_occduke"}
    tables_stage.main([])
    names = {p.name for p in (tmp_path / "reports" / "tables").iterdir()}
    assert "occduke.md" in names and "market.md" not in names


def test_profile_command_switches_params_and_dvc_yaml(tmp_path, capsys):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    render_dvc.write(tmp_path)
    assert cli(["profile", "--root", str(tmp_path)]) == 0
    fast, total = len(plan_of("fast").experiments), len(DEMO["experiments"])
    assert f"* fast: {fast} of {total} experiments\n" in capsys.readouterr().out
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("leave_out: [dpm_t4_baseline_a,", "leave_out: [vti, dpm_t4_baseline_a,"))
    assert cli(["profile", "--root", str(tmp_path)]) == 0
    assert f"* fast: {fast} of {total} experiments (leave_out names no experiment: vti)" in capsys.readouterr().out
    (tmp_path / "params.yaml").write_text(text)
    assert cli(["profile", "full", "--root", str(tmp_path)]) == 0
    text = (tmp_path / "params.yaml").read_text()
    assert "profile: full\n" in text and "# Which experiments `dvc repro` runs" in text  # comments kept
    assert text.replace("profile: full\n", "profile: fast\n") == (ROOT / "params.yaml").read_text()
    train = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["train"]["foreach"]
    assert len(train) == len(DEMO["experiments"])
    render_dvc.check(tmp_path)  # dvc.yaml follows params.yaml
    assert cli(["profile", "fast", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    assert (tmp_path / "dvc.yaml").read_text() == (ROOT / "dvc.yaml").read_text()
    assert cli(["profile", "fastest", "--root", str(tmp_path)]) == 2
    assert "did you mean 'fast'" in capsys.readouterr().err
    assert (tmp_path / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()  # nothing written
