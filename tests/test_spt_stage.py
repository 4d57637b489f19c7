"""The spt_sets stage end to end (after the saliency stage) on a tiny Market-layout folder."""

from __future__ import annotations

import copy
import json

import numpy as np
import yaml
from PIL import Image

from occreid.augment import load_spt_sets
from occreid.augment.transfer import transfer_image
from occreid.data.datasets import create_dataset
from occreid.saliency.store import load_rgb
from saliency_fixtures import build_person_dataset
from stages import saliency as saliency_stage
from stages import spt_sets as stage
from stage_params import exit_code, stage_params

SPT = {"alpha1": 0.6, "alpha2": 0.5, "max_roll": 1, "candidates": 3, "seed": 1, "sheet_samples": 3}
PARAMS = stage_params(saliency={"img_size": [32, 16], "grid": [8, 4], "overlay_images": 2,
                                "classical": {"method": "contrast"}}, spt=SPT)


def run_both(tmp, params: dict = PARAMS) -> tuple[int, int]:
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--dataset", "synthocc", "--params", str(tmp / "params.yaml"), "--prepared", str(tmp / "prepared")]
    a = exit_code(saliency_stage.main, [*common, "--out", str(tmp / "saliency"), "--device", "cpu"])
    b = exit_code(stage.main, [*common, "--saliency", str(tmp / "saliency"), "--out", str(tmp / "spt")])
    return a, b


def test_spt_sets_end_to_end(tmp_path):
    root = build_person_dataset(tmp_path / "prepared" / "synthocc", ids=4, per_id=3)
    assert run_both(tmp_path) == (0, 0)
    out = tmp_path / "spt" / "synthocc" / "default"
    sets = load_spt_sets(out / "partners.npz")
    train = create_dataset("synthocc", root).train
    sets.check_records(train, root)
    assert sets.table.partner.shape == (12, 3) and sets.masks.shape == (12, 8, 4)
    assert np.array_equal(sets.pids, [r.pid for r in train])
    counts = sets.table.counts()
    assert (counts > 0).all()  # centred person boxes overlap enough
    for i in range(12):
        for j, r, s in sets.table.of(i):
            assert j != i and abs(r) <= 1 and s >= 0.6 - 1e-3
            assert sets.pids[j] != sets.pids[i]  # 9 images of other identities exist: they fill the 3 places
    info = json.loads((out / "spt.json").read_text())
    assert info["images"] == 12 and info["with_partners"] == 12 and info["other_identity_share"] == 1.0
    assert info["config"]["alpha1"] == 0.6
    sheet = np.asarray(Image.open(out / "transfer_sheet.png"))
    assert sheet.shape == (3 + 3 * (32 + 3), 3 + 4 * (16 + 3), 3)
    # the first sheet row is image 0 with its first partner
    j, r, _ = sets.table.of(0)[0]
    expected, _ = transfer_image(load_rgb(train[0].path, (32, 16)), load_rgb(train[j].path, (32, 16)),
                                 sets.masks[j], r, sets.geometry)
    assert np.array_equal(sheet[3:35, 3 + 3 * 19:3 + 3 * 19 + 16], expected)


def test_same_params_same_bytes_other_seed_other_table(tmp_path):
    build_person_dataset(tmp_path / "prepared" / "synthocc", ids=4, per_id=3)
    assert run_both(tmp_path) == (0, 0)
    out = tmp_path / "spt" / "synthocc" / "default"
    first = {f: (out / f).read_bytes() for f in ("partners.npz", "transfer_sheet.png", "spt.json")}
    assert run_both(tmp_path) == (0, 0)
    assert first == {f: (out / f).read_bytes() for f in first}
    params = stage_params(saliency=PARAMS["saliency"], spt={**SPT, "candidates": 2, "seed": 7})
    assert run_both(tmp_path, params) == (0, 0)
    assert (out / "partners.npz").read_bytes() != first["partners.npz"]


def test_a_variant_is_built_with_its_experiments_override_beside_the_default(tmp_path, capsys):
    build_person_dataset(tmp_path / "prepared" / "synthocc", ids=4, per_id=3)
    params = copy.deepcopy(PARAMS)
    sweep_row = copy.deepcopy(params["experiments"]["dpmpp"])
    sweep_row["overrides"]["spt"] = {"alpha1": 0.9, "max_roll": 0}
    params["experiments"]["dpmpp_strict"] = sweep_row
    assert run_both(tmp_path, params) == (0, 0)  # the default table
    variant = "alpha1-0p9_max_roll-0"
    code = exit_code(stage.main, ["--dataset", "synthocc", "--variant", variant, "--params", str(tmp_path / "params.yaml"),
                                  "--prepared", str(tmp_path / "prepared"), "--saliency", str(tmp_path / "saliency"),
                                  "--out", str(tmp_path / "spt")])
    assert code == 0
    default = load_spt_sets(tmp_path / "spt" / "synthocc" / "default" / "partners.npz")
    strict = load_spt_sets(tmp_path / "spt" / "synthocc" / variant / "partners.npz")
    assert strict.config == {**default.config, "alpha1": 0.9, "max_roll": 0}
    # the same masks, a stricter acceptance: every strict partner scores >= 0.9 with no roll
    assert np.array_equal(strict.masks, default.masks)
    kept = strict.table.partner >= 0
    assert (strict.table.score[kept] >= 0.9 - 1e-3).all() and (strict.table.roll[kept] == 0).all()
    info = json.loads((tmp_path / "spt" / "synthocc" / variant / "spt.json").read_text())
    assert info["variant"] == variant and info["config"]["alpha1"] == 0.9
    capsys.readouterr()
    code = exit_code(stage.main, ["--dataset", "synthocc", "--variant", "alpha1-0p8", "--params",
                                  str(tmp_path / "params.yaml"), "--prepared", str(tmp_path / "prepared"),
                                  "--saliency", str(tmp_path / "saliency"), "--out", str(tmp_path / "spt")])
    assert code == 2  # no experiment trains with alpha1 0.8: no such job, and the message says which exist
    err = capsys.readouterr().err
    assert "no job 'spt_sets@synthocc-alpha1-0p8'" in err and f"spt_sets@synthocc-{variant}" in err


def test_saliency_of_other_images_is_refused(tmp_path, capsys):
    root = build_person_dataset(tmp_path / "prepared" / "synthocc", ids=4, per_id=3)
    assert run_both(tmp_path) == (0, 0)
    (root / "bounding_box_train" / "0001_c1s1_000000_01.jpg").unlink()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    code = exit_code(stage.main, ["--dataset", "synthocc", "--params", str(tmp_path / "params.yaml"),
                                  "--prepared", str(tmp_path / "prepared"), "--saliency", str(tmp_path / "saliency"),
                                  "--out", str(tmp_path / "spt")])
    assert code == 2
    err = capsys.readouterr().err
    assert "other images" in err and "stages.saliency" in err


def test_missing_saliency_and_bad_params_exit_2(tmp_path, capsys):
    build_person_dataset(tmp_path / "prepared" / "synthocc", ids=2, per_id=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(stage_params(spt={"alpha1": 2.0})))
    args = ["--dataset", "synthocc", "--params", str(tmp_path / "params.yaml"), "--prepared",
            str(tmp_path / "prepared"), "--saliency", str(tmp_path / "saliency"), "--out", str(tmp_path / "spt")]
    assert exit_code(stage.main, args) == 2
    err = capsys.readouterr().err
    assert "spt.alpha1 must be in [0, 1]" in err and "params.yaml" in err  # the value and the file
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(stage_params()))
    assert exit_code(stage.main, args) == 2
    assert "saliency file not found" in capsys.readouterr().err
