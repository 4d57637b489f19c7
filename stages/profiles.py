"""Profiles: which of params.yaml's experiments the DAG holds — the fast demo and the full one from one file.

``profile: NAME`` picks an entry of ``profiles``, each a list of experiments it *leaves out*; every other
experiment runs (so an experiment a preset or ``occreid replicate`` adds runs in every profile, without
editing the lists; a listed name that is no experiment is ignored, and ``occreid profile`` points it out).
``profile: null`` runs them all. The demo: ``fast`` (``make demo``) leaves out the seed
replicates, the α1/α2 sweeps, DPM's Table 4 rows and DPEFormer's ablation rows; ``full`` (``make demo-full``) leaves out nothing.

Why this shape: DVC re-runs a job when its params change. The train and evaluate jobs track their own
``experiments.<name>`` entry only, never the profile, so switching profiles runs the jobs the new profile
adds and re-runs nothing else (DVC keeps the lock entries of jobs a profile leaves out, so switching back
finds them done). The tables job renders a table only when all its rows are selected; which experiments are
selected is exactly the set of its metrics dependencies, so DVC re-runs it whenever the selection changes
(it reads the profile as a side param).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from occreid.errors import OccreidError, did_you_mean

PROFILE_KEYS = ("profile", "profiles")  # top-level params keys of this module


def profiles_of(params: Mapping, source: str = "params.yaml") -> dict[str, list[str]]:
    """``profiles`` as name → the experiment names it leaves out (shape checked)."""
    raw = params.get("profiles") or {}
    if not isinstance(raw, Mapping):
        raise OccreidError("'profiles' must be a mapping name → {leave_out: [experiments]}", path=source)
    experiments = params.get("experiments") or {}
    out = {}
    for name, entry in raw.items():
        where = f"profiles.{name}"
        entry = entry or {}
        if not isinstance(entry, Mapping) or set(entry) - {"leave_out"}:
            extra = sorted(set(entry) - {"leave_out"}) if isinstance(entry, Mapping) else []
            raise OccreidError(f"'{where}' must be a mapping {{leave_out: [experiments]}}"
                               + (f"; unknown key '{extra[0]}'" if extra else ""), path=source,
                               fix=did_you_mean(extra[0], ["leave_out"]) if extra else None)
        leave_out = entry.get("leave_out") or []
        if not isinstance(leave_out, list) or not all(isinstance(e, str) for e in leave_out):
            raise OccreidError(f"'{where}.leave_out' must be a list of experiment names", path=source)
        out[str(name)] = list(leave_out)
    return out


def unknown_names(params: Mapping, source: str = "params.yaml") -> dict[str, list[str]]:
    """Profile → the names in its ``leave_out`` that are no experiment (ignored: a profile outlives removing
    an experiment; `occreid profile` lists them, since one may be a typo)."""
    experiments = params.get("experiments") or {}
    found = {name: [e for e in left if e not in experiments] for name, left in profiles_of(params, source).items()}
    return {name: names for name, names in found.items() if names}


def selected_experiments(params: Mapping, source: str = "params.yaml") -> list[str]:
    """The experiments of the active profile, in params.yaml order (all of them when ``profile`` is null or
    absent); an unknown profile, or one that leaves out everything, is an error."""
    experiments = list(params.get("experiments") or {})
    name = params.get("profile")
    if name is None:
        return experiments
    profiles = profiles_of(params, source)
    if name not in profiles:
        raise OccreidError(f"'profile' = {name!r} is not one of the profiles", path=source,
                           fix=did_you_mean(str(name), profiles) if profiles else "add it under 'profiles', or set "
                                                                                   "profile: null (every experiment)")
    left = set(profiles[name])
    chosen = [e for e in experiments if e not in left]
    if not chosen:
        raise OccreidError(f"profile {name!r} leaves out every experiment", path=source,
                           fix=f"shorten profiles.{name}.leave_out")
    return chosen


def tables_in_profile(tables: list[Any], selected: list[str]) -> tuple[list[Any], list[str]]:
    """(table specs whose rows are all selected, names of the ones left out): a table with an explicit
    ``rows`` list needs every row; one without lists the selected experiments."""
    keep, dropped = [], []
    for spec in tables:
        rows = list(getattr(spec, "rows", None) or [])
        (keep if set(rows) <= set(selected) else dropped).append(spec)
    return keep, [getattr(s, "name", "?") for s in dropped]


_PROFILE_LINE = re.compile(r"^profile:[ \t]*([^#\n]*?)[ \t]*(#.*)?$", re.MULTILINE)


def with_profile(text: str, name: str, source: str | Path = "params.yaml") -> str:
    """params.yaml's text with its top-level ``profile:`` line set to ``name`` and nothing else changed (not
    even the layout of long flow mappings, which a YAML round trip reflows); checked by parsing both."""
    lines = _PROFILE_LINE.findall(text)
    if len(lines) != 1:
        raise OccreidError("params.yaml needs exactly one top-level 'profile:' line to switch profiles",
                           path=source, fix="add `profile: fast` (see the demo's params.yaml)")
    out = _PROFILE_LINE.sub(lambda m: f"profile: {name}" + (f"  {m.group(2)}" if m.group(2) else ""), text)
    before, after = yaml.safe_load(text), yaml.safe_load(out)
    if after != {**before, "profile": name}:
        raise OccreidError("could not set 'profile' without changing anything else", path=source,
                           fix=f"edit it by hand: profile: {name}")
    return out
