"""synthocc end to end: a tiny dataset generated twice, checked file by file against its config."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occreid.data.synthocc import CONTACT_SHEET, OCCLUSION_CSV, SynthOccConfig, contact_sheet_size, generate
from occreid.data.synthocc.contact_sheet import HEADER, LABEL
from occreid.errors import OccreidError

NAME = re.compile(r"^(\d{4})_c(\d)s1_\d{6}_\d{2}\.jpg$")
FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
TINY = SynthOccConfig(seed=3, num_train_ids=5, num_test_ids=5, images_per_id=6, queries_per_id=2, num_cameras=3,
                      height=64, width=32, train_occluded_share=0.4, query_occluded_share=0.8,
                      gallery_occluded_share=0.25, contact_sheet_ids=3, contact_sheet_gallery=2)


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_csv(root: Path) -> list[dict[str, str]]:
    lines = (root / OCCLUSION_CSV).read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","))) for line in lines[1:]]


def ids_and_cams(folder: Path) -> list[tuple[int, int]]:
    out = []
    for p in sorted(folder.glob("*.jpg")):
        m = NAME.match(p.name)
        assert m, p.name
        out.append((int(m[1]), int(m[2])))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthocc") / "tiny"
    return root, generate(root, TINY)


def test_same_seed_gives_identical_bytes(tiny, tmp_path):
    root, _ = tiny
    again = tmp_path / "again"
    generate(again, TINY)
    first = hashes(root)
    assert len(first) == sum(TINY.split_sizes().values()) + 2  # images + occlusion.csv + contact sheet
    assert hashes(again) == first


def test_different_seed_gives_different_images(tiny, tmp_path):
    root, _ = tiny
    other = tmp_path / "other"
    generate(other, SynthOccConfig(**{**vars(TINY), "seed": 4}))
    a, b = hashes(root), hashes(other)
    assert a != b
    assert sum(v.endswith(".jpg") for v in b) == sum(v.endswith(".jpg") for v in a)
    shared = set(a) & set(b)
    assert sum(a[k] == b[k] for k in shared) == 0  # no image repeats by chance


def test_counts_per_split_match_config(tiny):
    root, summary = tiny
    expected = {"train": 5 * 6, "query": 5 * 2, "gallery": 5 * 4}
    assert TINY.split_sizes() == expected
    for split, folder in FOLDERS.items():
        assert len(list((root / folder).glob("*.jpg"))) == expected[split]
        assert summary["splits"][split]["images"] == expected[split]
        assert summary["splits"][split]["ids"] == 5
    assert summary["seconds"] > 0


def test_file_names_parse_and_cameras_are_one_based(tiny):
    root, _ = tiny
    cams = set()
    for folder in FOLDERS.values():
        for pid, cam in ids_and_cams(root / folder):
            assert 1 <= pid <= 9999
            cams.add(cam)
    assert cams <= set(range(1, TINY.num_cameras + 1))
    assert len(cams) >= 2


def test_identities_are_split_like_occluded_duke(tiny):
    root, _ = tiny
    train = {p for p, _ in ids_and_cams(root / "bounding_box_train")}
    query = {p for p, _ in ids_and_cams(root / "query")}
    gallery = {p for p, _ in ids_and_cams(root / "bounding_box_test")}
    assert len(train) == TINY.num_train_ids and len(gallery) == TINY.num_test_ids
    assert query <= gallery
    assert not train & gallery
    # a test identity's queries and gallery images come from different cameras
    gallery_pairs = set(ids_and_cams(root / "bounding_box_test"))
    assert not set(ids_and_cams(root / "query")) & gallery_pairs


def test_occluded_shares_match_config(tiny):
    root, summary = tiny
    rows = read_csv(root)
    for split in FOLDERS:
        flags = [int(r["occluded"]) for r in rows if r["split"] == split]
        share = TINY.occluded_share(split)
        assert abs(sum(flags) / len(flags) - share) <= 0.5 / len(flags) + 1e-12  # exact up to rounding
        assert summary["splits"][split]["occluded"] == sum(flags)


def test_occlusion_csv_lists_every_image_with_a_valid_fraction(tiny):
    root, summary = tiny
    assert (root / OCCLUSION_CSV).read_text(encoding="utf-8").splitlines()[0] == "split,file,occluded,occlusion"
    rows = read_csv(root)
    listed = {(r["split"], r["file"]) for r in rows}
    on_disk = {(s, p.name) for s, f in FOLDERS.items() for p in (root / f).glob("*.jpg")}
    assert listed == on_disk and len(rows) == len(on_disk)
    for r in rows:
        assert re.fullmatch(r"\d\.\d{4}", r["occlusion"]), r
        x = float(r["occlusion"])
        if r["occluded"] == "0":
            assert x == 0.0
        else:
            assert r["occluded"] == "1"
            assert TINY.occlusion_min - 5e-5 <= x <= TINY.occlusion_max + 5e-5
    for split in FOLDERS:
        fractions = [float(r["occlusion"]) for r in rows if r["split"] == split and r["occluded"] == "1"]
        assert summary["splits"][split]["mean_occlusion"] == pytest.approx(np.mean(fractions), abs=1e-3)


def test_contact_sheet_has_expected_size_and_shows_the_queries(tiny):
    root, _ = tiny
    with Image.open(root / CONTACT_SHEET) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == contact_sheet_size(TINY)
        pixels = np.asarray(sheet.convert("RGB"))
    # the first tile is the first query image of the smallest test id, pasted unchanged
    query = sorted((root / "query").glob("*.jpg"))[0]
    tile = pixels[HEADER:HEADER + TINY.height, LABEL:LABEL + TINY.width]
    assert np.array_equal(tile, np.asarray(Image.open(query).convert("RGB")))


def test_contact_sheet_size_known_answer():
    # default: 8 rows; 2 query + 5 gallery tiles of 64+4 px; label column 48, divider 12; header 16
    assert contact_sheet_size(SynthOccConfig()) == (48 + 7 * 68 + 12, 16 + 8 * (128 + 12 + 4))
    # fewer test ids than requested rows: one row per test id
    small = SynthOccConfig(num_test_ids=3, images_per_id=4, queries_per_id=1)
    assert contact_sheet_size(small) == (48 + 4 * 68 + 12, 16 + 3 * 144)


def test_images_have_the_configured_size_and_vary(tiny):
    root, _ = tiny
    files = sorted((root / "bounding_box_train").glob("*.jpg"))
    arrays = [np.asarray(Image.open(p)) for p in files[:4]]
    assert all(a.shape == (TINY.height, TINY.width, 3) for a in arrays)
    assert all(a.std() > 10 for a in arrays)  # not blank


@pytest.mark.parametrize("field, value", [
    ("num_train_ids", 0), ("num_test_ids", -1), ("images_per_id", 1), ("num_cameras", 1), ("num_cameras", 10),
    ("height", 8), ("width", 2000), ("train_occluded_share", 1.5), ("query_occluded_share", -0.1),
    ("gallery_occluded_share", float("nan")), ("occlusion_min", 0.0), ("occlusion_max", 0.99),
    ("jpeg_quality", 0), ("seed", -3), ("contact_sheet_ids", 0), ("contact_sheet_gallery", 0),
    ("queries_per_id", 0), ("num_train_ids", 2.5), ("height", True), ("seed", "1"),
])
def test_invalid_config_names_the_field_and_the_fix(field, value):
    with pytest.raises(OccreidError) as err:
        SynthOccConfig(**{field: value})
    assert field in err.value.problem
    assert err.value.fix


@pytest.mark.parametrize("kwargs, words", [
    (dict(images_per_id=4, queries_per_id=4), "images_per_id"),
    (dict(occlusion_min=0.5, occlusion_max=0.52), "narrower"),
    (dict(occlusion_min=0.6, occlusion_max=0.4), "narrower"),
    (dict(num_train_ids=5000, num_test_ids=5000), "exceeds"),
])
def test_invalid_combinations_are_explained(kwargs, words):
    with pytest.raises(OccreidError, match=words) as err:
        SynthOccConfig(**kwargs)
    assert err.value.fix


def test_a_crash_mid_generation_leaves_no_complete_looking_folder(tmp_path, monkeypatch):
    import occreid.data.synthocc.writer as gen

    real, calls = gen.render_image, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 7:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "render_image", failing)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate(fresh, TINY)
    assert not fresh.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too

    old = tmp_path / "old"
    old.mkdir()
    (old / "marker").write_text("previous dataset")
    calls.clear()
    with pytest.raises(RuntimeError):
        generate(old, TINY)
    assert [p.name for p in old.iterdir()] == ["marker"]  # the previous complete dataset is untouched


def test_occluded_queries_are_harder_than_whole_ones(tmp_path):
    """The dataset's purpose: occlusion hurts retrieval, yet identity stays visible.

    A training-free feature (colour histograms of 8 horizontal bands of the image centre, where the person
    stands) must beat chance by far on both kinds of query and do clearly better on whole-body queries.
    """
    cfg = SynthOccConfig(seed=11, num_train_ids=1, num_test_ids=30, images_per_id=8, queries_per_id=4,
                         query_occluded_share=0.5, gallery_occluded_share=0.0)
    root = tmp_path / "hard"
    generate(root, cfg)
    occluded = {r["file"]: r["occluded"] == "1" for r in read_csv(root) if r["split"] == "query"}
    qf, qp, qc, qfiles = _histograms(root / "query", cfg.width)
    gf, gp, gc, _ = _histograms(root / "bounding_box_test", cfg.width)
    first_hit = []
    for i in range(len(qf)):
        keep = ~((gp == qp[i]) & (gc == qc[i]))
        order = np.argsort(-(gf[keep] @ qf[i]), kind="stable")
        first_hit.append(gp[keep][order][0] == qp[i])
    hit = np.asarray(first_hit)
    occ = np.asarray([occluded[f] for f in qfiles])
    chance = 1.0 / cfg.num_test_ids
    whole_r1, occ_r1 = hit[~occ].mean(), hit[occ].mean()
    assert occ.sum() == 60 and (~occ).sum() == 60
    assert occ_r1 > 5 * chance
    assert whole_r1 > 0.45
    assert whole_r1 - occ_r1 > 0.15


def _histograms(folder: Path, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    files = sorted(folder.glob("*.jpg"))
    left, right = int(width * 0.34), int(width * 0.66)
    feats, pids, cams = [], [], []
    for p in files:
        a = np.asarray(Image.open(p).convert("RGB"))[:, left:right] // 64
        codes = a[..., 0].astype(int) * 16 + a[..., 1] * 4 + a[..., 2]
        bands = [np.bincount(b.ravel(), minlength=64) / b.size for b in np.array_split(codes, 8, axis=0)]
        f = np.sqrt(np.concatenate(bands))
        feats.append(f / np.linalg.norm(f))
        m = NAME.match(p.name)
        pids.append(int(m[1]))
        cams.append(int(m[2]))
    return np.asarray(feats), np.asarray(pids), np.asarray(cams), [p.name for p in files]


def test_summary_reports_shares(tiny):
    _, summary = tiny
    for split in FOLDERS:
        s = summary["splits"][split]
        assert s["occluded_share"] == pytest.approx(s["occluded"] / s["images"], abs=1e-4)
    assert sum(summary["occluder_kinds"].values()) == sum(summary["splits"][s]["occluded"] for s in FOLDERS)
    assert math.isfinite(summary["seconds"])
