"""Paper presets: YAML files of params overrides, merged into params.yaml by one command.

A preset (``workflow/presets/<name>.yaml``) is a mapping shaped like params.yaml that deep-merges into it —
typically a new entry under ``experiments`` carrying the paper's settings as overrides, plus the dataset's
``datasets`` entry. Applying it edits params.yaml itself (so DVC sees the change and ``dvc repro`` runs the
new experiment) with a round-trip YAML library that keeps the user's comments and layout (ruamel.yaml,
which DVC itself depends on). The merged result is validated before it is written, and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from .errors import OccreidError, did_you_mean
from .io import write_text

PRESETS_DIR = Path("workflow/presets")


def list_presets(presets_dir: str | Path = PRESETS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(presets_dir).glob("*.yaml"))


def preset_path(name: str, presets_dir: str | Path = PRESETS_DIR) -> Path:
    """A preset's file, from its name or its path; unknown names list the available presets."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    path = Path(presets_dir) / f"{name}.yaml"
    if not path.is_file():
        raise OccreidError(f"unknown preset '{name}'", path=presets_dir, fix=did_you_mean(name, list_presets(presets_dir)))
    return path


def _yaml() -> YAML:
    y = YAML()  # round-trip mode: comments, key order and flow style survive
    y.preserve_quotes = True
    y.width = 120
    # Write null as `null`, as params.yaml spells it (ruamel's default writes nothing after the colon).
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _load(path: Path) -> Any:
    try:
        return _yaml().load(path.read_text(encoding="utf-8"))
    except Exception as e:  # ruamel raises several parser/scanner error types
        raise OccreidError(f"not valid YAML: {e}", path=path, fix="correct the syntax at the line shown") from None


def _merge_into(target: CommentedMap, overrides: Any, where: str) -> None:
    """Deep-merge ``overrides`` into the round-trip mapping ``target`` in place (mappings merge, rest replaces)."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value, f"{where}.{key}" if where else str(key))
        else:
            target[key] = value


def merge_into_params(overrides: dict, params_file: str | Path = "params.yaml", *,
                      validate: Callable[[dict], None] | None = None) -> None:
    """Deep-merge ``overrides`` into ``params_file`` keeping its comments and layout; ``validate`` receives the
    merged params as plain dicts and raises :class:`OccreidError` when they are invalid (nothing is written)."""
    params_file = Path(params_file)
    if not params_file.is_file():
        raise OccreidError("params file not found", path=params_file, fix="run from the project folder")
    params = _load(params_file)
    _merge_into(params, overrides, "")
    buf = io.StringIO()
    _yaml().dump(params, buf)
    text = buf.getvalue()
    if validate is not None:
        import yaml  # plain data for the validator

        validate(yaml.safe_load(text))
    write_text(params_file, text)


def apply_preset(
    preset: str | Path,
    params_file: str | Path = "params.yaml",
    *,
    presets_dir: str | Path = PRESETS_DIR,
    validate: Callable[[dict], None] | None = None,
) -> dict:
    """Merge a preset into ``params_file`` (see :func:`merge_into_params`); return the preset's overrides
    (as plain data)."""
    path = preset_path(str(preset), presets_dir)
    overrides = _load(path)
    if not isinstance(overrides, dict) or not overrides:
        raise OccreidError("a preset must be a non-empty mapping of params sections", path=path)
    merge_into_params(overrides, params_file, validate=validate)
    import yaml

    return yaml.safe_load(io.StringIO(path.read_text(encoding="utf-8")))


def seed_replicates(experiments: dict, name: str, seeds: list[int]) -> dict[str, dict]:
    """``{<name>_seed<k>: entry}``: copies of experiment ``name`` with ``train.seed`` = k and
    ``replicate_of: name``, the entries ``occreid replicate`` adds (the tables average them with ``name``)."""
    import copy

    if name not in experiments:
        raise OccreidError(f"unknown experiment '{name}'", path="params.yaml", fix=did_you_mean(name, experiments))
    original = experiments[name] or {}
    if original.get("replicate_of"):
        raise OccreidError(f"'{name}' is itself a replicate of '{original['replicate_of']}'",
                           fix=f"replicate '{original['replicate_of']}'")
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise OccreidError(f"seeds must be distinct non-negative ints, got {seeds}")
    out = {}
    for seed in seeds:
        entry = copy.deepcopy(dict(original))
        entry["overrides"] = entry.get("overrides") or {}
        entry["overrides"].setdefault("train", {})["seed"] = seed
        entry["replicate_of"] = name
        out[f"{name}_seed{seed}"] = entry
    return out


def expand_rows(preset: dict, experiment: str, rows: dict[str, dict]) -> dict:
    """A preset of one experiment per row: ``<experiment>_<row>`` is ``experiment`` of ``preset`` with the row's
    overrides deep-merged into its own (a row is an ``overrides`` mapping: ``{"methods": {...}, "spt": {...}}``).
    The preset's other sections (``datasets``, ``dataset_stages``) are kept, so the result is as self-contained as
    ``preset``. Used to write the ablation presets from the method's rows, so they cannot drift from them."""
    import copy

    from .config import merge

    base = (preset.get("experiments") or {}).get(experiment)
    if not isinstance(base, dict):
        raise OccreidError(f"the preset has no experiment '{experiment}'",
                           fix=did_you_mean(experiment, preset.get("experiments") or {}))
    out = {k: copy.deepcopy(v) for k, v in preset.items() if k != "experiments"}
    out["experiments"] = {}
    for row, overrides in rows.items():
        entry = copy.deepcopy(base)
        entry["overrides"] = merge(entry.get("overrides") or {}, overrides)
        out["experiments"][f"{experiment}_{row}"] = entry
    return out


def dpmpp_ablation_rows() -> dict[str, dict]:
    """Row name → overrides of DPM++'s ablation preset: each row of ``ABLATIONS`` (but ``full``) and ``VARIANTS``,
    then each value of the ``alpha``, ``alpha1`` and ``alpha2`` sweeps (Fig. 5: the alpha1 / alpha2 values change
    the partner tables, ``spt``). The sweeps keep their default value as a row, so each is complete in the preset."""
    from .methods.dpmpp import ABLATIONS, VARIANTS, sweep_overrides

    rows = {k: {"methods": {"dpmpp": v}} for k, v in {**ABLATIONS, **VARIANTS}.items() if k != "full"}
    for sweep in ("alpha", "alpha1", "alpha2"):
        rows.update(sweep_overrides(sweep))
    return rows


DPMPP_ABLATIONS = ("dpmpp_occluded_duke", "dpmpp_occluded_duke_ablations")  # base preset → generated preset
ABLATION_HEADER = """\
# GENERATED by `python scripts/render_ablation_preset.py` from {base}.yaml and the ABLATIONS /
# VARIANTS / SWEEPS of occreid.methods.dpmpp: do not edit (tests/test_dpmpp_presets.py fails when stale).
# DPM++ ablations and sweeps on Occluded-Duke (the paper's ablation dataset): one experiment per row of
# ABLATIONS (but "full", which is {base}.yaml's experiment) and VARIANTS, and per value of
# SWEEPS["alpha"], ["alpha1"], ["alpha2"]. Each row is the full model's experiment (self-contained:
# inherit: defaults, every setting stated) with the row's change. The alpha1 / alpha2 rows (paper Fig. 5)
# override `spt`: each distinct value trains on its own partner table (spt_sets@occluded_duke-alpha1-0p5,
# ...); the rows at the default values share the dataset's table.
"""


def render_ablation_preset(presets_dir: str | Path = PRESETS_DIR) -> str:
    """The text of the DPM++ ablation preset, from its base preset and the method's rows (see above)."""
    import yaml  # plain data: the base preset's comments are not carried over

    base, _ = DPMPP_ABLATIONS
    doc = yaml.safe_load(preset_path(base, presets_dir).read_text(encoding="utf-8"))
    expanded = expand_rows(doc, base, dpmpp_ablation_rows())
    return ABLATION_HEADER.format(base=base) + compact_yaml(expanded)


def compact_yaml(doc: dict) -> str:
    """YAML with every mapping of scalars (or lists) on one flow line, the rest in block style: the layout of the
    hand-written presets (``backbone: {name: ..., stride: 12}``), about half the lines of plain block style."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def mapping(dumper, data):
        leaf = all(not isinstance(v, dict) for v in data.values())
        return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=leaf)

    def sequence(dumper, data):
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True)

    Dumper.add_representer(dict, mapping)
    Dumper.add_representer(list, sequence)
    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=90, allow_unicode=True)
