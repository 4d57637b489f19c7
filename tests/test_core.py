"""Shared foundations: atomic writes, registries, params validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from occreid.errors import OccreidError
from occreid.io import atomic_path, write_json
from occreid.registry import Registry
from occreid.config import from_dict, merge, read_yaml


def test_atomic_file_replaced_only_on_success(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"b": 1, "a": 2})
    assert target.read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text().startswith('{\n  "a": 2')  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no partial left behind


def test_atomic_folder_swaps_whole_tree(tmp_path):
    target = tmp_path / "ds"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("1")
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "b.txt").write_text("2")
            raise ValueError
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_registry_refuses_duplicates_and_lists_names():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha")(1)
    reg.register("beta")(2)
    with pytest.raises(KeyError):
        reg.register("alpha")(3)
    assert reg.get("beta") == 2 and reg.names() == ["alpha", "beta"] and len(reg) == 2
    with pytest.raises(OccreidError, match="unknown widget 'alpah'") as e:
        reg.get("alpah")
    assert "did you mean 'alpha'" in str(e.value) and "alpha, beta" in str(e.value)


@dataclass
class Inner:
    lr: float = 0.1
    name: Literal["sgd", "adam"] = "sgd"


@dataclass
class Outer:
    epochs: int = 3
    size: list[int] = field(default_factory=lambda: [128, 64])
    inner: Inner = field(default_factory=Inner)
    path: str | None = None


def test_from_dict_types_defaults_and_nesting():
    cfg = from_dict(Outer, {"epochs": 5, "inner": {"lr": 1}, "path": None})
    assert cfg == Outer(epochs=5, inner=Inner(lr=1.0))
    assert isinstance(cfg.inner.lr, float)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"epoch": 5}, "(?s)unknown params key 'epoch'.*did you mean 'epochs'"),
        ({"inner": {"lrr": 1}}, "unknown params key 'inner.lrr'"),
        ({"epochs": "5"}, "'epochs' must be int"),
        ({"epochs": True}, "'epochs' must be int"),
        ({"inner": {"name": "rmsprop"}}, "'inner.name' = 'rmsprop' is not allowed"),
        ({"size": [128, "x"]}, r"'size\[1\]' must be int"),
        ({"inner": 3}, "'inner' must be a mapping"),
    ],
)
def test_from_dict_rejects_bad_input_with_the_key(data, message):
    with pytest.raises(OccreidError, match=message) as e:
        from_dict(Outer, data, source="params.yaml")
    assert str(e.value).startswith("params.yaml: ")


def test_merge_is_deep_and_does_not_mutate():
    base = {"train": {"epochs": 3, "opt": {"lr": 0.1, "wd": 1}}, "seed": 0}
    out = merge(base, {"train": {"opt": {"lr": 0.2}}, "seed": 1})
    assert out == {"train": {"epochs": 3, "opt": {"lr": 0.2, "wd": 1}}, "seed": 1}
    assert base["train"]["opt"]["lr"] == 0.1


def test_read_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(OccreidError, match="params file not found"):
        read_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(OccreidError, match=f"{bad}: not valid YAML"):
        read_yaml(bad)


@dataclass
class WithCustomDefault:
    inner: Inner = field(default_factory=lambda: Inner(lr=0.5, name="adam"))


def test_partial_nested_section_keeps_the_outer_default():
    cfg = from_dict(WithCustomDefault, {"inner": {"lr": 0.2}})
    assert cfg.inner == Inner(lr=0.2, name="adam")
    assert from_dict(WithCustomDefault, {}).inner == Inner(lr=0.5, name="adam")
