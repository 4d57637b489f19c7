"""What every stage does first: validate params.yaml, then see only the params keys it declares.

Why a gate: DVC re-runs a stage when one of its declared params changes, and only then. A stage that read
a key it did not declare would make DVC's tracking wrong without anyone noticing, so :class:`StageParams`
refuses such a read with an error pointing at ``stages/registry.py``. Every stage also validates the whole
file first (:func:`validate`, the same check as ``occreid params check``), so a typo anywhere fails fast
instead of after an hour of training.

The schema is the library's own dataclasses (``TrainConfig``, ``EvalConfig``, ...), listed in
:data:`SECTIONS` by import path: they are imported only when validating, so the Snakefile and
``occreid dag`` stay fast and free of torch.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, TypeVar

from occreid.errors import OccreidError, did_you_mean

from .params import PARAMS_FILE, from_dict, merge, read_yaml
from .profiles import PROFILE_KEYS, selected_experiments
from .registry import DATASET_STAGES, ORDER, STAGES, Job, build_plan, config_key, config_of, experiments_of

T = TypeVar("T")

# Top-level section → "module:Class" of its schema (a dataclass built with stages.params.from_dict).
SECTIONS: dict[str, str] = {
    "tracking": "occreid.tracking:TrackingConfig",
    "prepare_data": "occreid.data.prepare:PrepareConfig",
    "model": "occreid.models.factory:BackboneConfig",
    "train": "occreid.engine.config:TrainConfig",
    "evaluate": "occreid.eval.config:EvalConfig",
    "tables": "occreid.reports:TablesConfig",
    "prompts": "occreid.prompts:PromptsConfig",
    "saliency": "occreid.saliency:SaliencyConfig",
    "spt": "occreid.augment:SptConfig",
    "occluders": "occreid.occluders.config:OccludersConfig",
}
# Sections an experiment's ``overrides`` may change. ``spt`` (partner tables) gives the experiment its own
# spt_sets instance (stages/registry.py "Variants"), so it needs a method that trains on partner tables.
OVERRIDABLE = ("model", "train", "methods", "evaluate", "spt")
RESOLVED = {"train": ("seed", "train"), "methods": ("model", "methods.{method}"), "evaluate": ("evaluate",)}
PREPARED_DIR = "data/prepared"  # where stages/registry.py expects prepare_data's outputs


@dataclass
class ExperimentSpec:
    """One entry of ``experiments``: which dataset it trains on, which method, deep-merged section overrides,
    and the dataset it is evaluated on (``test_dataset``; None: the training dataset — Occluded-REID is
    only a test set, so its experiments train on market1501)."""

    dataset: str
    method: str
    test_dataset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    replicate_of: str | None = None  # a seed replicate of that experiment (tables: mean ± sd over the seeds)
    # Where the resolved sections start: "params" — params.yaml's model/train/methods/evaluate sections (the
    # demo's rows share them); "defaults" — the schema defaults, so only the overrides and the code's defaults
    # decide (the papers' presets: nothing leaks in from whatever params.yaml they are applied to).
    inherit: Literal["params", "defaults"] = "params"
    # A released checkpoint to import instead of training (dpm, clipreid: occreid/models/adapters/released.py);
    # its sha256 pins the file's bytes (DVC tracks this entry, so the path and hash, not the file).
    weights: str | None = None
    weights_sha256: str | None = None


def schema(ref: str) -> type:
    """Import a schema class from its ``module:Class`` reference."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def method_schema(method: str) -> type:
    """The config dataclass of a method (the schema of ``methods.<method>``), from the method registry."""
    from occreid.methods import METHODS

    return METHODS.get(method).config_cls


def lookup(params: Mapping, dotted: str, source: str | Path = PARAMS_FILE) -> Any:
    """The value at a dotted key (``methods.vit``), with an error naming the missing part."""
    node: Any = params
    done = []
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            where = ".".join(done) or "the top level"
            valid = list(node) if isinstance(node, Mapping) else []
            raise OccreidError(f"params key '{dotted}' is missing ('{part}' not found under {where})",
                               path=source, fix=did_you_mean(part, valid))
        node = node[part]
        done.append(part)
    return node


def validate(params: Mapping, source: str | Path = PARAMS_FILE) -> None:
    """Check the whole file: every section against its schema (unknown/mistyped keys, bad values), every
    dataset and method entry, every experiment after its overrides are merged (so an override typo fails
    too), and that every params key a job declares exists (DVC fails on a missing one)."""
    try:
        _validate(params, str(source))
    except OccreidError as e:  # value checks in the dataclasses' __post_init__ do not know the file
        if e.path is None:
            raise OccreidError(e.problem, path=source, fix=e.fix) from None
        raise


def _validate(params: Mapping, source: str) -> None:
    known = {"seed", "datasets", "methods", "experiments", DATASET_STAGES, *PROFILE_KEYS, *SECTIONS}
    for key in params:
        if key not in known:
            raise OccreidError(f"unknown params key '{key}'", path=source, fix=did_you_mean(str(key), known))
    seed = params.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise OccreidError(f"'seed' must be a non-negative int, got {seed!r}", path=source)
    for name, ref in SECTIONS.items():
        from_dict(schema(ref), params.get(name), key=name, source=source)
    out_dir = (params.get("prepare_data") or {}).get("out_dir", PREPARED_DIR)
    if str(out_dir).rstrip("/") != PREPARED_DIR:
        raise OccreidError(f"'prepare_data.out_dir' = {out_dir!r}, but the DAG reads prepared data from "
                           f"{PREPARED_DIR}", path=source, fix=f"set it back to {PREPARED_DIR}")
    from stages.prepare_data import load_params as dataset_settings

    if not isinstance(params.get("datasets") or {}, Mapping):
        raise OccreidError("'datasets' must be a mapping name → source", path=source)
    for name, entry in (params.get("datasets") or {}).items():
        dataset_settings(name, entry, params.get("prepare_data"), source)
    check_dataset_stages(params, source)
    if not isinstance(params.get("methods") or {}, Mapping):
        raise OccreidError("'methods' must be a mapping name → switches", path=source)
    for name, entry in (params.get("methods") or {}).items():
        from_dict(method_schema(name), entry, key=f"methods.{name}", source=source)
    for name, raw in experiments_of_raw(params, source).items():
        spec = from_dict(ExperimentSpec, raw, key=f"experiments.{name}", source=source)
        for section, value in spec.overrides.items():
            where = f"experiments.{name}.overrides.{section}"
            if section not in OVERRIDABLE:
                raise OccreidError(f"unknown params key '{where}'", path=source, fix=did_you_mean(section, OVERRIDABLE))
            if not isinstance(value, Mapping):
                raise OccreidError(f"'{where}' must be a mapping", path=source)
        if spec.overrides.get("spt") is not None:
            check_variant_override(params, name, spec, source)
        if spec.weights is not None:
            check_weights(name, spec, source)
        resolved = resolve_sections(params, name, tuple(RESOLVED), source)
        check_method_inputs(params, name, spec, resolved["methods"], source)
        if spec.replicate_of is not None:
            check_replicate(params, name, spec, resolved["train"].seed, source)
    selected_experiments(params, source)  # the profile and its leave_out lists
    plan = build_plan(params, source)
    for job in plan.jobs:
        for key in job.params:
            lookup(params, key, source)
    check_self_contained(plan, source)


def configurable_sections() -> tuple[str, ...]:
    """The sections per-dataset stages read (``Stage.config``): what ``dataset_stages.<dataset>`` may hold."""
    return tuple(dict.fromkeys(STAGES.get(n).config for n in ORDER if STAGES.get(n).config))


def dataset_config(params: Mapping, section: str, dataset: str, source: str | Path = PARAMS_FILE) -> Any:
    """The ``section`` settings of ``dataset``'s per-dataset job, as its dataclass: ``dataset_stages.<dataset>.
    <section>`` on top of the code's defaults when the dataset has it, else the shared section."""
    key = config_key(params, section, dataset)
    return from_dict(schema(SECTIONS[section]), dict(config_of(params, section, dataset)), key=key, source=source)


def check_dataset_stages(params: Mapping, source: str) -> None:
    """``dataset_stages``: dataset → {section: settings} for known datasets and per-dataset sections, each valid
    on its own (it inherits nothing from the shared section) and naming one backbone where the stage needs one."""
    raw = params.get(DATASET_STAGES) or {}
    if not isinstance(raw, Mapping):
        raise OccreidError(f"'{DATASET_STAGES}' must be a mapping dataset → {{section: settings}}", path=source)
    datasets, sections = params.get("datasets") or {}, configurable_sections()
    for dataset, entry in raw.items():
        where = f"{DATASET_STAGES}.{dataset}"
        if dataset not in datasets:
            raise OccreidError(f"'{where}' names a dataset with no entry under 'datasets'", path=source,
                               fix=did_you_mean(str(dataset), datasets))
        if not isinstance(entry, Mapping):
            raise OccreidError(f"'{where}' must be a mapping of sections ({', '.join(sections)})", path=source)
        for section in entry:
            if section not in sections:
                raise OccreidError(f"unknown params key '{where}.{section}'", path=source,
                                   fix=did_you_mean(str(section), sections))
            cfg = dataset_config(params, section, dataset, source)
            if getattr(cfg, "dataset_backbones", None):
                raise OccreidError(f"'{where}.{section}.dataset_backbones' is set: a dataset's own settings name "
                                   "one backbone", path=source, fix=f"set {where}.{section}.backbone instead")
            if hasattr(cfg, "backbone_of") and cfg.backbone is None:
                raise OccreidError(f"'{where}.{section}' names no backbone (its settings start from the code's "
                                   "defaults, not from the shared section)", path=source,
                                   fix=f"set {where}.{section}.backbone to the backbone of the experiments "
                                       f"training on {dataset}")


def check_weights(name: str, spec: "ExperimentSpec", source: str) -> None:
    """``weights:`` needs a method with an adapter for released checkpoints."""
    from occreid.models.adapters.released import LOADERS

    if spec.method not in LOADERS:
        raise OccreidError(f"experiment '{name}' sets weights, but method '{spec.method}' has no adapter for "
                           "released checkpoints", path=source,
                           fix=f"weights: works for {', '.join(sorted(LOADERS))}; remove it to train the model")


def check_self_contained(plan: Any, source: str) -> None:
    """An ``inherit: defaults`` experiment takes nothing from the shared sections, its per-dataset inputs
    included: every per-dataset job upstream of its training must read ``dataset_stages.<dataset>``."""
    for name, exp in plan.experiments.items():
        if exp.inherit != "defaults":
            continue
        todo, shared = list(plan.job("train", name).deps), {}
        while todo:
            job = plan.producer(todo.pop())
            todo += job.deps
            if job.stage.config and job.ctx.get("config") == job.stage.config:
                shared[job.id] = job.stage.config
        if shared:
            jobs, sections = sorted(shared), sorted(set(shared.values()))
            raise OccreidError(
                f"experiment '{name}' inherits nothing from params.yaml (inherit: defaults), but {', '.join(jobs)} "
                f"would run with the shared {', '.join(repr(s) for s in sections)} section(s)", path=source,
                fix=f"state {' and '.join(f'{DATASET_STAGES}.{exp.dataset}.{s}' for s in sections)} (the presets "
                    "do), or use inherit: params")


INPUT_PATHS = ("text_features", "spt_partners", "occluders")  # method inputs the train stage fills from the DAG
NEED_SECTIONS = {"prompts": "prompts", "spt_sets": "saliency"}  # per-dataset stage → section naming its backbone


def check_method_inputs(params: Mapping, name: str, spec: ExperimentSpec, cfg: Any, source: str) -> None:
    """The per-dataset outputs a method trains on must fit it: its input paths are left to the train stage
    (a hand-set path would be a dependency DVC does not track), and the prompts / saliency of its training
    dataset are made with its backbone (same name, weights, input size and stride). Checked here so that a
    mismatch fails before any stage runs, not when training loads the outputs."""
    for field_ in INPUT_PATHS:
        if getattr(cfg, field_, None) is not None:
            raise OccreidError(f"experiment '{name}' sets methods.{spec.method}.{field_} = "
                               f"{getattr(cfg, field_)!r}", path=source,
                               fix="leave it null: the train stage fills it with the DAG's output for the "
                                   "experiment's training dataset")
    from occreid.prompts.store import MATCHING_KEYS  # what the methods check in the prompts' meta.json

    from .registry import needs

    if spec.weights is not None:  # a released model: no per-dataset output is read (stages/registry.py)
        return
    mine = dataclasses.asdict(cfg.backbone) if hasattr(cfg, "backbone") else {}
    for stage in needs(spec.method):
        section = NEED_SECTIONS.get(stage)
        if section is None:
            continue
        key = config_key(params, section, spec.dataset)
        theirs = dataclasses.asdict(dataset_config(params, section, spec.dataset, source).backbone_of(spec.dataset))
        diff = [k for k in MATCHING_KEYS if mine.get(k) != theirs.get(k)]
        if diff:
            detail = ", ".join(f"{k}: {key} {theirs[k]!r} vs experiment {mine.get(k)!r}" for k in diff)
            where = (f"{key}.backbone" if key != section else
                     f"{section}.dataset_backbones.{spec.dataset} (or {section}.backbone)")
            raise OccreidError(
                f"experiment '{name}' ({spec.method} on {spec.dataset}) uses another backbone than the {section} "
                f"stage runs for {spec.dataset} ({detail})", path=source,
                fix=f"set {where} to the experiment's backbone: one {stage} output per dataset serves every "
                    "experiment training on it")


def check_variant_override(params: Mapping, name: str, spec: ExperimentSpec, source: str) -> None:
    """An ``overrides.spt`` must change a partner table this experiment trains with, and be a valid section."""
    from .registry import method_variant_sections

    where = f"experiments.{name}.overrides.spt"
    if "spt" not in method_variant_sections(spec.method):
        users = sorted(m for m in (params.get("methods") or {}) if "spt" in method_variant_sections(m))
        raise OccreidError(f"'{where}' has no effect: method '{spec.method}' trains without SPT partner tables",
                           path=source, fix=f"remove it (partner tables are used by: {', '.join(users) or 'no method'})")
    base = config_of(params, "spt", spec.dataset)
    from_dict(schema(SECTIONS["spt"]), merge(dict(base), spec.overrides["spt"]), key=where, source=source)


def _without_seed(overrides: Mapping) -> dict:
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (overrides or {}).items()}
    out.get("train", {}).pop("seed", None)
    return {k: v for k, v in out.items() if not (k == "train" and not v)}


def check_replicate(params: Mapping, name: str, spec: ExperimentSpec, seed: int, source: str) -> None:
    """A seed replicate is its original with another ``train.seed`` and nothing else, so that averaging them
    in a table measures the seed's spread and nothing more."""
    where = f"experiments.{name}.replicate_of"
    experiments = params["experiments"]
    target = spec.replicate_of
    if target not in experiments or target == name:
        raise OccreidError(f"'{where}' = {target!r} is not another experiment", path=source,
                           fix=did_you_mean(str(target), [n for n in experiments if n != name]))
    original = from_dict(ExperimentSpec, experiments[target], key=f"experiments.{target}", source=source)
    if original.replicate_of is not None:
        raise OccreidError(f"'{where}' = {target!r} is itself a replicate (of {original.replicate_of!r})",
                           path=source, fix=f"set replicate_of: {original.replicate_of}")
    for key in ("dataset", "method", "test_dataset", "inherit"):
        if getattr(spec, key) != getattr(original, key):
            raise OccreidError(f"seed replicate '{name}' has {key} {getattr(spec, key)!r}, its original '{target}' "
                               f"{getattr(original, key)!r}", path=source, fix=f"use the same {key}")
    if _without_seed(spec.overrides) != _without_seed(original.overrides):
        raise OccreidError(f"seed replicate '{name}' changes more than train.seed of '{target}'", path=source,
                           fix=f"copy the overrides of '{target}' and change only train.seed "
                               f"(`occreid replicate {target} --seeds N ...` writes them)")
    seeds = {n: resolve_sections(params, n, ("train",), source)["train"].seed
             for n, e in experiments.items() if n == target or (e or {}).get("replicate_of") == target}
    clash = sorted(n for n, s in seeds.items() if s == seed and n != name)
    if clash:
        raise OccreidError(f"seed replicate '{name}' trains with seed {seed}, as '{clash[0]}' does", path=source,
                           fix="give each replicate its own train.seed")


def spt_section(params: "StageParams") -> Any:
    """The resolved ``spt`` section of an spt_sets job: the dataset's section (``{config}``) with its variant's
    override."""
    base = params.job.ctx.get("config", "spt")
    tracked = params.job.ctx.get("spt_params", base)
    raw = params.get(base, {}) or {}
    if tracked != base:
        raw = merge(raw, params.get(tracked) or {})
    return from_dict(schema(SECTIONS["spt"]), raw, key=tracked, source=params.source)


def experiments_of_raw(params: Mapping, source: str) -> Mapping:
    """The raw ``experiments`` mapping, after the DAG-shape checks of :func:`stages.registry.experiments_of`."""
    experiments_of(params, source)
    return params["experiments"]


def resolve_sections(params: Mapping, experiment: str, sections, source: str | Path = PARAMS_FILE) -> dict:
    """Sections of one experiment, overrides deep-merged, built into their dataclasses.

    ``train``: top-level ``seed`` is the default of ``train.seed``. ``methods``: the experiment's own method
    config, whose ``backbone`` defaults to the ``model`` section; overriding another method's section is
    an error (it would have no effect). ``evaluate``: the section with its overrides.
    """
    spec = from_dict(ExperimentSpec, lookup(params, f"experiments.{experiment}", source),
                     key=f"experiments.{experiment}", source=source)
    over = {k: v or {} for k, v in spec.overrides.items()}
    key = f"experiments.{experiment}"
    inherited = _inherited(params, spec)
    out: dict[str, Any] = {}
    for section in sections:
        if section == "methods":
            stray = set(over.get("methods", {})) - {spec.method}
            if stray:
                raise OccreidError(f"'{key}.overrides.methods' changes method(s) {sorted(stray)}, but the "
                                   f"experiment runs '{spec.method}'", path=source,
                                   fix=f"override 'methods.{spec.method}' only")
            cls = method_schema(spec.method)
            base = dict((inherited.get("methods") or {}).get(spec.method) or {})
            if "backbone" in {f.name for f in dataclasses.fields(cls)}:
                model = merge(inherited.get("model") or {}, over.get("model", {}))
                base["backbone"] = merge(model, base.get("backbone") or {})
            elif over.get("model"):
                raise OccreidError(f"'{key}.overrides.model' has no effect: method '{spec.method}' has no "
                                   "backbone setting", path=source, fix="remove it")
            merged = merge(base, over.get("methods", {}).get(spec.method) or {})
            out[section] = from_dict(cls, merged, key=f"{key}.overrides.methods.{spec.method}",
                                     source=source)
        elif section == "train":
            seed = {"seed": inherited["seed"]} if "seed" in inherited else {}
            merged = merge(merge(seed, inherited.get("train") or {}), over.get("train", {}))
            out[section] = from_dict(schema(SECTIONS["train"]), merged, key=f"{key}.overrides.train", source=source)
        elif section == "evaluate":
            merged = merge(inherited.get("evaluate") or {}, over.get("evaluate", {}))
            out[section] = from_dict(schema(SECTIONS["evaluate"]), merged, key=f"{key}.overrides.evaluate", source=source)
        else:
            raise ValueError(f"cannot resolve section {section!r}; resolvable: {sorted(RESOLVED)}")
    return out


def _inherited(params: Mapping, spec: ExperimentSpec) -> Mapping:
    """The params sections an experiment's resolution starts from (see ``ExperimentSpec.inherit``)."""
    if spec.inherit == "defaults":
        return {}
    return {"seed": params.get("seed", 0), **{k: params.get(k) for k in ("model", "train", "methods", "evaluate")}}


class StageParams:
    """The slice of params.yaml one job declared (plus its side params): reading any other key is an error."""

    def __init__(self, params: Mapping, job: Job, source: str | Path = PARAMS_FILE):
        self._params = params
        self.job = job
        self.source = str(source)
        self.allowed = tuple(job.params) + tuple(job.side_params)

    def _covered(self, dotted: str) -> bool:
        return any(dotted == k or dotted.startswith(k + ".") for k in self.allowed)

    def get(self, dotted: str, default: Any = dataclasses.MISSING) -> Any:
        """The value at ``dotted`` if the stage declared it (or a parent of it)."""
        if not self._covered(dotted):
            raise OccreidError(
                f"stage '{self.job.id}' reads params key '{dotted}', which it does not declare "
                f"(declared: {', '.join(self.allowed)})", path="stages/registry.py",
                fix="add the key to the stage's params in stages/registry.py, then run `occreid dag --write` "
                    "so DVC tracks it")
        try:
            return lookup(self._params, dotted, self.source)
        except OccreidError:
            if default is dataclasses.MISSING:
                raise
            return default

    def section(self, cls: type[T], dotted: str) -> T:
        """Section ``dotted`` built into dataclass ``cls`` (missing section → all defaults)."""
        return from_dict(cls, self.get(dotted, {}), key=dotted, source=self.source)

    def experiment(self, name: str, sections) -> dict:
        """The experiment's resolved sections (see :func:`resolve_sections`); every params key they are
        made of must be declared by the stage (for ``inherit: defaults``: its own entry only)."""
        entry = self.get(f"experiments.{name}")
        if (entry.get("inherit") or "params") == "params":
            for section in sections:
                for dotted in RESOLVED[section]:
                    self.get(dotted.format(method=entry["method"]))
        return resolve_sections(self._params, name, sections, self.source)

    def dataset_section(self, cls: type[T]) -> T:
        """The section configuring this per-dataset job (``prompts``, or ``dataset_stages.<dataset>.prompts``:
        stages/registry.py "Per-dataset sections"), built into ``cls``."""
        key = self.job.ctx["config"]
        return from_dict(cls, self.get(key, {}), key=key, source=self.source)


def load(stage: str, key: str | None = None, path: str | Path = PARAMS_FILE, *, check: bool = True) -> StageParams:
    """Validate params.yaml (unless ``check=False``) and return the slice job ``stage@key`` declared."""
    params = read_yaml(path)
    if check:
        validate(params, path)
    job = build_plan(params, str(path)).job(stage, key)
    return StageParams(params, job, path)


def run(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's ``main``: logging to stderr; an :class:`OccreidError` prints its message and exits 2.
    A stage run as its own process (``python -m stages.<name>``) that succeeded ends with :func:`exit_now`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        main(argv)
    except OccreidError as e:
        print(f"error: {e.message}", file=sys.stderr)
        raise SystemExit(2) from None
    if getattr(main, "__module__", None) == "__main__":
        exit_now(0)


def exit_now(code: int) -> None:
    """End the process without the interpreter's teardown: its atexit handlers run (MLflow, logging, DataLoader
    workers), the streams are flushed, then ``os._exit``. Tearing down the modules of torch, torchvision, timm
    and MLflow takes 1-2 s per process, paid by every job of the DAG for nothing (the outputs are written and
    closed by then); 30+ jobs make it a minute of the demo (benchmarks/demo_bench.py)."""
    import atexit
    import os

    atexit._run_exitfuncs()  # public since Python 3.0, named with an underscore
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
