"""Presets merge into params.yaml, keep its comments, and refuse what would make params invalid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from occreid.errors import OccreidError
from occreid.presets import apply_preset, list_presets

PARAMS = """\
# top comment
seed: 0  # the seed
train:
  epochs: 6  # demo length
  optimizer: {name: adamw, lr: 0.001}
experiments:
  vit: {dataset: synthocc, method: vit, overrides: {}}
"""


def _setup(tmp_path: Path, preset: str) -> tuple[Path, Path]:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "p.yaml").write_text(preset)
    return params, presets


def test_apply_merges_deeply_and_keeps_comments(tmp_path):
    params, presets = _setup(
        tmp_path,
        "train:\n  optimizer: {lr: 0.008}\nexperiments:\n  dpm_x: {dataset: occluded_duke, method: dpm, overrides: {train: {epochs: 150}}}\n",
    )
    apply_preset("p", params, presets_dir=presets)
    text = params.read_text()
    assert "# top comment" in text and "# the seed" in text and "# demo length" in text
    data = yaml.safe_load(text)
    assert data["train"] == {"epochs": 6, "optimizer": {"name": "adamw", "lr": 0.008}}
    assert list(data["experiments"]) == ["vit", "dpm_x"]
    assert data["experiments"]["dpm_x"]["overrides"] == {"train": {"epochs": 150}}
    # applying twice is idempotent
    apply_preset("p", params, presets_dir=presets)
    assert yaml.safe_load(params.read_text()) == data


def test_invalid_result_is_not_written(tmp_path):
    params, presets = _setup(tmp_path, "train:\n  epochz: 3\n")

    def validate(data):
        if "epochz" in data["train"]:
            raise OccreidError("unknown params key 'train.epochz'")

    with pytest.raises(OccreidError, match="epochz"):
        apply_preset("p", params, presets_dir=presets, validate=validate)
    assert params.read_text() == PARAMS


def test_unknown_preset_lists_the_available_ones(tmp_path):
    params, presets = _setup(tmp_path, "seed: 1\n")
    with pytest.raises(OccreidError, match="(?s)unknown preset 'q'.*valid: p"):
        apply_preset("q", params, presets_dir=presets)
    assert list_presets(presets) == ["p"]
