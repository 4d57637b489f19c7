"""The occluder library: known objects cut exactly, filters, determinism, the manifest, and load checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from occluder_fixtures import BLUE_BOX, RED_BOX, classical_cfg, photo_folder, scene, tiny_sam_cfg
from occreid.config import from_dict
from occreid.errors import OccreidError
from occreid.occluders import (MASK_BACKENDS, Candidate, OccluderLibrary, OccludersConfig, build_library,
                               create_mask_backend, write_library)
from occreid.occluders.sheet import PAD
from occreid.occluders.sources import SKIMAGE_PHOTOS, list_sources


@pytest.fixture
def scene_only(tmp_path):
    folder = tmp_path / "scene"
    folder.mkdir()
    Image.fromarray(scene()).save(folder / "scene.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("photos") / "src")


def folder_bytes(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_known_objects_are_cut_exactly_and_the_background_is_filtered(scene_only, tmp_path):
    build_library(classical_cfg(scene_only), tmp_path / "lib")
    lib = OccluderLibrary.load(tmp_path / "lib")
    # Both objects fill their box (score 1.0), so the larger (blue, 300 px) comes first; the grey background
    # touches the border and is dropped.
    assert [e["bbox"] for e in lib.entries] == [list(BLUE_BOX), list(RED_BOX)]
    assert [(e["area"], e["aspect"], e["fill"]) for e in lib.entries] == [(300, 3.0, 1.0), (256, 1.0, 1.0)]
    assert [e["area_fraction"] for e in lib.entries] == [round(300 / (64 * 80), 6), round(256 / (64 * 80), 6)]
    assert {e["source"] for e in lib.entries} == {"scene.png"}
    red = np.asarray(lib.object(1))
    assert red.shape == (16, 16, 4) and (red[..., :3] == (220, 30, 30)).all() and (red[..., 3] == 255).all()
    assert lib.size(0) == (30, 10)


@pytest.mark.parametrize("filters, kept", [
    ({"min_area": 257 / (64 * 80)}, [BLUE_BOX]),  # the red square (256 px) is too small
    ({"aspect": [0.5, 2.0]}, [RED_BOX]),  # the blue bar is 3 times as tall as wide
    ({"max_per_image": 1}, [BLUE_BOX]),  # the best-ranked one
    ({"min_side": 11}, [RED_BOX]),  # the bar is 10 px wide
])
def test_filters_keep_what_they_say(scene_only, tmp_path, filters, kept):
    build_library(classical_cfg(scene_only, **filters), tmp_path / "lib")
    assert [tuple(e["bbox"]) for e in OccluderLibrary.load(tmp_path / "lib").entries] == kept


def test_alpha_is_the_mask_and_the_rgb_the_whole_box(photos, tmp_path):
    build_library(classical_cfg(photos), tmp_path / "lib")
    lib = OccluderLibrary.load(tmp_path / "lib")
    assert len(lib) > 5 and {e["source"] for e in lib.entries} <= {"a_scene.png", "b_coffee.jpg", "more/c_cat.png"}
    for i, e in enumerate(lib.entries):
        obj = np.asarray(lib.object(i))
        x, y, w, h = e["bbox"]
        assert obj.shape == (h, w, 4)  # no downscale at this size (object_max_side 256)
        assert np.count_nonzero(obj[..., 3]) == e["area"] and set(np.unique(obj[..., 3])) <= {0, 255}
        alpha = obj[..., 3] > 0  # a tight box: the mask touches all four sides
        assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any()
        assert e["sha256"] == hashlib.sha256((lib.folder / e["file"]).read_bytes()).hexdigest()
        assert e["size"] == [h, w] and e["fill"] == round(e["area"] / (w * h), 6)
    manifest = json.loads((tmp_path / "lib" / "manifest.json").read_text())
    assert [s["name"] for s in manifest["build"]["sources"]] == ["a_scene.png", "b_coffee.jpg", "more/c_cat.png"]
    assert sum(s["kept"] for s in manifest["build"]["sources"]) == len(lib)
    assert from_dict(OccludersConfig, manifest["build"]["config"]) == classical_cfg(photos)


def test_objects_are_downscaled_to_object_max_side(photos, tmp_path):
    build_library(classical_cfg(photos, object_max_side=12), tmp_path / "lib")
    lib = OccluderLibrary.load(tmp_path / "lib")
    big = [i for i, e in enumerate(lib.entries) if max(e["bbox"][2:]) > 12]
    assert big and all(max(lib.size(i)) == 12 for i in big)
    i = big[0]
    w, h = lib.entries[i]["bbox"][2:]
    assert lib.size(i) == (max(1, round(h * 12 / max(w, h))), max(1, round(w * 12 / max(w, h))))


@pytest.mark.parametrize("make_cfg", [classical_cfg, tiny_sam_cfg], ids=["classical", "tiny_sam"])
def test_building_twice_gives_byte_identical_libraries(photos, tmp_path, make_cfg):
    rng_before = torch.get_rng_state()
    build_library(make_cfg(photos), tmp_path / "one")
    build_library(make_cfg(photos), tmp_path / "two")
    one, two = folder_bytes(tmp_path / "one"), folder_bytes(tmp_path / "two")
    assert one == two and "manifest.json" in one and "contact_sheet.png" in one
    assert len(OccluderLibrary.load(tmp_path / "one")) >= 1
    assert torch.equal(torch.get_rng_state(), rng_before)  # the tiny SAM's seeded init leaves the global RNG alone


def test_total_cap_is_a_seeded_subset_in_library_order(photos, tmp_path):
    build_library(classical_cfg(photos), tmp_path / "all")
    full = OccluderLibrary.load(tmp_path / "all").entries
    shas = [e["sha256"] for e in full]
    picks = []
    for seed in (0, 0, 1):
        cfg = dataclasses.replace(classical_cfg(photos, max_objects=4), seed=seed)
        build_library(cfg, tmp_path / f"cap{len(picks)}")
        capped = OccluderLibrary.load(tmp_path / f"cap{len(picks)}").entries
        idx = [shas.index(e["sha256"]) for e in capped]
        assert len(idx) == 4 and idx == sorted(idx)  # a subset, in the uncapped order
        assert [e["file"] for e in capped] == [f"objects/{i:05d}.png" for i in range(4)]
        picks.append(idx)
    assert picks[0] == picks[1] and picks[0] != picks[2]
    assert json.loads((tmp_path / "cap0" / "manifest.json").read_text())["build"]["before_cap"] == len(full)


def test_contact_sheet_has_one_cell_per_shown_object(scene_only, tmp_path):
    build_library(classical_cfg(scene_only), tmp_path / "lib")
    with Image.open(tmp_path / "lib" / "contact_sheet.png") as sheet:
        assert sheet.size == (PAD + 2 * (16 + PAD), PAD + 16 + PAD)  # two objects in one row of 16 px cells
        cell = np.asarray(sheet.convert("RGB"))[PAD:PAD + 16, PAD + 16 + PAD:PAD + 2 * (16 + PAD) - PAD]
    assert (cell == (220, 30, 30)).all()  # the red square fills its cell


def test_no_kept_mask_is_an_error_and_leaves_nothing_behind(scene_only, tmp_path):
    with pytest.raises(OccreidError, match="no mask of the 1 source image") as e:
        build_library(classical_cfg(scene_only, min_area=0.5, max_area=0.6), tmp_path / "lib")
    assert "occluders.filters" in e.value.fix
    assert list(tmp_path.iterdir()) == [scene_only]  # no library, no .partial folder


def test_sources_are_sorted_images_only(photos, tmp_path):
    assert [s.name for s in list_sources(photos)] == ["a_scene.png", "b_coffee.jpg", "more/c_cat.png"]
    assert [s.name for s in list_sources(photos, max_images=2)] == ["a_scene.png", "b_coffee.jpg"]
    default = list_sources(None)
    assert [s.name for s in default] == [f"skimage:{n}" for n in SKIMAGE_PHOTOS]
    rgb = default[0].read()
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    with pytest.raises(OccreidError, match="source folder not found"):
        list_sources(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OccreidError, match="no images"):
        list_sources(tmp_path / "empty")


def tampered(tmp_path, scene_only, how):
    build_library(classical_cfg(scene_only), tmp_path / "lib")
    how(tmp_path / "lib")
    return tmp_path / "lib"


def _edit_manifest(change):
    def edit(folder):
        doc = json.loads((folder / "manifest.json").read_text())
        change(doc)
        (folder / "manifest.json").write_text(json.dumps(doc))
    return edit


@pytest.mark.parametrize("how, message", [
    (lambda f: (f / "manifest.json").unlink(), "no manifest.json"),
    (lambda f: (f / "manifest.json").write_text("{"), "unreadable manifest"),
    (lambda f: (f / "objects" / "00001.png").unlink(), "object 1 listed in the manifest is missing"),
    (lambda f: (f / "objects" / "00000.png").write_bytes(b"x"), "object 0 differs from the manifest"),
    (_edit_manifest(lambda d: d.update(count=3)), "not a list of 'count' entries"),
    (_edit_manifest(lambda d: d.update(version=99)), "not an occluder manifest of version 1"),
    (_edit_manifest(lambda d: d["objects"][0].pop("bbox")), "entry 0 lacks \\['bbox'\\]"),
])
def test_load_refuses_an_inconsistent_folder(tmp_path, scene_only, how, message):
    folder = tampered(tmp_path, scene_only, how)
    with pytest.raises(OccreidError, match=message) as e:
        OccluderLibrary.load(folder)
    assert "dvc repro occluders" in e.value.fix and str(folder) in e.value.message


def test_load_without_verify_skips_the_hashes_and_a_missing_folder_is_named(tmp_path, scene_only):
    folder = tampered(tmp_path, scene_only, lambda f: (f / "objects" / "00000.png").write_bytes(b"x"))
    assert len(OccluderLibrary.load(folder, verify=False)) == 2
    with pytest.raises(OccreidError, match="occluder library folder not found"):
        OccluderLibrary.load(tmp_path / "nope")
    write_library(tmp_path / "empty", [], build={})
    with pytest.raises(OccreidError, match="empty"):
        OccluderLibrary.load(tmp_path / "empty")


@pytest.mark.parametrize("backend", MASK_BACKENDS.names())
def test_every_backend_returns_tight_candidates(backend):
    cfg = dataclasses.replace(tiny_sam_cfg(".") if backend == "sam" else classical_cfg(None), backend=backend)
    image = scene()
    found = create_mask_backend(cfg)(image)
    assert found and all(isinstance(c, Candidate) for c in found)
    for c in found:
        x, y, w, h = c.box
        assert c.mask.shape == (h, w) and c.mask.dtype == bool and 0 <= x and x + w <= 80 and y + h <= 64
        assert c.mask[0].any() and c.mask[-1].any() and c.mask[:, 0].any() and c.mask[:, -1].any()


def test_candidate_from_a_full_mask():
    mask = np.zeros((6, 7), bool)
    mask[2:4, 1:5] = True
    mask[3, 6] = True
    c = Candidate.from_full(mask, 0.5)
    assert c.box == (1, 2, 6, 2) and c.mask.sum() == 9 and c.score == 0.5
    assert Candidate.from_full(np.zeros((3, 3), bool), 1.0) is None


@pytest.mark.parametrize("section, message", [
    ({"filters": {"min_area": 0.5, "max_area": 0.1}}, "min_area <= max_area"),
    ({"filters": {"aspect": [2.0, 1.0]}}, "aspect"),
    ({"backend": "mask_rcnn"}, "not allowed"),
    ({"sam": {"model_type": "vit_s"}}, "not allowed"),
    ({"sam": {"pred_iou_thresh": 1.5}}, "pred_iou_thresh"),
    ({"max_images": 0}, "max_images"),
])
def test_config_rejects_bad_values(section, message):
    with pytest.raises(OccreidError, match=message):
        from_dict(OccludersConfig, section, key="occluders")
