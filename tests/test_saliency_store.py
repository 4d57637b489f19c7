"""Saliency storage round trips (float16 tolerance), byte-identical files, clear errors, overlay sheets."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from occreid.errors import OccreidError
from occreid.saliency.geometry import PatchGeometry
from occreid.saliency.store import (SaliencyMaps, compose_sheet, evenly_spaced, heat_overlay, load_saliency,
                                    overlay_sheet, relative_paths, save_png, save_saliency, write_npz)

GEOM = PatchGeometry((32, 16), (4, 2), 8, 8)


def maps(n: int = 5, seed: int = 0) -> SaliencyMaps:
    m = np.random.default_rng(seed).random((n, 4, 2))
    return SaliencyMaps(m, [f"bounding_box_train/{k:04d}_c1s1_000001_01.jpg" for k in range(n)], GEOM, "classical")


def test_round_trip_within_float16_precision(tmp_path):
    sal = maps()
    raw = np.random.default_rng(0).random((5, 4, 2))
    save_saliency(tmp_path / "s.npz", sal)
    back = load_saliency(tmp_path / "s.npz")
    assert back.maps.dtype == np.float16 and back.maps.shape == (5, 4, 2)
    np.testing.assert_allclose(back.maps.astype(np.float64), raw, atol=5e-4)  # float16: 11 bits of mantissa
    assert back.paths == sal.paths and back.geometry == GEOM and back.backend == "classical"


def test_same_maps_give_identical_bytes_and_no_timestamps(tmp_path):
    save_saliency(tmp_path / "a.npz", maps())
    save_saliency(tmp_path / "b.npz", maps())
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert sorted(zf.namelist()) == ["backend.npy", "geometry.npy", "maps.npy", "paths.npy"]


def test_write_npz_is_readable_by_numpy(tmp_path):
    write_npz(tmp_path / "x.npz", {"b": np.arange(3, dtype=np.int16), "a": np.array(["x", "yz"])})
    with np.load(tmp_path / "x.npz", allow_pickle=False) as d:
        assert d["b"].tolist() == [0, 1, 2] and d["b"].dtype == np.int16
        assert d["a"].tolist() == ["x", "yz"]


def test_missing_and_corrupt_files_are_user_errors(tmp_path):
    with pytest.raises(OccreidError, match="saliency file not found") as e:
        load_saliency(tmp_path / "none.npz")
    assert "stages.saliency" in e.value.fix
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(OccreidError, match="cannot read saliency file"):
        load_saliency(tmp_path / "bad.npz")
    write_npz(tmp_path / "partial.npz", {"maps": np.zeros((1, 4, 2), np.float16)})
    with pytest.raises(OccreidError, match="lacks arrays"):
        load_saliency(tmp_path / "partial.npz")


def test_maps_off_the_grid_are_refused():
    with pytest.raises(ValueError):
        SaliencyMaps(np.zeros((2, 3, 2)), ["a", "b"], GEOM, "classical")
    with pytest.raises(ValueError):
        SaliencyMaps(np.zeros((2, 4, 2)), ["a"], GEOM, "classical")


def test_relative_paths(tmp_path):
    (tmp_path / "d" / "train").mkdir(parents=True)
    assert relative_paths([str(tmp_path / "d" / "train" / "x.jpg")], tmp_path / "d") == ["train/x.jpg"]
    with pytest.raises(OccreidError, match="not inside"):
        relative_paths([str(tmp_path / "x.jpg")], tmp_path / "d")


def test_compose_sheet_by_hand():
    a = np.zeros((2, 2, 3), np.uint8)
    b = np.full((2, 2, 3), 7, np.uint8)
    sheet = compose_sheet([[a, b]], pad=1, background=255)
    assert sheet.shape == (4, 7, 3)  # 1 + 1*(2+1) rows, 1 + 2*(2+1) columns
    assert (sheet[1:3, 1:3] == 0).all() and (sheet[1:3, 4:6] == 7).all()
    assert (sheet[0] == 255).all() and (sheet[:, 3] == 255).all()


def test_heat_overlay_alpha_zero_is_the_image_and_hot_is_red():
    rgb = np.random.default_rng(1).integers(0, 256, (3, 2, 3), dtype=np.uint8)
    assert (heat_overlay(rgb, np.ones((3, 2)), alpha=0.0) == rgb).all()
    hot = heat_overlay(np.zeros((1, 1, 3), np.uint8), np.ones((1, 1)), alpha=1.0)[0, 0]
    assert hot[0] > 100 and hot[2] < 50  # jet(1.0) is dark red


def test_overlay_sheet_layout_and_png(tmp_path):
    sal = maps(3)
    images = [np.full((32, 16, 3), 10 * k, np.uint8) for k in range(3)]
    sheet = overlay_sheet(images, sal.maps, GEOM, per_row=2)
    assert sheet.shape == (3 + 2 * (32 + 3), 3 + 2 * (32 + 3), 3)  # tiles are image|overlay = 32 x 32
    save_png(tmp_path / "o.png", sheet)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), sheet)


def test_evenly_spaced():
    assert evenly_spaced(10, 3) == [0, 4, 9]  # round(i * 9 / 2): 0, round(4.5) = 4 (to even), 9
    assert evenly_spaced(7, 4) == [0, 2, 4, 6]
    assert evenly_spaced(3, 8) == [0, 1, 2]
    assert evenly_spaced(0, 4) == []
