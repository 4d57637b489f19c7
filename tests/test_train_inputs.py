"""The train stage points a CLIP method at the per-dataset outputs the DAG makes it depend on, and saves a
config that does not need them again; params validation refuses a hand-set input path."""

from __future__ import annotations

import json

import pytest

from occreid.errors import OccreidError
from occreid.methods.clipreid import ClipReIDConfig
from occreid.methods.dpmpp import DPMPPConfig
from occreid.methods.vit import VitConfig
from stages.common import validate
from stages.registry import need_paths
from stages.train import partner_table_config, with_inputs, without_inputs
from stage_params import stage_params


def test_inputs_are_the_outputs_train_depends_on():
    pp = with_inputs(DPMPPConfig(), "market1501")
    assert (pp.text_features, pp.spt_partners) == ("data/prompts/market1501", "data/spt/market1501/default")
    assert sorted([pp.text_features, pp.spt_partners]) == need_paths("dpmpp", "market1501")
    swept = with_inputs(DPMPPConfig(), "market1501", {"spt": "alpha1-0p6"})  # an alpha1 sweep row's own table
    assert swept.spt_partners == "data/spt/market1501/alpha1-0p6"
    assert sorted([swept.text_features, swept.spt_partners]) == need_paths("dpmpp", "market1501", {"spt": "alpha1-0p6"})
    clip = with_inputs(ClipReIDConfig(), "occluded_duke")
    assert [clip.text_features] == need_paths("clipreid", "occluded_duke") == ["data/prompts/occluded_duke"]
    assert with_inputs(VitConfig(), "synthocc") == VitConfig()  # a method without inputs is unchanged
    saved = without_inputs(pp)
    assert saved.text_features is None and saved.spt_partners is None and saved.backbone == pp.backbone


def test_the_run_config_names_the_partner_table_it_trained_on(tmp_path):
    folder = tmp_path / "spt" / "synthocc" / "alpha1-0p9"
    folder.mkdir(parents=True)
    (folder / "spt.json").write_text(json.dumps({"variant": "alpha1-0p9", "images": 12,
                                                 "config": {"alpha1": 0.9, "alpha2": 0.5}}))
    assert partner_table_config(DPMPPConfig(spt_partners=str(folder))) == {
        "spt": {"variant": "alpha1-0p9", "alpha1": 0.9, "alpha2": 0.5}}
    assert partner_table_config(DPMPPConfig(spt_partners=str(tmp_path / "missing"))) == {}
    assert partner_table_config(VitConfig()) == {}


def test_a_hand_set_input_path_is_refused():
    params = stage_params()
    params["experiments"]["dpmpp"]["overrides"]["methods"]["dpmpp"]["spt_partners"] = "elsewhere/partners.npz"
    with pytest.raises(OccreidError, match=r"experiment 'dpmpp' sets methods.dpmpp.spt_partners") as err:
        validate(params)
    assert "train stage fills it" in err.value.fix
