"""prepare_data end to end on archives served by a loopback server, and the stage's command line."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from data_fixtures import (
    MINI_MARKET,
    LoopbackServer,
    Served,
    build_market_tree,
    forbid_real_network,
    make_tar,
    make_zip,
    write_images,
)

from occreid.data.datasets import create_dataset
from occreid.data.manifest import read_manifest
from occreid.data.prepare import DEFAULT_SOURCES, DatasetSource, PrepareConfig, prepare_dataset
from occreid.errors import OccreidError
from stages import common
from stages import prepare_data as stage


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    forbid_real_network(monkeypatch)
    # The whole-file check of params.yaml belongs to stages.common (tested with the project's params);
    # here only this stage's sections matter, which load_params validates itself.
    monkeypatch.setattr(common, "validate", lambda params, source: None)


def _cfg(tmp_path: Path) -> PrepareConfig:
    return PrepareConfig(raw_dir=str(tmp_path / "raw"), out_dir=str(tmp_path / "prepared"), timeout=5, retries=0,
                         chunk_size=4096, retry_wait=0)


def _market_zip(tmp_path: Path) -> bytes:
    src = build_market_tree(tmp_path / "build" / "Market-1501-v15.09.15", **MINI_MARKET)
    return make_zip(src.parent, tmp_path / "build.zip").read_bytes()


def _run_stage(tmp_path: Path, params: dict, dataset: str, capsys) -> tuple[int, str]:
    """Run the stage as `python -m stages.prepare_data` would, in a DAG with one experiment on ``dataset``."""
    fast = dict(raw_dir=str(tmp_path / "raw"), out_dir=str(tmp_path / "prepared"), timeout=5.0, retries=0,
                retry_wait=0.0)
    params["prepare_data"] = {**fast, **params.get("prepare_data", {})}
    params.setdefault("datasets", {}).setdefault(dataset, {})
    params.update(methods={"vit": {}}, experiments={"e": {"dataset": dataset, "method": "vit"}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    try:
        common.run(stage.main, ["--dataset", dataset, "--params", str(path)])
        rc = 0
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def test_market_from_url_end_to_end_with_manifest(tmp_path):
    data = _market_zip(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    src = DatasetSource(source="url", urls=[], sha256=sha, check_counts=False, filename="Market.zip")
    with LoopbackServer({"/dl/Market.zip": Served(data)}) as srv:
        src.urls = [srv.url("/missing.zip"), srv.url("/dl/Market.zip")]  # primary gone, mirror works
        out = prepare_dataset("market1501", src, _cfg(tmp_path))
        assert out == tmp_path / "prepared" / "market1501"
        first = (out / "manifest.json").read_bytes()
        n_requests = len(srv.requests)
        prepare_dataset("market1501", src, _cfg(tmp_path))  # again: cached download and extraction
        assert len(srv.requests) == n_requests
    assert (out / "manifest.json").read_bytes() == first  # deterministic bytes
    assert sorted(p.name for p in out.iterdir()) == [
        "bounding_box_test", "bounding_box_train", "manifest.json", "query"]
    assert [p.name for p in (tmp_path / "prepared").iterdir()] == ["market1501"]  # no temporary left
    m = read_manifest(out)
    assert m["dataset"] == "market1501" and m["layout"] == "market"
    assert m["counts"]["train"] == {"images": 5, "ids": 3, "cameras": [0, 1, 2, 5], "occluded": 0,
                                    "occlusion_known": 0}
    assert m["counts"]["gallery"]["images"] == 4 and m["files"]["gallery"] == 5  # junk dropped, but counted
    assert m["num_train_ids"] == 3 and m["num_cameras"] == 6
    assert m["sha256"] == {"Market.zip": sha}
    assert m["source"]["kind"] == "url" and m["params"]["source"]["sha256"] == sha
    assert create_dataset("market1501", out, check_counts=False).meta["train_pids"] == [2, 7, 11]


def test_count_mismatch_leaves_no_prepared_folder(tmp_path):
    data = _market_zip(tmp_path)
    with LoopbackServer({"/m.zip": Served(data)}) as srv:
        src = DatasetSource(urls=[srv.url("/m.zip")], accept_unknown_hash=True)
        with pytest.raises(OccreidError, match="expected 12,936 images, found 5"):
            prepare_dataset("market1501", src, _cfg(tmp_path))
    assert not (tmp_path / "prepared" / "market1501").exists()
    assert list((tmp_path / "prepared").iterdir()) == []
    assert (tmp_path / "raw" / "market1501" / "m.zip").read_bytes() == data  # the download is kept


def test_stage_corrupt_archive_fails_with_clear_message(tmp_path, capsys):
    data = _market_zip(tmp_path)
    with LoopbackServer({"/m.zip": Served(data[:100] + b"X" + data[101:])}) as srv:
        params = {"datasets": {"market1501": {"urls": [srv.url("/m.zip")],
                                              "sha256": hashlib.sha256(data).hexdigest()}}}
        rc, err = _run_stage(tmp_path, params, "market1501", capsys)
    assert rc == 2
    assert "sha256 mismatch: expected " + hashlib.sha256(data).hexdigest() in err
    assert "m.zip" in err and "Traceback" not in err
    assert not (tmp_path / "prepared" / "market1501").exists()


def test_stage_truncated_download_resumes_on_next_run(tmp_path, capsys):
    data = _market_zip(tmp_path)
    with LoopbackServer({"/m.zip": Served(data, cut_after=len(data) // 3, cuts=1)}) as srv:
        params = {"datasets": {"market1501": {"urls": [srv.url("/m.zip")], "sha256": hashlib.sha256(data).hexdigest(),
                                              "check_counts": False}}}
        rc, err = _run_stage(tmp_path, params, "market1501", capsys)
        assert rc == 2 and f"connection closed after {len(data) // 3} of {len(data)} bytes" in err
        rc, err = _run_stage(tmp_path, params, "market1501", capsys)
        assert rc == 0, err
        assert srv.requests[-1] == ("/m.zip", f"bytes={len(data) // 3}-")
    assert read_manifest(tmp_path / "prepared" / "market1501")["counts"]["query"]["images"] == 2


def test_stage_path_escape_rejected(tmp_path, capsys):
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("Market/query/0001_c1s1_000001_00.jpg", b"x")
        zf.writestr("../evil.sh", b"rm -rf ~")
    with LoopbackServer({"/m.zip": Served(evil.getvalue())}) as srv:
        params = {"datasets": {"market1501": {"urls": [srv.url("/m.zip")], "accept_unknown_hash": True}}}
        rc, err = _run_stage(tmp_path, params, "market1501", capsys)
    assert rc == 2 and "unsafe archive member '../evil.sh'" in err
    assert not list(tmp_path.rglob("evil.sh"))


def _duke_zip(tmp_path: Path) -> bytes:
    duke = build_market_tree(tmp_path / "dk" / "DukeMTMC-reID", ["0001_c1_f0000001.jpg", "0002_c2_f0000002.jpg"],
                             ["0005_c1_f0000010.jpg"], ["0005_c2_f0000011.jpg", "0005_c7_f0000012.jpg"])
    return make_zip(duke.parent, tmp_path / "duke.zip").read_bytes()


def test_stage_occluded_duke_from_duke_archive_and_served_lists(tmp_path, capsys):
    lists = {"train": b"0001_c1_f0000001.jpg\n0002_c2_f0000002.jpg\n", "query": b"0005_c7_f0000012.jpg\n",
             "gallery": b"0005_c1_f0000010.jpg\n0005_c2_f0000011.jpg\n"}
    files = {f"/lists/{k}.list": Served(v) for k, v in lists.items()}
    files["/duke/DukeMTMC-reID.zip"] = Served(_duke_zip(tmp_path))
    with LoopbackServer(files) as srv:
        params = {"datasets": {"occluded_duke": {
            "check_counts": False,
            "duke": {"urls": [srv.url("/duke/DukeMTMC-reID.zip")], "accept_unknown_hash": True},
            # a dead primary per split, then the working mirror
            "split_lists": {k: [srv.url(f"/gone/{k}.list"), srv.url(f"/lists/{k}.list")] for k in lists},
        }}}
        rc, err = _run_stage(tmp_path, params, "occluded_duke", capsys)
    assert rc == 0, err
    assert all(not path.startswith("/gone") or rng is None for path, rng in srv.requests)
    out = tmp_path / "prepared" / "occluded_duke"
    s = create_dataset("occluded_duke", out, check_counts=False)
    assert [(Path(r.path).name, r.occluded) for r in s.query] == [("0005_c7_f0000012.jpg", True)]
    m = read_manifest(out)
    assert m["sha256"]["query.list"] == hashlib.sha256(lists["query"]).hexdigest()
    assert set(m["sha256"]) == {"DukeMTMC-reID.zip", "train.list", "query.list", "gallery.list"}
    assert m["counts"]["query"]["occluded"] == 1 and m["source"]["kind"] == "converted"
    assert (tmp_path / "raw" / "dukemtmc" / "DukeMTMC-reID.zip").is_file()  # shared with the dukemtmc dataset


def test_occluded_reid_from_local_tar_archive(tmp_path):
    root = tmp_path / "orig" / "Occluded_REID"
    for pid in ("001", "002"):
        write_images(root / "occluded_body_images" / pid, [f"{pid}_01.tif"])
        write_images(root / "whole_body_images" / pid, [f"{pid}_01.tif"])
    archive = make_tar(root.parent, tmp_path / "Occluded_REID.tar.gz")
    src = DatasetSource(source="archive", archive=str(archive), check_counts=False)
    with pytest.raises(OccreidError, match="its sha256 is") as e:
        prepare_dataset("occluded_reid", src, _cfg(tmp_path))
    assert "datasets.occluded_reid.sha256: " in e.value.fix
    src.sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    out = prepare_dataset("occluded_reid", src, _cfg(tmp_path))
    m = read_manifest(out)
    assert m["counts"]["query"]["images"] == 2 and m["counts"]["query"]["occluded"] == 2
    assert m["counts"]["gallery"]["cameras"] == [2] and m["counts"]["train"]["images"] == 0


def test_folder_source_and_synthetic_only_for_synthocc(tmp_path):
    folder = build_market_tree(tmp_path / "mine" / "DukeMTMC-reID", ["0001_c1_f1.jpg"], ["0002_c1_f1.jpg"],
                               ["0002_c2_f1.jpg"])
    out = prepare_dataset("dukemtmc", DatasetSource(source="folder", folder=str(folder.parent), check_counts=False),
                          _cfg(tmp_path))
    assert read_manifest(out)["source"] == {"kind": "folder", "folder": str(folder.parent)}
    assert read_manifest(out)["sha256"] == {}
    with pytest.raises(OccreidError, match="only for synthocc"):
        prepare_dataset("dukemtmc", DatasetSource(source="synthetic"), _cfg(tmp_path))


def test_stage_unknown_dataset_and_unknown_key(tmp_path, capsys):
    rc, err = _run_stage(tmp_path, {}, "market", capsys)
    assert rc == 2 and "unknown dataset 'market'" in err and "did you mean 'market1501'" in err
    rc, err = _run_stage(tmp_path, {"datasets": {"market1501": {"sha265": "ab"}}}, "market1501", capsys)
    assert rc == 2 and "unknown params key 'datasets.market1501.sha265'" in err and "did you mean 'sha256'" in err
    rc, err = _run_stage(tmp_path, {"prepare_data": {"retries": "many"}}, "market1501", capsys)
    assert rc == 2 and "'prepare_data.retries' must be int" in err


def test_stage_archive_only_datasets_explain_what_to_set(tmp_path, capsys):
    rc, err = _run_stage(tmp_path, {}, "msmt17", capsys)
    assert rc == 2 and "no public download" in err and "datasets.msmt17.archive" in err


def test_default_sources_are_valid_and_point_at_the_public_lists():
    stage_src, _, _ = stage.load_params("occluded_duke", {}, {})
    assert stage_src.duke is not None and stage_src.duke.filename == "DukeMTMC-reID.zip"
    assert stage_src.split_lists["gallery"][0] == (
        "https://raw.githubusercontent.com/lightas/Occluded-DukeMTMC-Dataset/master/Occluded_Duke/gallery.list")
    for name in DEFAULT_SOURCES:
        if name != "synthocc":
            stage.load_params(name, None, None)  # every default parses with from_dict


def test_stage_nested_duke_key_validated(tmp_path, capsys):
    rc, err = _run_stage(tmp_path, {"datasets": {"occluded_duke": {"duke": {"archiv": "x.zip"}}}}, "occluded_duke",
                         capsys)
    assert rc == 2 and "unknown params key 'datasets.occluded_duke.duke.archiv'" in err


def test_stage_synthocc_generated(tmp_path, capsys):
    synth = pytest.importorskip("occreid.data.synthocc")
    if not (hasattr(synth, "generate") and hasattr(synth, "SynthOccConfig")):
        pytest.skip("the synthocc generator (another part) is not written yet")
    tiny = dict(num_train_ids=2, num_test_ids=2, images_per_id=3, queries_per_id=1, num_cameras=2, height=32,
                width=16, contact_sheet_ids=1)
    rc, err = _run_stage(tmp_path, {"datasets": {"synthocc": {"generator": tiny}}}, "synthocc", capsys)
    assert rc == 0, err
    out = tmp_path / "prepared" / "synthocc"
    first = (out / "manifest.json").read_bytes()
    rc, err = _run_stage(tmp_path, {"datasets": {"synthocc": {"generator": tiny}}}, "synthocc", capsys)
    assert rc == 0 and (out / "manifest.json").read_bytes() == first  # same config, same bytes
    m = read_manifest(out)
    assert m["source"]["kind"] == "synthetic" and m["params"]["generator"]["num_train_ids"] == 2
    s = create_dataset("synthocc", out)
    assert len(s.train) == 6 and s.num_train_pids == 2
    assert m["counts"]["query"]["images"] == len(s.query) > 0
    assert (out / "occlusion.csv").is_file()
    assert any(r.occluded for r in s.query)


def test_tar_member_outside_is_refused_end_to_end(tmp_path):
    archive = tmp_path / "m.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("Market/query")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tar.addfile(link)
    src = DatasetSource(source="archive", archive=str(archive), accept_unknown_hash=True)
    with pytest.raises(OccreidError, match="symlink to '/etc' leaves the archive"):
        prepare_dataset("market1501", src, _cfg(tmp_path))
    assert not (tmp_path / "raw" / "market1501" / "extracted").exists() or not any(
        (tmp_path / "raw" / "market1501" / "extracted").iterdir())


def test_manifest_missing(tmp_path):
    with pytest.raises(OccreidError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(OccreidError, match="not valid JSON"):
        read_manifest(tmp_path)
