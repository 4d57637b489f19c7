"""The saliency stage end to end on a tiny Market-layout folder: outputs, determinism, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from occreid.saliency import load_saliency
from saliency_fixtures import build_person_dataset
from stage_params import exit_code, stage_params
from stages import saliency as stage

BACKBONE = {"stride": 8}  # clip_tiny at 64 x 32, stride 8: a 7 x 3 patch grid
SALIENCY = {"backend": "classical", "img_size": [32, 16], "grid": [8, 4], "overlay_images": 4,
            "classical": {"method": "contrast"}}
PARAMS = stage_params(BACKBONE, saliency=SALIENCY)


def run_stage(tmp_path, params: dict, dataset: str = "synthocc") -> int:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return exit_code(stage.main, ["--dataset", dataset, "--params", str(tmp_path / "params.yaml"),
                                  "--prepared", str(tmp_path / "prepared"), "--out", str(tmp_path / "saliency"),
                                  "--device", "cpu"])


@pytest.fixture()
def prepared(tmp_path):
    build_person_dataset(tmp_path / "prepared" / "synthocc", ids=3, per_id=3)
    return tmp_path


def test_classical_stage_writes_maps_overlay_and_summary(prepared):
    assert run_stage(prepared, PARAMS) == 0
    out = prepared / "saliency" / "synthocc"
    sal = load_saliency(out / "saliency.npz")
    assert sal.maps.shape == (9, 8, 4) and sal.backend == "classical"
    assert sal.paths == sorted(sal.paths) and all(p.startswith("bounding_box_train/") for p in sal.paths)
    # the person box (pixel columns 4..11 of 16, rows 4..27 of 32) is the salient part
    mask = sal.maps.astype(np.float32) >= 0.5
    assert mask[:, 1:7, 1:3].mean() > 0.8 and mask[:, :, [0, 3]].mean() < 0.1  # ±1 px shifts blur the edges
    sheet = np.asarray(Image.open(out / "overlay.png"))
    assert sheet.shape == (3 + 35, 3 + 4 * (32 + 3), 3)  # 4 tiles of image|overlay (32 x 16 each)
    info = json.loads((out / "saliency.json").read_text())
    assert info["images"] == 9 and info["grid"] == [8, 4] and info["backend"] == "classical"


def test_stage_output_is_byte_identical_across_runs(prepared):
    assert run_stage(prepared, PARAMS) == 0
    out = prepared / "saliency" / "synthocc"
    first = {f: (out / f).read_bytes() for f in ("saliency.npz", "overlay.png", "saliency.json")}
    assert run_stage(prepared, PARAMS) == 0
    assert first == {f: (out / f).read_bytes() for f in first}


def test_default_grid_is_the_model_patch_grid(prepared):
    params = stage_params(BACKBONE, saliency={"img_size": None, "grid": None, "overlay_images": 0})  # 64 x 32
    assert run_stage(prepared, params) == 0
    sal = load_saliency(prepared / "saliency" / "synthocc" / "saliency.npz")
    assert sal.geometry.grid == (7, 3) and sal.geometry.stride == (8.0, 8.0)  # (64-16)/8+1, (32-16)/8+1


def test_attention_backend_runs_on_the_model_grid(prepared):
    params = stage_params(BACKBONE, saliency={"backend": "attention", "img_size": None, "grid": None,
                                              "overlay_images": 2})
    assert run_stage(prepared, params) == 0
    sal = load_saliency(prepared / "saliency" / "synthocc" / "saliency.npz")
    assert sal.maps.shape == (9, 7, 3) and sal.backend == "attention"


def test_bad_params_and_missing_dataset_exit_2(prepared, capsys):
    assert run_stage(prepared, stage_params(BACKBONE, saliency={"backend": "magic"})) == 2
    assert "saliency.backend" in capsys.readouterr().err
    assert run_stage(prepared, stage_params(BACKBONE, saliency={"gird": [8, 4]})) == 2
    assert "did you mean 'grid'" in capsys.readouterr().err
    assert run_stage(prepared, stage_params(BACKBONE, saliency={"grid": [0, 4]})) == 2
    err = capsys.readouterr().err
    assert "saliency.grid must be" in err and "params.yaml" in err
    assert run_stage(prepared, PARAMS, dataset="market1501") == 2  # no dpmpp experiment trains on it
    assert "no job 'saliency@market1501'" in capsys.readouterr().err
    (prepared / "prepared" / "synthocc").rename(prepared / "prepared" / "elsewhere")
    assert run_stage(prepared, PARAMS) == 2
    assert "dataset folder not found" in capsys.readouterr().err
