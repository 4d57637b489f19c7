"""Reports: the metrics.json contract, table values and bold, the four formats, figures, errors."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from occreid.errors import OccreidError
from occreid.io import write_json
from occreid.reports import (
    TablesConfig,
    TableSpec,
    build_reports,
    build_table,
    collect_metrics,
    load_metrics,
    make_metrics,
    subset_metrics,
    sweep_series,
    to_csv,
    to_html,
    to_latex,
    to_markdown,
)
from occreid.reports.spec import SweepSpec
from occreid.reports.tables import csv_header


def curve(r1: float, r5: float, r10: float, n: int = 50) -> list[float]:
    """A CMC curve through the given R1/R5/R10 (linear in between, then up to 1.0 at rank n)."""
    out = []
    for k in range(1, n + 1):
        if k <= 5:
            out.append(r1 + (r5 - r1) * (k - 1) / 4)
        elif k <= 10:
            out.append(r5 + (r10 - r5) * (k - 5) / 5)
        else:
            out.append(r10 + (1.0 - r10) * (k - 10) / (n - 10))
    out[0], out[4], out[9] = r1, r5, r10
    return out


def doc(name: str, dataset: str, method: str, all_: tuple, occluded: tuple | None = None) -> dict:
    """A metrics.json document; a tuple is (R1, R5, R10, mAP, mINP)."""
    subsets = {"all": subset_metrics(curve(*all_[:3]), all_[3], all_[4], 100, 0)}
    if occluded:
        subsets["occluded"] = subset_metrics(curve(*occluded[:3]), occluded[3], occluded[4], 60, 1)
    return make_metrics(name, dataset, method, subsets, {"all": curve(*all_[:3])})


DOCS = {
    "vit_occduke": doc("vit_occduke", "occluded_duke", "vit", (0.71234, 0.80, 0.85, 0.60, 0.30),
                       occluded=(0.55, 0.70, 0.75, 0.50, 0.20)),
    "dpmpp_occduke": doc("dpmpp_occduke", "occluded_duke", "dpmpp", (0.6891, 0.85, 0.85, 0.655, 0.31)),
    "vit_market": doc("vit_market", "market1501", "vit", (0.9, 0.95, 0.97, 0.8, 0.5)),
}
EXPERIMENTS = {name: {"dataset": d["dataset"], "method": d["method"], "overrides": {}} for name, d in DOCS.items()}


@pytest.fixture
def eval_dir(tmp_path: Path) -> Path:
    root = tmp_path / "reports" / "eval"
    for name, d in DOCS.items():
        write_json(root / name / "metrics.json", d)
    return root


def md_rows(text: str) -> dict[str, list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split(" | ")] for line in text.splitlines()
            if line.startswith("| ")]
    return {r[0]: r[1:] for r in rows}


# --- contract --------------------------------------------------------------------------------------------

def test_metrics_round_trip_and_subset_entry(tmp_path):
    entry = subset_metrics([0.5, 0.6, 0.6, 0.7, 0.8, 0.8, 0.8, 0.9, 0.9, 0.95, 1.0], 0.4, 0.1, 10, 2)
    assert entry == {"R1": 0.5, "R5": 0.8, "R10": 0.95, "mAP": 0.4, "mINP": 0.1, "num_queries": 10,
                     "num_skipped": 2}
    write_json(tmp_path / "m.json", DOCS["vit_occduke"])
    m = load_metrics(tmp_path / "m.json")
    assert (m.experiment, m.dataset, m.method) == ("vit_occduke", "occluded_duke", "vit")
    assert m.value("all", "R1") == 0.71234 and m.value("occluded", "mAP") == 0.5
    assert m.value("all", "R20") == pytest.approx(0.85 + 0.15 * 10 / 40)  # read off the CMC curve
    assert m.value("whole_body", "R1") is None and len(m.cmc["all"]) == 50


@pytest.mark.parametrize("mutate, problem", [
    (lambda d: d["subsets"]["all"].update(R1=71.2), "outside [0, 1]"),
    (lambda d: d["subsets"]["all"].pop("mAP"), "lacks mAP"),
    (lambda d: d.pop("cmc"), "'cmc' must be"),
    (lambda d: d["cmc"]["all"].__setitem__(0, 0.1), "differs from subsets.all.R1"),
    (lambda d: d["cmc"]["all"].__setitem__(20, 0.0), "decreases"),
    (lambda d: d["subsets"]["all"].update(num_queries=-1), "non-negative integer"),
])
def test_contract_violations_name_file_and_field(tmp_path, mutate, problem):
    import copy

    bad = copy.deepcopy(DOCS["vit_market"])
    mutate(bad)
    write_json(tmp_path / "metrics.json", bad)
    with pytest.raises(OccreidError) as err:
        load_metrics(tmp_path / "metrics.json")
    assert problem in err.value.message and str(tmp_path / "metrics.json") in err.value.message
    with pytest.raises(ValueError, match=re.escape(problem)):
        make_metrics(bad["experiment"], bad["dataset"], bad["method"], bad.get("subsets"), bad.get("cmc", {}))


def test_missing_metrics_name_every_file_and_the_stage_to_run(eval_dir):
    with pytest.raises(OccreidError) as err:
        collect_metrics(["vit_occduke", "clip_a", "clip_b"], eval_dir)
    msg = err.value.message
    assert str(eval_dir / "clip_a" / "metrics.json") in msg
    assert "clip_a, clip_b (2 of 3 missing)" in msg
    assert "dvc repro evaluate@clip_a ; dvc repro evaluate@clip_b" in msg


def test_metrics_of_another_experiment_are_refused(eval_dir):
    write_json(eval_dir / "copy" / "metrics.json", DOCS["vit_market"])
    with pytest.raises(OccreidError, match="holds the metrics of experiment 'vit_market', not 'copy'"):
        collect_metrics(["copy"], eval_dir)


# --- table values and formats ----------------------------------------------------------------------------

def main_table(eval_dir, **spec):
    metrics = collect_metrics(list(DOCS), eval_dir)
    return build_table(TableSpec(name="main", title="Main & more", **spec), EXPERIMENTS, metrics)


def test_markdown_values_percent_bold_best_and_merged_rows(eval_dir):
    table = main_table(eval_dir, subsets=["all"])
    text = to_markdown(table)
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert header == ("| Method | Occluded-Duke R1 | Occluded-Duke R5 | Occluded-Duke R10 | Occluded-Duke mAP "
                      "| Market-1501 R1 | Market-1501 R5 | Market-1501 R10 | Market-1501 mAP |")
    rows = md_rows(text)
    # vit's two experiments share the row "ViT"; DPM++ has no Market-1501 experiment; ties are both bold
    assert rows["ViT"] == ["**71.2**", "80.0", "**85.0**", "60.0", "90.0", "95.0", "97.0", "80.0"]
    assert rows["DPM++"] == ["68.9", "**85.0**", "**85.0**", "**65.5**", "-", "-", "-", "-"]
    assert table.experiments == [["vit_occduke", "vit_market"], ["dpmpp_occduke"]]


def test_default_groups_are_the_dataset_subset_pairs_with_data(eval_dir):
    table = main_table(eval_dir)  # Market-1501 has no "occluded" subset: no empty group for it
    assert [table.group_title(g) for g in table.groups] == [
        "Occluded-Duke (all)", "Occluded-Duke (occluded)", "Market-1501 (all)"]
    assert md_rows(to_markdown(table))["ViT"][4:8] == ["55.0", "70.0", "75.0", "50.0"]


def test_subset_groups_labels_and_missing_subsets(eval_dir):
    table = main_table(eval_dir, rows=["vit_occduke", "dpmpp_occduke"], columns=["R1", "mINP"],
                       row_labels={"vit_occduke": "ViT-B/16 | base"})
    assert [table.group_title(g) for g in table.groups] == ["Occluded-Duke (all)", "Occluded-Duke (occluded)"]
    rows = md_rows(to_markdown(table))
    assert rows[r"ViT-B/16 \| base"] == ["**71.2**", "30.0", "55.0", "20.0"]  # one value: no bold
    assert rows["DPM++"] == ["68.9", "**31.0**", "-", "-"]


def test_latex_is_structurally_sound(eval_dir):
    table = main_table(eval_dir, subsets=["all"], row_labels={"dpmpp_occduke": "DPM++ (α=0.5, 50%_x)"})
    tex = to_latex(table)
    unescaped = re.sub(r"\\[{}&%_$#]", "", tex)
    depth = 0
    for ch in unescaped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    envs = re.findall(r"\\(begin|end)\{(\w+)\}", tex)
    stack = []
    for kind, env in envs:
        if kind == "begin":
            stack.append(env)
        else:
            assert stack.pop() == env
    assert not stack and ("begin", "tabular") in envs
    order = [tex.index(k) for k in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert order == sorted(order)
    assert r"\begin{tabular}{l cccc cccc}" in tex
    assert r"\multicolumn{4}{c}{Occluded-Duke}" in tex and r"\cmidrule(lr){6-9}" in tex
    body = tex[tex.index(r"\midrule") + 8: tex.index(r"\bottomrule")].strip().splitlines()
    assert all(len(re.split(r"(?<!\\)&", line)) == 9 and line.endswith(r"\\") for line in body)
    assert body[0].startswith(r"ViT & \textbf{71.2} & 80.0 & \textbf{85.0}")
    assert r"DPM++ (α=0.5, 50\%\_x) & 68.9" in tex and "& -- & -- & -- & --" in tex
    assert r"\caption{Main \& more}" in tex


def test_csv_round_trips_through_pandas(eval_dir, tmp_path):
    table = main_table(eval_dir, subsets=["all"])
    (tmp_path / "t.csv").write_text(to_csv(table))
    frame = pd.read_csv(tmp_path / "t.csv")
    assert list(frame.columns) == csv_header(table)
    assert frame["row"].tolist() == ["ViT", "DPM++"]
    assert frame["occluded_duke/all/R1"].tolist() == [71.2, 68.9]
    assert frame["market1501/all/mAP"].iloc[0] == 80.0 and pd.isna(frame["market1501/all/mAP"].iloc[1])
    for i, row in enumerate(table.values):
        for j, v in enumerate(row):
            got = frame.iloc[i, j + 1]
            assert (pd.isna(got) and v is None) or got == round(100 * v, 1)


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.rows: list[list[str]] = []
        self.bold: list[str] = []
        self._in_b = False

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        if tag == "b":
            self._in_b = True
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"
        if tag == "b":
            self._in_b = False

    def handle_data(self, data):
        if self.stack and self.stack[-1] in ("td", "th", "b") and data.strip():
            self.rows[-1].append(data.strip())
        if self._in_b:
            self.bold.append(data)


def test_html_parses_with_groups_and_bold(eval_dir):
    table = main_table(eval_dir, subsets=["all"], row_labels={"dpmpp_occduke": "<DPM++>"})
    checker = _Checker()
    checker.feed(to_html(table))
    checker.close()
    assert checker.stack == []
    assert checker.rows[0] == ["Method", "Occluded-Duke", "Market-1501"]
    assert checker.rows[1] == ["R1", "R5", "R10", "mAP"] * 2
    assert checker.rows[2] == ["ViT", "71.2", "80.0", "85.0", "60.0", "90.0", "95.0", "97.0", "80.0"]
    assert checker.rows[3][0] == "<DPM++>"  # escaped in the source, text again after parsing
    assert checker.bold == ["71.2", "85.0", "85.0", "85.0", "65.5"]


# --- the whole folder ------------------------------------------------------------------------------------

def test_build_reports_writes_tables_figures_and_index(eval_dir, tmp_path, caplog):
    exps = dict(EXPERIMENTS)
    sweep_docs = {0.5: (0.6, 0.7, 0.8, 0.5, 0.2), 0.1: (0.5, 0.6, 0.7, 0.4, 0.1), 0.3: (0.7, 0.8, 0.9, 0.65, 0.3)}
    for alpha, vals in sweep_docs.items():
        name = f"dpmpp_a{int(alpha * 10)}"
        write_json(eval_dir / name / "metrics.json", doc(name, "occluded_duke", "dpmpp", vals))
        exps[name] = {"dataset": "occluded_duke", "method": "dpmpp",
                      "overrides": {"methods": {"dpmpp": {"alpha1": alpha}}}}
    sweep = TableSpec(name="alpha1", title="Sensitivity to α1", rows=["dpmpp_a5", "dpmpp_a1", "dpmpp_a3"],
                      sweep=SweepSpec(param="methods.dpmpp.alpha1", label="α1"))
    cfg = TablesConfig(tables=[TableSpec(name="main", rows=list(DOCS)), sweep])
    out = tmp_path / "reports" / "tables"
    (out / "stale.md").parent.mkdir(parents=True)
    (out / "stale.md").write_text("from an earlier run")
    with caplog.at_level("INFO"):
        written = build_reports(cfg, exps, eval_dir, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written) == sorted(
        [f"{t}.{ext}" for t in ("main", "alpha1") for ext in ("md", "tex", "csv", "html")]
        + ["cmc.png", "sweep_alpha1.png", "index.md", "index.html"])
    for png in ("cmc.png", "sweep_alpha1.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    index = (out / "index.md").read_text()
    assert "| alpha1 | Sensitivity to α1 | [md](alpha1.md)" in index and "![cmc.png](cmc.png)" in index
    assert str(out) in caplog.text
    # the sweep's rows are ordered by the swept value
    metrics = collect_metrics(sweep.rows, eval_dir)
    series = sweep_series(sweep, exps, metrics)
    assert [(x, round(v["mAP"], 3), round(v["R1"], 3)) for x, v in series["occluded_duke"]] == [
        (0.1, 0.4, 0.5), (0.3, 0.65, 0.7), (0.5, 0.5, 0.6)]
    assert md_rows((out / "alpha1.md").read_text())["dpmpp_a3"] == ["**70.0**", "**80.0**", "**90.0**", "**65.0**"]


def test_sweep_without_the_parameter_names_the_experiment(eval_dir):
    spec = TableSpec(name="s", rows=["vit_occduke"], sweep=SweepSpec(param="methods.vit.alpha"))
    with pytest.raises(OccreidError, match="experiment 'vit_occduke' sets no 'overrides.methods.vit.alpha'"):
        sweep_series(spec, EXPERIMENTS, collect_metrics(["vit_occduke"], eval_dir))
    with pytest.raises(OccreidError, match="params.yaml has no 'methods.vit.alpha'"):
        sweep_series(spec, EXPERIMENTS, collect_metrics(["vit_occduke"], eval_dir), base={"methods": {"vit": {}}})


def test_a_sweep_row_without_the_override_sits_at_the_base_value(eval_dir):
    exps = dict(EXPERIMENTS)
    for name, vals in (("pp_low", (0.5, 0.6, 0.7, 0.4, 0.1)), ("pp_main", (0.7, 0.8, 0.9, 0.65, 0.3))):
        write_json(eval_dir / name / "metrics.json", doc(name, "occluded_duke", "dpmpp", vals))
    exps["pp_low"] = {"dataset": "occluded_duke", "method": "dpmpp", "overrides": {"spt": {"alpha1": 0.5}}}
    exps["pp_main"] = {"dataset": "occluded_duke", "method": "dpmpp", "overrides": {}}  # the main row
    spec = TableSpec(name="a1", rows=["pp_main", "pp_low"], sweep=SweepSpec(param="spt.alpha1"))
    series = sweep_series(spec, exps, collect_metrics(spec.rows, eval_dir), base={"spt": {"alpha1": 0.7}})
    assert [(x, round(v["mAP"], 3)) for x, v in series["occluded_duke"]] == [(0.5, 0.4), (0.7, 0.65)]


@pytest.mark.parametrize("cfg, problem", [
    (TablesConfig(tables=[TableSpec(name="t", rows=["vit_occdukee"])]), "did you mean 'vit_occduke'"),
    (TablesConfig(tables=[TableSpec(name="t", columns=["R1", "Rank-1"])]), "unknown column 'Rank-1'"),
    (TablesConfig(tables=[TableSpec(name="index")]), "cannot be a file name"),
    (TablesConfig(tables=[TableSpec(name="t"), TableSpec(name="t")]), "two tables are named 't'"),
    (TablesConfig(tables=[TableSpec(name="t", datasets=["msmt17"])]), "no row is evaluated on dataset 'msmt17'"),
])
def test_bad_specs_are_params_errors(eval_dir, tmp_path, cfg, problem):
    with pytest.raises(OccreidError) as err:
        build_reports(cfg, EXPERIMENTS, eval_dir, tmp_path / "out")
    assert problem in err.value.message and "params.yaml" in err.value.message
    assert not (tmp_path / "out").exists()


def test_stale_metrics_disagreeing_with_params_are_refused(eval_dir, tmp_path):
    exps = {**EXPERIMENTS, "vit_market": {"dataset": "msmt17", "method": "vit"}}
    with pytest.raises(OccreidError, match="dataset is 'market1501' but params.yaml says .* 'msmt17'"):
        build_reports(TablesConfig(), exps, eval_dir, tmp_path / "out")


# --- seed replicates -------------------------------------------------------------------------------------

def test_seed_replicates_fold_into_one_row_with_mean_and_sample_sd(eval_dir, tmp_path):
    exps = dict(EXPERIMENTS)
    # vit_occduke (R1 71.234, mAP 60) plus two replicates: R1 66.234 and 76.234, mAP 50 and 70
    for k, (r1, m) in enumerate(((0.66234, 0.50), (0.76234, 0.70)), start=1):
        name = f"vit_occduke_seed{k}"
        write_json(eval_dir / name / "metrics.json", doc(name, "occluded_duke", "vit", (r1, 0.80, 0.85, m, 0.30)))
        exps[name] = {"dataset": "occluded_duke", "method": "vit", "replicate_of": "vit_occduke",
                      "overrides": {"train": {"seed": k}}}
    spec = TableSpec(name="t", datasets=["occluded_duke"], subsets=["all"], columns=["R1", "R5", "mAP"])
    runs = ["vit_occduke", "vit_occduke_seed1", "vit_occduke_seed2", "dpmpp_occduke", "vit_market"]
    table = build_table(spec, exps, collect_metrics(runs, eval_dir))
    # empty rows: every experiment but the replicates (vit on two datasets shares one row)
    assert table.experiments == [["vit_occduke", "vit_market"], ["dpmpp_occduke"]]
    assert table.runs == [3, 1]
    # R1: mean of 71.234, 66.234, 76.234 = 71.234, sample sd sqrt((5² + 5²) / 2) = 5; mAP 60 ± 10; R5 equal: sd 0
    assert table.shown()[0] == ["71.2 ± 5.0", "80.0 ± 0.0", "60.0 ± 10.0"]
    assert table.shown()[1] == ["68.9", "85.0", "65.5"]  # one run: no spread
    assert table.best() == {(0, 0), (1, 1), (1, 2)}  # bold goes by the mean
    md = md_rows(to_markdown(table))
    assert md["ViT (3 seeds)"] == ["**71.2 ± 5.0**", "80.0 ± 0.0", "60.0 ± 10.0"]
    assert "mean ± sample sd over its seeds" in to_markdown(table)
    assert r"71.2 $\pm$ 5.0" in to_latex(table) and "71.2 ± 5.0" in to_html(table)
    frame = pd.read_csv(__import__("io").StringIO(to_csv(table)))
    assert list(frame.columns[:4]) == ["row", "runs", "occluded_duke/all/R1", "occluded_duke/all/R1_sd"]
    assert frame.loc[0, "runs"] == 3 and frame.loc[0, "occluded_duke/all/mAP_sd"] == 10.0
    assert pd.isna(frame.loc[1, "occluded_duke/all/mAP_sd"])
    # a sweep point of a replicated row is the mean over its seeds
    sweep = TableSpec(name="s", rows=["vit_occduke"], sweep=SweepSpec(param="train.lr"))
    series = sweep_series(sweep, exps, collect_metrics(runs, eval_dir), base={"train": {"lr": 0.1}})
    assert [(x, round(v["mAP"], 6)) for x, v in series["occluded_duke"]] == [(0.1, 0.6)]
    # the reports stage reads the replicates' metrics without listing them as rows
    written = build_reports(TablesConfig(tables=[spec]), exps, eval_dir, tmp_path / "out")
    assert "ViT (3 seeds)" in (tmp_path / "out" / "t.md").read_text() and written
