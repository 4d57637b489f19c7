"""Conversions: Occluded-REID arrangement, Occluded-Duke from Duke + split lists, Market/MSMT17 arrangement."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import MINI_MARKET, build_market_tree, write_images

from occreid.data.convert import (
    arrange_market_layout,
    arrange_msmt17,
    convert_occluded_duke,
    convert_occluded_reid,
    find_layout_root,
    read_split_list,
)
from occreid.data.datasets import create_dataset
from occreid.data.parsers.common import ExpectedCounts
from occreid.errors import OccreidError


def _occluded_reid_original(root: Path) -> Path:
    """Original layout: occluded_body_images/<pid>/*.tif and whole_body_images/<pid>/*.tif."""
    for pid in ("001", "002"):
        for folder in ("occluded_body_images", "whole_body_images"):
            write_images(root / "Occluded_REID" / folder / pid, [f"{pid}_{j:02d}.tif" for j in (1, 2)])
    return root


def test_occluded_reid_arrangement(tmp_path):
    src = _occluded_reid_original(tmp_path / "raw")
    out = tmp_path / "out"
    assert convert_occluded_reid(src, out) == {"query": 4, "gallery": 4}
    assert sorted(p.name for p in (out / "query").iterdir()) == [
        "0001_c1s1_000000_00.tif", "0001_c1s1_000050_00.tif", "0002_c1s1_000000_00.tif", "0002_c1s1_000050_00.tif"]
    assert sorted(p.name for p in (out / "bounding_box_test").iterdir())[:2] == [
        "0001_c3s3_000000_00.tif", "0001_c3s3_000050_00.tif"]
    # the bytes are the original ones, in sorted order
    assert (out / "query" / "0002_c1s1_000050_00.tif").read_bytes() == (
        src / "Occluded_REID" / "occluded_body_images" / "002" / "002_02.tif").read_bytes()
    assert not (out / "bounding_box_train").exists()
    s = create_dataset("occluded_reid", out,
                       expected=ExpectedCounts(images={"query": 4, "gallery": 4}, ids={"query": 2, "gallery": 2}))
    assert {(r.camid, r.occluded) for r in s.query} == {(0, True)}
    assert {(r.camid, r.occluded) for r in s.gallery} == {(2, False)}  # camera 3 -> 2: no same-camera removal
    lines = (out / "occlusion.csv").read_text().splitlines()
    assert lines[0] == "split,file,occluded,occlusion"
    assert "query,0001_c1s1_000000_00.tif,1," in lines and "gallery,0001_c3s3_000000_00.tif,0," in lines


def test_occluded_reid_bad_identity_folder(tmp_path):
    src = _occluded_reid_original(tmp_path / "raw")
    write_images(src / "Occluded_REID" / "whole_body_images" / "person_x", ["a.tif"])
    with pytest.raises(OccreidError, match="identity folders must be numbers") as e:
        convert_occluded_reid(src, tmp_path / "out")
    assert e.value.path.endswith("person_x")


def test_occluded_reid_already_arranged_and_unknown(tmp_path):
    arranged = tmp_path / "arr"
    write_images(arranged / "query", ["0001_c1s1_000000_00.jpg"])
    write_images(arranged / "bounding_box_test", ["0001_c3s3_000000_00.jpg"])
    convert_occluded_reid(arranged, tmp_path / "out")
    assert (tmp_path / "out" / "query" / "0001_c1s1_000000_00.jpg").is_file()
    (tmp_path / "junk").mkdir()
    with pytest.raises(OccreidError, match="neither the original Occluded-REID layout"):
        convert_occluded_reid(tmp_path / "junk", tmp_path / "out2")


def _duke(root: Path) -> Path:
    return build_market_tree(
        root / "DukeMTMC-reID",
        train=["0001_c1_f0000001.jpg", "0001_c2_f0000002.jpg", "0003_c5_f0000003.jpg"],
        query=["0005_c1_f0000010.jpg"],
        gallery=["0005_c2_f0000011.jpg", "0005_c6_f0000012.jpg", "0007_c3_f0000013.jpg"],
    )


def _lists(folder: Path, train: list[str], query: list[str], gallery: list[str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, names in (("train", train), ("query", query), ("gallery", gallery)):
        out[split] = folder / f"{split}.list"
        out[split].write_text("".join(n + "\n" for n in names))
    return out


def test_occluded_duke_conversion(tmp_path):
    duke = _duke(tmp_path / "raw")
    # one occluded gallery image moves to the query; a Duke query image moves to the gallery
    lists = _lists(tmp_path / "lists", ["0001_c1_f0000001.jpg", "0003_c5_f0000003.jpg"],
                   ["0005_c6_f0000012.jpg"], ["0005_c1_f0000010.jpg", "0005_c2_f0000011.jpg", "0007_c3_f0000013.jpg"])
    out = tmp_path / "out"
    convert_occluded_duke(tmp_path / "raw", lists, out)
    assert sorted(p.name for p in (out / "query").iterdir()) == ["0005_c6_f0000012.jpg"]
    assert (out / "query" / "0005_c6_f0000012.jpg").read_bytes() == (
        duke / "bounding_box_test" / "0005_c6_f0000012.jpg").read_bytes()
    assert len(list((out / "bounding_box_train").iterdir())) == 2
    s = create_dataset("occluded_duke", out, expected=ExpectedCounts(images={"train": 2, "query": 1, "gallery": 3}))
    assert [(r.pid, r.camid, r.occluded) for r in s.query] == [(5, 5, True)]
    assert [r.pid for r in s.train] == [0, 1]
    assert (out / "occlusion.csv").read_text().splitlines() == [
        "split,file,occluded,occlusion", "query,0005_c6_f0000012.jpg,1,"]


def test_occluded_duke_missing_images(tmp_path):
    _duke(tmp_path / "raw")
    lists = _lists(tmp_path / "lists", ["0001_c1_f0000001.jpg", "0099_c1_f0000099.jpg"], ["0005_c1_f0000010.jpg"],
                   ["0005_c2_f0000011.jpg"])
    with pytest.raises(OccreidError, match="1 of the 2 images in train.list are not in DukeMTMC-reID"):
        convert_occluded_duke(tmp_path / "raw", lists, tmp_path / "out")


def test_split_list_parsing(tmp_path):
    p = tmp_path / "x.list"
    p.write_text("0001_c1_f0000001.jpg\n\n  0002_c2_f0000002.jpg  \r\nsub/0003_c3_f1.jpg\n")
    assert read_split_list(p) == ["0001_c1_f0000001.jpg", "0002_c2_f0000002.jpg", "0003_c3_f1.jpg"]
    p.write_text("0001_c1_f0000001.jpg\n<!DOCTYPE html>\n")
    with pytest.raises(OccreidError, match="line 2: '<!DOCTYPE html>' is not a DukeMTMC-reID image name"):
        read_split_list(p)
    p.write_text("\n")
    with pytest.raises(OccreidError, match="empty"):
        read_split_list(p)


def test_market_arrangement_from_nested_tree(tmp_path):
    src = tmp_path / "x"
    build_market_tree(src / "Market-1501-v15.09.15", **MINI_MARKET)
    write_images(src / "Market-1501-v15.09.15" / "gt_bbox", ["0002_c1s1_000451_03.jpg"])
    (src / "Market-1501-v15.09.15" / "query" / "Thumbs.db").write_bytes(b"\0")
    out = tmp_path / "out"
    assert arrange_market_layout(src, out, what="Market-1501") == src / "Market-1501-v15.09.15"
    assert sorted(p.name for p in out.iterdir()) == ["bounding_box_test", "bounding_box_train", "query"]
    assert sorted(p.name for p in (out / "query").iterdir()) == sorted(MINI_MARKET["query"])


def test_find_layout_root_skips_macos_metadata(tmp_path):
    # a macOS-made zip repeats the tree under __MACOSX/ (with "._" files): not a second dataset
    for top in ("__MACOSX", "data", ".hidden"):
        for d in ("bounding_box_train", "query", "bounding_box_test"):
            (tmp_path / top / "Market" / d).mkdir(parents=True)
    assert find_layout_root(tmp_path, ["query", "bounding_box_test"], "Market") == tmp_path / "data" / "Market"


def test_find_layout_root_errors(tmp_path):
    for top in ("a", "b"):
        build_market_tree(tmp_path / top, ["0001_c1_f1.jpg"], ["0001_c1_f2.jpg"], ["0001_c1_f3.jpg"])
    with pytest.raises(OccreidError, match="several folders hold"):
        find_layout_root(tmp_path, ["query", "bounding_box_test"], "DukeMTMC-reID")
    with pytest.raises(OccreidError, match="no folder holding list_train.txt within 3 levels"):
        find_layout_root(tmp_path, ["list_train.txt"], "MSMT17")


def test_msmt17_arrangement(tmp_path):
    src = tmp_path / "raw" / "MSMT17_V1"
    write_images(src / "train" / "0000", ["0000_000_01_0303morning_0015_0.jpg"])
    write_images(src / "test" / "0001", ["0001_000_02_0303morning_0015_0.jpg", "0001_001_03_0303noon_0016_0.jpg"])
    (src / "list_train.txt").write_text("0000/0000_000_01_0303morning_0015_0.jpg 0\n")
    (src / "list_val.txt").write_text("")
    (src / "list_query.txt").write_text("0001/0001_000_02_0303morning_0015_0.jpg 1\n")
    (src / "list_gallery.txt").write_text("0001/0001_001_03_0303noon_0016_0.jpg 1\n")
    out = tmp_path / "out"
    arrange_msmt17(tmp_path / "raw", out)
    s = create_dataset("msmt17", out, expected=ExpectedCounts(images={"train": 1, "query": 1, "gallery": 1}))
    assert [(r.pid, r.camid) for r in s.query + s.gallery] == [(1, 1), (1, 2)]
