"""One preset at paper size through the real DAG (the rest: ``python benchmarks/paper_smoke.py``): DPM's
Occluded-Duke preset builds ViT-B/16 at 256×128 with stride 11, trains 2 iterations with its batch composition
(P cut to 2, K = 4) and evaluates, on a tiny synthocc rendered at 256×128."""

from __future__ import annotations

from benchmarks.paper_smoke import ROOT, run_preset


def test_dpm_occluded_duke_runs_at_paper_size(tmp_path):
    row = run_preset(ROOT / "workflow" / "presets" / "dpm_occluded_duke.yaml", tmp_path / "p")
    assert row["backbone"] == "vit_base_patch16_224 s11"
    assert row["iterations"] == 2  # 2 ids x 10 training images, K = 4 -> 2 chunks each -> 2 batches of P = 2
    assert 0.0 <= row["R1"] <= 1.0
    assert row["peak_mb"] > 500  # a ViT-B/16 really was built (its weights alone are ~350 MB)
