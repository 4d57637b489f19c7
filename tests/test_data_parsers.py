"""Dataset parsers: names, relabelling, junk/distractors, cameras, bounds, published counts, sidecar, layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from data_fixtures import MINI_MARKET, build_market_tree, write_images

from occreid.data.datasets import DATASETS, create_dataset
from occreid.data.parsers.common import ExpectedCounts, relabel_train
from occreid.data.parsers.sidecar import SIDECAR_HEADER, read_sidecar, write_sidecar
from occreid.data.records import Record
from occreid.errors import OccreidError


@pytest.fixture
def market(tmp_path: Path) -> Path:
    return build_market_tree(tmp_path / "market1501", **MINI_MARKET)


def test_registry_names_and_unknown_name(tmp_path):
    assert DATASETS.names() == ["dukemtmc", "market1501", "msmt17", "occluded_duke", "occluded_reid", "synthocc"]
    with pytest.raises(OccreidError, match="unknown dataset 'market'") as e:
        create_dataset("market", tmp_path)
    assert "did you mean 'market1501'" in e.value.message


def test_market_relabel_junk_distractors_cameras(market):
    s = create_dataset("market1501", market, check_counts=False)
    # train pids 2, 7, 11 -> 0, 1, 2 (sorted unique); cameras 1-based in names -> 0-based
    assert [(Path(r.path).name, r.pid, r.camid) for r in s.train] == [
        ("0002_c1s1_000451_03.jpg", 0, 0),
        ("0002_c2s1_000551_01.jpg", 0, 1),
        ("0007_c3s1_000101_01.jpg", 1, 2),
        ("0011_c1s2_000301_01.jpg", 2, 0),
        ("0011_c6s2_000201_02.jpg", 2, 5),
    ]
    assert s.meta["train_pids"] == [2, 7, 11]
    # query keeps original pids
    assert [(r.pid, r.camid) for r in s.query] == [(3, 0), (5, 3)]
    # junk (-1) dropped, distractors (0) kept, sorted by path
    assert [(r.pid, r.camid) for r in s.gallery] == [(0, 1), (0, 2), (3, 1), (5, 4)]
    assert all(r.occluded is None and r.occlusion is None for r in s.train + s.query + s.gallery)
    assert s.meta["files"] == {"train": 5, "query": 2, "gallery": 5}  # junk still counted as published
    assert s.num_train_pids == 3 and s.num_cams == 6


def test_duke_names_and_non_images_ignored(tmp_path):
    root = build_market_tree(tmp_path / "duke", ["0005_c2_f0046985.jpg", "0001_c8_f0000001.jpg"],
                             ["0005_c1_f0000100.jpg"], ["0005_c7_f0000200.jpg"])
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"\0")
    (root / "query" / ".DS_Store").write_bytes(b"\0")
    s = create_dataset("dukemtmc", root, check_counts=False)
    assert [(r.pid, r.camid) for r in s.train] == [(0, 7), (1, 1)]  # pids 1, 5 -> 0, 1
    assert s.query[0].camid == 0 and s.gallery[0].camid == 6


def test_records_are_sorted_whatever_the_creation_order(tmp_path):
    names = ["0009_c1_f1.jpg", "0001_c2_f1.jpg", "0004_c1_f1.jpg"]
    root = build_market_tree(tmp_path / "d", names, ["0001_c1_f2.jpg"], ["0001_c2_f3.jpg"])
    s = create_dataset("dukemtmc", root, check_counts=False)
    assert s.train == sorted(s.train)
    assert [r.pid for r in s.train] == [0, 1, 2]


def test_relabel_property_dense_and_order_preserving():
    recs = [Record(f"p{i}", pid, 0) for i, pid in enumerate([40, 3, 40, 17, 3])]
    out, pids = relabel_train(recs)
    assert pids == [3, 17, 40]
    assert [r.pid for r in out] == [2, 0, 2, 1, 0]
    assert [pids[r.pid] for r in out] == [r.pid for r in recs]  # round trip


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1501), min_size=1, max_size=30))
def test_relabel_property_any_pids(pids):
    out, originals = relabel_train([Record(f"p{i:03d}", pid, 0) for i, pid in enumerate(pids)])
    assert {r.pid for r in out} == set(range(len(set(pids))))  # dense 0..N-1
    assert originals == sorted(set(pids))
    assert all(originals[r.pid] == pid for r, pid in zip(out, pids))  # the map inverts


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(
    st.tuples(st.sampled_from(["train", "query", "gallery"]), st.from_regex(r"[0-9]{4}_c[1-6]s1_[0-9]{6}\.jpg",
                                                                          fullmatch=True)),
    st.tuples(st.booleans(), st.one_of(st.none(), st.floats(min_value=0, max_value=1, allow_nan=False))),
    max_size=12))
def test_sidecar_round_trip(tmp_path_factory, facts):
    path = tmp_path_factory.mktemp("sc") / "occlusion.csv"
    write_sidecar(path, [(s, f, o, x) for (s, f), (o, x) in facts.items()])
    back = read_sidecar(path)
    assert set(back) == set(facts)
    for k, (occluded, occlusion) in facts.items():
        assert back[k][0] == occluded
        assert (back[k][1] is None) == (occlusion is None)
        if occlusion is not None:
            assert back[k][1] == pytest.approx(occlusion, rel=1e-5, abs=1e-6)


def test_unparsable_name_names_the_file(market):
    write_images(market / "query", ["holiday_photo.jpg"])
    with pytest.raises(OccreidError, match="<pid>_c<cam>") as e:
        create_dataset("market1501", market, check_counts=False)
    assert e.value.path.endswith("query/holiday_photo.jpg")
    assert e.value.fix


@pytest.mark.parametrize(
    "name, match",
    [("1502_c1s1_000001_00.jpg", "person id 1502 is outside market1501's range 0..1501"),
     ("0002_c7s1_000001_00.jpg", "camera 7 is outside market1501's cameras 1..6"),
     ("0002_c0s1_000001_00.jpg", "camera 0 is outside")],
)
def test_bounds(market, name, match):
    write_images(market / "bounding_box_test", [name])
    with pytest.raises(OccreidError, match=match) as e:
        create_dataset("market1501", market, check_counts=False)
    assert e.value.path.endswith(name)


def test_missing_root_missing_split_and_nested_hint(tmp_path, market):
    with pytest.raises(OccreidError, match="dataset folder not found") as e:
        create_dataset("market1501", tmp_path / "nowhere")
    assert "prepare_data --dataset market1501" in e.value.fix
    (market / "query").rename(tmp_path / "q")
    with pytest.raises(OccreidError, match="missing folder 'query'"):
        create_dataset("market1501", market, check_counts=False)
    outer = tmp_path / "outer"
    build_market_tree(outer / "Market-1501-v15.09.15", **MINI_MARKET)
    with pytest.raises(OccreidError, match="missing folder") as e:
        create_dataset("market1501", outer, check_counts=False)
    assert "nested one level down" in e.value.fix and "Market-1501-v15.09.15" in e.value.fix


def test_empty_split_folder(market):
    for p in (market / "query").iterdir():
        p.unlink()
    with pytest.raises(OccreidError, match="no images in this split"):
        create_dataset("market1501", market, check_counts=False)


def test_count_check_with_small_override(market):
    exact = ExpectedCounts(images={"train": 5, "query": 2, "gallery": 5}, ids={"train": 3, "gallery": 3})
    assert len(create_dataset("market1501", market, expected=exact).gallery) == 4
    wrong = ExpectedCounts(images={"train": 5, "query": 2, "gallery": 7}, ids={"train": 4})
    with pytest.raises(OccreidError) as e:
        create_dataset("market1501", market, expected=wrong)
    msg = e.value.message
    assert "split 'gallery': expected 7 images, found 5" in msg
    assert "split 'train': expected 4 identities, found 3" in msg
    assert "query" not in msg.split("probable cause")[0]  # only the wrong splits are listed
    assert "incomplete download" in msg
    assert "check_counts=False" in msg and "datasets.market1501.check_counts: false" in msg
    # more files than published: a different cause
    with pytest.raises(OccreidError, match="different release"):
        create_dataset("market1501", market, expected=ExpectedCounts(images={"train": 4}))
    # the check can be switched off
    assert create_dataset("market1501", market, expected=wrong, check_counts=False).num_train_pids == 3


def test_published_counts_are_the_documented_ones():
    def images(name):
        return DATASETS.get(name).expected.images

    assert images("occluded_duke") == {"train": 15618, "query": 2210, "gallery": 17661}
    assert images("market1501") == {"train": 12936, "query": 3368, "gallery": 19732}
    assert images("dukemtmc") == {"train": 16522, "query": 2228, "gallery": 17661}
    assert images("msmt17") == {"train": 32621, "query": 11659, "gallery": 82161}
    assert images("occluded_reid") == {"query": 1000, "gallery": 1000}
    assert DATASETS.get("occluded_reid").expected.ids == {"query": 200, "gallery": 200}


def test_default_published_check_rejects_tiny_market(market):
    with pytest.raises(OccreidError, match="expected 12,936 images, found 5"):
        create_dataset("market1501", market)


def test_occluded_duke_query_is_occluded(tmp_path):
    root = build_market_tree(tmp_path / "od", ["0001_c1_f1.jpg"], ["0002_c1_f1.jpg"], ["0002_c3_f1.jpg"])
    s = create_dataset("occluded_duke", root, check_counts=False)
    assert [r.occluded for r in s.query] == [True]
    assert s.train[0].occluded is None and s.gallery[0].occluded is None


def test_occluded_reid_without_train(tmp_path):
    root = tmp_path / "or"
    write_images(root / "query", ["0001_c1s1_000000_00.jpg"])
    write_images(root / "bounding_box_test", ["0001_c3s3_000000_00.jpg"])
    s = create_dataset("occluded_reid", root, check_counts=False)
    assert s.train == []
    assert [(r.camid, r.occluded) for r in s.query] == [(0, True)]
    assert [(r.camid, r.occluded) for r in s.gallery] == [(2, False)]


def _sidecar(root: Path, rows: list[str]) -> None:
    (root / "occlusion.csv").write_text(",".join(SIDECAR_HEADER) + "\n" + "".join(r + "\n" for r in rows))


def test_sidecar_attached(market):
    _sidecar(market, ["query,0003_c1s1_000100_00.jpg,1,0.35", "gallery,0003_c2s1_000300_01.jpg,0,0",
                      "gallery,-1_c1s1_000001_00.jpg,0,0"])  # a junk file may be listed too
    s = create_dataset("synthocc", market)
    q = {Path(r.path).name: (r.occluded, r.occlusion) for r in s.query}
    assert q == {"0003_c1s1_000100_00.jpg": (True, 0.35), "0005_c4s1_000200_00.jpg": (None, None)}
    g = {Path(r.path).name: (r.occluded, r.occlusion) for r in s.gallery}
    assert g["0003_c2s1_000300_01.jpg"] == (False, 0.0)


@pytest.mark.parametrize(
    "rows, match",
    [(["query,0003_c1s1_000100_00.jpg,1,1.5"], "occlusion must be a number in \\[0, 1\\]"),
     (["query,0003_c1s1_000100_00.jpg,yes,0.5"], "occluded must be 0 or 1"),
     (["probe,0003_c1s1_000100_00.jpg,1,0.5"], "split 'probe'"),
     (["query,0003_c1s1_000100_00.jpg,1"], "expected 4 fields"),
     (["query,9999_c1s1_000100_00.jpg,1,0.5"], "1 rows of split 'query' name files that are not there")],
)
def test_sidecar_errors(market, rows, match):
    _sidecar(market, rows)
    with pytest.raises(OccreidError, match=match) as e:
        create_dataset("synthocc", market)
    assert "occlusion.csv" in e.value.path


def test_sidecar_bad_header(market):
    (market / "occlusion.csv").write_text("file,occluded\n")
    with pytest.raises(OccreidError, match="header must be split,file,occluded,occlusion"):
        create_dataset("synthocc", market)


def test_verify_images_finds_corrupt_file(market):
    bad = market / "bounding_box_train" / "0002_c1s1_000451_03.jpg"
    bad.write_bytes(b"this is not a jpeg")
    assert len(create_dataset("market1501", market, check_counts=False).train) == 5  # not decoded by default
    with pytest.raises(OccreidError, match="cannot be decoded") as e:
        create_dataset("market1501", market, check_counts=False, verify_images=True)
    assert e.value.path == str(bad)


def _msmt(root: Path) -> Path:
    write_images(root / "train" / "0000", ["0000_000_01_0303morning_0015_0.jpg", "0000_001_05_0303noon_0016_0.jpg"])
    write_images(root / "train" / "0003", ["0003_000_02_0303morning_0020_0.jpg"])
    write_images(root / "test" / "0007", ["0007_000_15_0113morning_0001_0.jpg", "0007_001_03_0113noon_0002_0.jpg"])
    (root / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n"
                                         "0000/0000_001_05_0303noon_0016_0.jpg 0\n")
    (root / "list_val.txt").write_text("0003/0003_000_02_0303morning_0020_0.jpg 3\n")
    (root / "list_query.txt").write_text("0007/0007_000_15_0113morning_0001_0.jpg 7\n")
    (root / "list_gallery.txt").write_text("0007/0007_001_03_0113noon_0002_0.jpg 7\n\n")
    return root


def test_msmt17_lists(tmp_path):
    root = _msmt(tmp_path / "msmt")
    s = create_dataset("msmt17", root, expected=ExpectedCounts(images={"train": 3, "query": 1, "gallery": 1}))
    assert [(r.pid, r.camid) for r in s.train] == [(0, 0), (0, 4), (1, 1)]  # val merged; pids 0, 3 -> 0, 1
    assert [(r.pid, r.camid) for r in s.query] == [(7, 14)]
    assert [(r.pid, r.camid) for r in s.gallery] == [(7, 2)]
    assert s.meta["layout"] == "msmt17"


def test_msmt17_errors(tmp_path):
    root = _msmt(tmp_path / "msmt")
    (root / "list_query.txt").write_text("0007/missing_000_03_x_0_0.jpg 7\n")
    with pytest.raises(OccreidError, match="1 images listed here are missing"):
        create_dataset("msmt17", root, check_counts=False)
    (root / "list_query.txt").write_text("just-one-field\n")
    with pytest.raises(OccreidError, match="line 1 is not"):
        create_dataset("msmt17", root, check_counts=False)
    (root / "list_query.txt").write_text("0007/0007_000_16_0113morning_0001_0.jpg 7\n")
    with pytest.raises(OccreidError, match="camera 16 is outside msmt17's cameras 1..15"):
        create_dataset("msmt17", root, check_counts=False)
    (root / "list_val.txt").unlink()
    with pytest.raises(OccreidError, match="list file not found"):
        create_dataset("msmt17", root, check_counts=False)
