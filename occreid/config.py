"""Typed, validated configuration: params sections become dataclasses; unknown or mistyped keys are errors.

Each stage describes its section with a dataclass (fields with types and defaults). :func:`from_dict` builds
it from the YAML mapping, recursing into nested dataclasses, and refuses an unknown key with the list of
valid keys (and the closest one), or a value of the wrong type with the expected type — naming the file
and the dotted key. No YAML parsing is written here: PyYAML's ``safe_load`` reads the file.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from occreid.errors import OccreidError, did_you_mean

T = TypeVar("T")
PARAMS_FILE = Path("params.yaml")


def read_yaml(path: str | Path = PARAMS_FILE) -> dict:
    """Read a YAML mapping, with an error naming the file on a missing file or a syntax error."""
    path = Path(path)
    if not path.is_file():
        raise OccreidError("params file not found", path=path, fix="run from the project folder, or pass --params PATH")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise OccreidError(f"not valid YAML: {e}", path=path, fix="correct the syntax at the line shown") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OccreidError("the top level must be a mapping of sections", path=path)
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except OccreidError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else OccreidError(
            f"'{key}' = {value!r} is not one of {' | '.join(_type_name(a) for a in args)}", path=source
        )
    if origin is Literal:
        if value in args:
            return value
        raise OccreidError(f"'{key}' = {value!r} is not allowed", path=source, fix=f"use one of {list(args)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise OccreidError(f"'{key}' must be a mapping of {sorted(f.name for f in dataclasses.fields(tp))}", path=source)
        return from_dict(tp, value, key=key, source=source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise OccreidError(f"'{key}' must be a list, got {value!r}", path=source)
        inner = args[0] if args else Any
        return [_convert(v, inner, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise OccreidError(f"'{key}' must be a mapping, got {value!r}", path=source)
        vt = args[1] if len(args) == 2 else Any
        return {k: _convert(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise OccreidError(f"'{key}' must be {_type_name(tp)}, got {value!r}", path=source)


def from_dict(cls: type[T], data: dict | None, *, key: str = "", source: str | Path = PARAMS_FILE) -> T:
    """Build dataclass ``cls`` from ``data``; missing keys take their defaults, unknown keys are errors."""
    data = data or {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            where = f"{key}.{name}" if key else name
            raise OccreidError(f"unknown params key '{where}'", path=source, fix=did_you_mean(name, fields))
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            value = data[name]
            default = _default_of(f)
            if dataclasses.is_dataclass(default) and isinstance(value, dict):
                # A partial nested section overrides the field's own default instance, not the nested
                # class's defaults: `backbone: {stride: 12}` keeps the backbone name the outer default chose.
                value = merge(dataclasses.asdict(default), value)
            kwargs[name] = _convert(value, hints[name], f"{key}.{name}" if key else name, str(source))
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without default
        raise OccreidError(f"section '{key}' is incomplete: {e}", path=source) from None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested) back to plain dicts/lists, for logging and hashing."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def merge(base: dict, overrides: dict) -> dict:
    """Deep-merge ``overrides`` into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for k, v in (overrides or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
