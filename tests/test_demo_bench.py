"""benchmarks/demo_bench.py's arithmetic: stage wall times from DVC's time-stamped output, the times stages record
themselves, the per-stage and per-kind tables (medians over runs), and reading a saved log back."""

from __future__ import annotations

from benchmarks.demo_bench import collect, read_log, report, stage_walls
from occreid.io import write_json

LINES = [
    (0.5, "Running stage 'prepare_data@synthocc':"),
    (0.6, "> python -m stages.prepare_data --dataset synthocc"),
    (4.0, "Running stage 'train@vit':"),
    (9.0, "epoch 1/2: loss 3"),
    (20.0, "Running stage 'evaluate@vit':"),
    (23.5, "Running stage 'tables':"),
]


def test_stage_walls_run_from_one_stage_line_to_the_next():
    walls = stage_walls(LINES, end=30.0)
    assert walls == {"prepare_data@synthocc": 3.5, "train@vit": 16.0, "evaluate@vit": 3.5, "tables": 6.5}


def history(root, seconds=(5.0, 7.0)):
    path = root / "data/train/vit/history.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("epoch,loss,seconds\n" + "".join(f"{i + 1},1.0,{s}\n" for i, s in enumerate(seconds)))


def test_collect_reads_what_the_stages_measured(tmp_path):
    history(tmp_path)  # the training loop: the sum of its epochs
    write_json(tmp_path / "reports/eval/vit/metrics.json", {"seconds": 1.5})
    run = collect(LINES, 30.0, tmp_path)
    assert run["inside"] == {"prepare_data@synthocc": None, "train@vit": 12.0, "evaluate@vit": 1.5, "tables": None}
    assert run["first"] == 0.5 and run["wall"] == 30.0


def test_report_medians_over_runs(tmp_path, capsys):
    history(tmp_path)
    fast = collect(LINES, 30.0, tmp_path)
    slow = collect([(t * 2, text) for t, text in LINES], 60.0, tmp_path)
    third = collect([(t * 3, text) for t, text in LINES], 90.0, tmp_path)
    report([fast, slow, third])
    out = capsys.readouterr().out
    assert "| train@vit | 32.0 | 12.0 | 20.0 |" in out  # median wall of 16, 32, 48
    assert "| train | 1 | 32.0 | 32.0 | 12.0 | 20.0 |" in out
    assert "total wall 60.0 s (1.0 min): stages 59.0 s, before the first stage (occreid profile, dvc start-up) 1.0 s" in out


def test_saved_log_reads_back(tmp_path):
    log = tmp_path / "demo_bench.log"
    log.write_text("".join(f"{t:.3f}\t{text}\n" for t, text in LINES) + "30.000\t[demo_bench] end\n")
    lines, wall = read_log(log)
    assert wall == 30.0 and stage_walls(lines, wall) == stage_walls(LINES, 30.0)
