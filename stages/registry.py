"""The DAG, declared once: every stage's command, inputs, outputs, params keys, resources and fan-out.

Both engines are generated from this module, so they cannot drift apart: ``occreid dag --write`` renders
``dvc.yaml`` from it (:mod:`stages.render_dvc`), and the ``Snakefile`` builds one rule per stage from it in
a loop. :mod:`stages.common` gives a running stage exactly the params keys declared here, so DVC's params
tracking is exact (an evaluation knob re-runs evaluation and tables only).

Templates use ``{dataset}``, ``{experiment}``, ``{method}`` and ``{test_dataset}`` (the dataset an experiment
is evaluated on: its optional ``test_dataset`` key, by default its training ``dataset``). A stage fans out over ``"experiment"``
(one job per entry of ``params.yaml: experiments``), over ``"dataset"`` (one job per dataset that some job
needs, found by walking the dependencies backwards, so datasets no experiment uses are not prepared), or
not at all (``None``). A dependency template naming a placeholder the job does not have (``{experiment}`` in
``tables``) expands over every experiment.

Per-dataset stages a *method* needs (CLIP prompts, saliency, ...) are declared in :data:`METHOD_NEEDS`; a
stage with ``method_needs=True`` (``train``) depends on their outputs for its experiment's dataset, so a
method that does not need a stage does not depend on it and the stage does not run for its dataset.

*Variants.* A per-dataset stage may name a params section (``Stage.variants``, here ``spt`` for
``spt_sets``) that an experiment's ``overrides`` may change. Each distinct setting that experiments train
with gets its own instance, keyed ``<dataset>-<variant>``: the variant is ``default`` when the override
changes nothing, else it is named after what changes (``alpha1-0p6``; see :func:`variant_name`). This is
what lets an α1/α2 sweep (SPT's partner-table thresholds) be a list of experiments like any other sweep,
while experiments with the same setting share one partner table. The variant's instance tracks the base
section and the override of one experiment that uses it (the first by name): exact, since all of them
override the section identically up to keys equal to the base.

*Per-dataset sections.* A per-dataset stage reads one params section (``Stage.config``: ``prompts``,
``saliency``, ``spt``, ``occluders``). A dataset with an entry ``dataset_stages.<dataset>.<section>`` is
configured by that entry alone on top of the code's defaults (the papers' presets state their datasets' stage
settings there), every other dataset by the shared section (the demo). A job tracks exactly the key it reads
(``{config}``).

*What an experiment inherits.* An experiment with ``inherit: params`` (the default) resolves from the shared
``seed`` / ``model`` / ``train`` / ``methods.<method>`` / ``evaluate`` sections and tracks them; one with
``inherit: defaults`` reads only its own entry, so its jobs track only ``experiments.<name>`` (the item fields
``seed_params`` ... ``evaluate_params`` say which). An experiment with ``weights:`` imports a released model
instead of training: its train job needs none of the per-dataset stages of its method (the checkpoint holds
what they would make).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Literal, Mapping

from occreid.errors import OccreidError, did_you_mean
from occreid.registry import Registry
from stages.profiles import selected_experiments

FanOut = Literal["dataset", "experiment"] | None
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")  # experiment/dataset names: used in paths, DVC keys and params keys


@dataclass(frozen=True)
class Out:
    """One output path (template). Flags map onto DVC's output options; Snakemake ignores persisted outputs
    (it would delete them before the job) and wraps ``directory`` ones in ``directory()``."""

    path: str
    directory: bool = False
    persist: bool = False  # kept across re-runs (training checkpoints, for resume)
    cache: bool = True  # False: small text outputs kept in git rather than the DVC cache
    metric: bool = False  # listed under dvc.yaml's top-level ``metrics:``
    plot: Mapping[str, object] | None = None  # DVC plot properties (x, y, ...) for top-level ``plots:``


@dataclass(frozen=True)
class Resources:
    """What a job asks the scheduler for; Snakemake passes these to SLURM (cpus-per-task, mem, time, gpus)."""

    cpus: int = 1
    mem_mb: int = 2000
    gpus: int = 0
    runtime: int = 30  # minutes


@dataclass(frozen=True)
class Stage:
    """One DAG stage. ``deps`` are data produced by other stages (they make the graph's edges); ``code`` are
    source paths DVC hashes (only files among them become Snakemake inputs: a package folder's mtime
    says nothing about its content). ``params`` are dotted params.yaml keys the stage may read (tracked);
    ``side_params`` it may read but which cannot change its outputs (where MLflow logs), so untracked."""

    name: str
    cmd: str
    fanout: FanOut
    deps: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    outs: tuple[Out, ...] = ()
    params: tuple[str, ...] = ()
    side_params: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    method_needs: bool = False  # also depends on the per-dataset stages its method needs (METHOD_NEEDS)
    variants: str | None = None  # per-dataset stage: the section whose overrides make instances (see top)
    config: str | None = None  # per-dataset stage: the params section configuring it (see "Per-dataset sections")

    def wildcards(self) -> tuple[str, ...]:
        """The placeholders that tell this stage's jobs apart (Snakemake's wildcards; DVC's item fields)."""
        if self.fanout == "experiment":
            return ("experiment",)
        if self.fanout == "dataset":
            return ("dataset", f"{self.variants}_variant") if self.variants else ("dataset",)
        return ()

    def key_of(self, values: Mapping[str, str]) -> str | None:
        """The job key (``vit``, ``synthocc``, ``synthocc-default``) from the wildcard values of a job."""
        names = self.wildcards()
        return "-".join(str(values[n]) for n in names) if names else None


STAGES: Registry[Stage] = Registry("stage")
ORDER: list[str] = []  # declaration order = a topological order; dvc.yaml and the Snakefile follow it


def declare(stage: Stage) -> Stage:
    STAGES.register(stage.name)(stage)
    ORDER.append(stage.name)
    return stage


declare(Stage(
    name="prepare_data",
    cmd="python -m stages.prepare_data --dataset {dataset}",
    fanout="dataset",
    code=("stages/prepare_data.py", "occreid/data"),
    outs=(Out("data/prepared/{dataset}", directory=True),),
    params=("datasets.{dataset}", "prepare_data"),
    resources=Resources(cpus=1, mem_mb=4000, runtime=60),
))

# CLIP-ReID stage 1: per-identity text features of a dataset's training split (clipreid, dpmpp).
declare(Stage(
    name="prompts",
    cmd="python -m stages.prompts --dataset {dataset}",
    fanout="dataset",
    deps=("data/prepared/{dataset}",),
    code=("stages/prompts.py", "occreid/prompts", "occreid/models"),
    outs=(Out("data/prompts/{dataset}", directory=True),),
    params=("{config}",),  # prompts (or dataset_stages.<dataset>.prompts), whose backbone is the CLIP encoder
    config="prompts",
    resources=Resources(cpus=4, mem_mb=16000, gpus=1, runtime=120),
))

# Per-patch saliency of the training split: the person masks SPT's partner tables are built from.
declare(Stage(
    name="saliency",
    cmd="python -m stages.saliency --dataset {dataset}",
    fanout="dataset",
    deps=("data/prepared/{dataset}",),
    code=("stages/saliency.py", "occreid/saliency", "occreid/models"),
    outs=(Out("data/saliency/{dataset}", directory=True),),
    params=("{config}",),
    resources=Resources(cpus=4, mem_mb=8000, gpus=1, runtime=60),
    config="saliency",
))

# SPT partner tables (OIoU) from the saliency masks (dpmpp's saliency-guided patch transfer).
declare(Stage(
    name="spt_sets",
    cmd="python -m stages.spt_sets --dataset {dataset} --variant {spt_variant}",
    fanout="dataset",
    deps=("data/prepared/{dataset}", "data/saliency/{dataset}"),
    code=("stages/spt_sets.py", "occreid/augment", "occreid/saliency"),
    outs=(Out("data/spt/{dataset}/{spt_variant}", directory=True),),
    params=("{config}", "{spt_params}"),  # {spt_params}: {config} again for the default variant
    resources=Resources(cpus=2, mem_mb=8000, runtime=60),
    variants="spt",  # experiments may override `spt` (α1/α2 sweeps): one partner table per setting
    config="spt",
))

# DPEFormer's realistic occlusion augmentation: the object library (SAM masks of natural photographs) that the
# experiments training on a dataset paste from. It does not read the dataset's images; it is per dataset so that
# a paper dataset's library is configured by its preset (dataset_stages.<dataset>.occluders) and the demo's by
# the shared section.
declare(Stage(
    name="occluders",
    cmd="python -m stages.occluders --dataset {dataset}",
    fanout="dataset",
    code=("stages/occluders.py", "occreid/occluders"),
    outs=(Out("data/occluders/{dataset}", directory=True),),
    params=("{config}",),  # occluders, or dataset_stages.<dataset>.occluders
    config="occluders",
    resources=Resources(cpus=4, mem_mb=16000, gpus=1, runtime=120),  # SAM ViT-H over 100 SA-1B images
))

declare(Stage(
    name="train",
    cmd="python -m stages.train --experiment {experiment}",
    fanout="experiment",
    deps=("data/prepared/{dataset}",),
    code=("stages/train.py", "occreid/engine", "occreid/methods", "occreid/models", "occreid/losses",
          "occreid/augment", "occreid/data", "occreid/occluders"),
    outs=(
        Out("data/train/{experiment}/model.pt"),
        Out("data/train/{experiment}/history.csv", cache=False, plot={"x": "epoch", "y": "loss"}),
        Out("data/train/{experiment}/train_metrics.json", cache=False, metric=True),
        Out("data/train/{experiment}/checkpoints", directory=True, persist=True, cache=False),
    ),
    params=("{seed_params}", "{model_params}", "{train_params}", "{method_params}", "experiments.{experiment}"),
    side_params=("tracking",),
    resources=Resources(cpus=8, mem_mb=32000, gpus=1, runtime=720),  # ViT-B/CLIP-B, 120 epochs on one GPU
    method_needs=True,
))

declare(Stage(
    name="evaluate",
    cmd="python -m stages.evaluate --experiment {experiment}",
    fanout="experiment",
    deps=("data/prepared/{test_dataset}", "data/train/{experiment}/model.pt"),
    code=("stages/evaluate.py", "occreid/eval", "occreid/methods", "occreid/models", "occreid/data"),
    outs=(
        Out("reports/eval/{experiment}/metrics.json", cache=False, metric=True),
        Out("reports/eval/{experiment}/ranks.npz"),
    ),
    params=("{evaluate_params}", "experiments.{experiment}"),  # the model and its input size come from model.pt
    side_params=("tracking",),
    resources=Resources(cpus=4, mem_mb=16000, gpus=1, runtime=60),
))

declare(Stage(
    name="tables",
    cmd="python -m stages.tables",
    fanout=None,
    deps=("reports/eval/{experiment}/metrics.json",),
    code=("stages/tables.py", "occreid/reports"),
    outs=(Out("reports/tables", directory=True),),
    # The base sections too: a sweep row that does not override the swept key is plotted at its base value.
    params=("tables", "experiments", "model", "train", "methods", "evaluate", "spt"),
    side_params=("profile", "profiles"),  # which tables to render; the selection is already in the deps
    resources=Resources(cpus=1, mem_mb=2000, runtime=15),
))

# Per-dataset stages each method needs before training (besides prepare_data, which every experiment
# needs), run on the experiment's training dataset. A method absent here needs none.
METHOD_NEEDS: dict[str, tuple[str, ...]] = {"clipreid": ("prompts",), "dpmpp": ("prompts", "spt_sets"),
                                            "dpeformer": ("occluders",)}


def placeholders(template: str) -> set[str]:
    """The ``{name}`` fields of a template."""
    return set(re.findall(r"{(\w+)}", template))


def fill(template: str, ctx: Mapping[str, str]) -> str:
    """Format a template with a job's context; a field the job lacks is a registry bug."""
    missing = placeholders(template) - set(ctx)
    if missing:
        raise KeyError(f"template {template!r} needs {sorted(missing)}, the job has {sorted(ctx)}")
    return template.format(**ctx)


def needs(method: str) -> tuple[str, ...]:
    """The per-dataset stages ``method`` depends on (validated against the declared stages)."""
    names = METHOD_NEEDS.get(method, ())
    for name in names:
        if name not in STAGES or STAGES.get(name).fanout != "dataset":
            raise KeyError(f"METHOD_NEEDS[{method!r}] names {name!r}, which is not a per-dataset stage")
    return names


DEFAULT_VARIANT = "default"
_VARIANT_MAX = 48  # longer variant names become a hash


def variant_sections() -> tuple[str, ...]:
    """The sections that make variants of some per-dataset stage (``("spt",)``)."""
    return tuple(dict.fromkeys(STAGES.get(n).variants for n in ORDER if STAGES.get(n).variants))


def method_variant_sections(method: str) -> tuple[str, ...]:
    """The variant sections of the per-dataset stages ``method`` needs (dpmpp: ``("spt",)``; vit: none)."""
    return tuple(dict.fromkeys(STAGES.get(n).variants for n in needs(method) if STAGES.get(n).variants))


def _slug(value) -> str | None:
    """A value as a name part using only letters, digits, '_' and '-' (None: no readable form)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value).replace("-", "m").replace(".", "p").replace("+", "")
    if isinstance(value, str) and NAME_RE.match(value):
        return value
    return None


def variant_name(override, base) -> str:
    """The variant an experiment's override of a section makes: ``default`` when no key differs from the
    base section (so writing the base value explicitly, as a sweep row does, shares the default instance),
    else ``key-value`` parts of the changed keys in key order (``alpha1-0p6``, ``alpha1-0p6_max_roll-0``;
    '.' → 'p', '-' → 'm'), or ``h<hash>`` of the changes when that is not readable or is long."""
    base = base if isinstance(base, Mapping) else {}
    changed = {k: v for k, v in sorted((override or {}).items()) if k not in base or base[k] != v}
    if not changed:
        return DEFAULT_VARIANT
    parts = [(str(k), _slug(v)) for k, v in changed.items()]
    name = "_".join(f"{k}-{v}" for k, v in parts)
    if any(v is None for _, v in parts) or len(name) > _VARIANT_MAX or not NAME_RE.match(name):
        digest = hashlib.sha256(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()
        name = "h" + digest[:10]
    return name


@dataclass(frozen=True)
class Experiment:
    """The part of an experiment the DAG's shape depends on (the rest is read by the stages)."""

    name: str
    dataset: str
    method: str
    test_dataset: str = ""  # "" = dataset
    variants: Mapping[str, str] = field(default_factory=dict)  # section → variant name (absent: default)
    inherit: str = "params"  # "params" | "defaults" (stages.common.ExperimentSpec.inherit)
    imported: bool = False  # weights: a released model is imported, nothing is trained

    def __post_init__(self) -> None:
        if not self.test_dataset:
            object.__setattr__(self, "test_dataset", self.dataset)

    def inherited_keys(self) -> dict[str, str]:
        """``<name>_params`` → the params key each inherited section is tracked at: the shared section, or
        for ``inherit: defaults`` the experiment's own entry (it reads nothing else)."""
        shared = {"seed": "seed", "model": "model", "train": "train", "method": f"methods.{self.method}",
                  "evaluate": "evaluate"}
        own = f"experiments.{self.name}"
        return {f"{k}_params": (v if self.inherit == "params" else own) for k, v in shared.items()}

    def need_paths(self) -> list[str]:
        """The per-dataset outputs its train job reads: none for an imported model."""
        return [] if self.imported else need_paths(self.method, self.dataset, self.variants)

    def variant(self, section: str) -> str:
        return self.variants.get(section, DEFAULT_VARIANT)

    @property
    def ctx(self) -> dict[str, str]:
        """Template placeholder values of this experiment's jobs."""
        ctx = {"experiment": self.name, "dataset": self.dataset, "method": self.method,
               "test_dataset": self.test_dataset}
        ctx.update({f"{s}_variant": self.variant(s) for s in variant_sections()})
        ctx.update(self.inherited_keys())
        return ctx


EXPERIMENT_KEYS = ("dataset", "test_dataset", "method", "overrides", "replicate_of", "inherit", "weights", "weights_sha256")


DATASET_STAGES = "dataset_stages"  # params: dataset → section → that dataset's own stage settings


def config_key(params: Mapping, section: str, dataset: str) -> str:
    """The params key a per-dataset stage reads ``section`` from for ``dataset`` (see "Per-dataset sections")."""
    own = (params.get(DATASET_STAGES) or {}).get(dataset)
    return f"{DATASET_STAGES}.{dataset}.{section}" if isinstance(own, Mapping) and section in own else section


def config_of(params: Mapping, section: str, dataset: str) -> Mapping:
    """The raw settings at :func:`config_key` (``{}`` when absent)."""
    node: object = params
    for part in config_key(params, section, dataset).split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def experiments_of(params: Mapping, source: str = "params.yaml") -> dict[str, Experiment]:
    """Read ``experiments`` (name → {dataset, method, test_dataset, overrides}) with the checks the DAG needs:
    names are safe, each (test) dataset has a ``datasets`` entry and each method of an ``inherit: params``
    experiment a ``methods`` section (DVC tracks ``methods.<method>`` and ``datasets.<dataset>`` by name, so
    they must exist)."""
    exps = params.get("experiments")
    if not isinstance(exps, Mapping) or not exps:
        raise OccreidError("'experiments' must be a non-empty mapping name → {dataset, method, overrides}",
                           path=source, fix="see the demo's 'experiments: {vit: {dataset: synthocc, method: vit}}'")
    datasets = params.get("datasets") or {}
    methods = params.get("methods") or {}
    out = {}
    for name, spec in exps.items():
        where = f"experiments.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise OccreidError(f"experiment name {name!r} may use only letters, digits, '_' and '-'", path=source,
                               fix="rename it (it becomes a folder name and a DVC stage key)")
        if not isinstance(spec, Mapping) or not {"dataset", "method"} <= set(spec):
            raise OccreidError(f"'{where}' must be a mapping with 'dataset' and 'method' (and optional 'overrides')",
                               path=source)
        unknown = set(spec) - set(EXPERIMENT_KEYS)
        if unknown:
            key = sorted(unknown)[0]
            raise OccreidError(f"unknown params key '{where}.{key}'", path=source,
                               fix=did_you_mean(key, EXPERIMENT_KEYS))
        test = spec.get("test_dataset") or spec["dataset"]  # null / absent: evaluated on its training dataset
        for field_, value in (("dataset", spec["dataset"]), ("test_dataset", test)):
            if value not in datasets:
                raise OccreidError(f"'{where}.{field_}' = {value!r} has no entry under 'datasets'",
                                   path=source, fix=did_you_mean(str(value), datasets))
            if not NAME_RE.match(str(value)):
                raise OccreidError(f"dataset name {value!r} may use only letters, digits, '_' and '-'",
                                   path=source)
        inherit = spec.get("inherit") or "params"
        if spec["method"] not in methods and inherit == "params":
            raise OccreidError(f"'{where}.method' = {spec['method']!r} has no section under 'methods'",
                               path=source, fix=f"add '{spec['method']}: {{}}' under 'methods', or "
                                                + did_you_mean(str(spec["method"]), methods))
        overrides = {} if spec.get("overrides") is None else spec["overrides"]
        if not isinstance(overrides, Mapping):
            raise OccreidError(f"'{where}.overrides' must be a mapping of sections", path=source)
        imported = bool(spec.get("weights"))
        variants = {}
        for section in variant_sections():
            override = overrides.get(section)
            if override is not None and not isinstance(override, Mapping):
                raise OccreidError(f"'{where}.overrides.{section}' must be a mapping", path=source)
            if override and section in method_variant_sections(spec["method"]) and not imported:
                variants[section] = variant_name(override, config_of(params, section, spec["dataset"]))
        out[name] = Experiment(name, spec["dataset"], spec["method"], test, variants, str(inherit), imported)
    return out



@dataclass(frozen=True)
class Job:
    """One instance of a stage: ``train@vit``, ``prepare_data@synthocc`` or ``tables``."""

    stage: Stage
    key: str | None  # the dataset or experiment name; None for a stage without fan-out
    ctx: Mapping[str, str]  # placeholder values: dataset / experiment / method
    deps: tuple[str, ...]  # data paths made by other jobs (sorted)

    @property
    def id(self) -> str:
        return self.stage.name if self.key is None else f"{self.stage.name}@{self.key}"

    @property
    def cmd(self) -> str:
        return fill(self.stage.cmd, self.ctx)

    @property
    def outs(self) -> tuple[str, ...]:
        return tuple(fill(o.path, self.ctx) for o in self.stage.outs)

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(fill(p, self.ctx) for p in self.stage.params))  # a default variant: "spt" once

    @property
    def side_params(self) -> tuple[str, ...]:
        return tuple(fill(p, self.ctx) for p in self.stage.side_params)


@dataclass(frozen=True)
class Plan:
    """Every job of the DAG for one params.yaml, in a topological order, with its producer edges."""

    jobs: tuple[Job, ...]
    experiments: Mapping[str, Experiment]

    def job(self, stage: str, key: str | None = None) -> Job:
        for j in self.jobs:
            if j.stage.name == stage and j.key == key:
                return j
        valid = [j.id for j in self.jobs]
        wanted = stage if key is None else f"{stage}@{key}"
        raise OccreidError(f"no job '{wanted}' in this params.yaml's DAG", fix=did_you_mean(wanted, valid))

    def jobs_of(self, stage: str) -> list[Job]:
        return [j for j in self.jobs if j.stage.name == stage]

    def stages(self) -> list[Stage]:
        """Declared stages that have at least one job, in declaration order."""
        present = {j.stage.name for j in self.jobs}
        return [STAGES.get(n) for n in ORDER if n in present]

    def producer(self, path: str) -> Job:
        for j in self.jobs:
            if path in j.outs:
                return j
        raise KeyError(f"no stage produces {path!r}")

    def edges(self) -> set[tuple[str, str]]:
        """(upstream job id, downstream job id) for every data dependency."""
        return {(self.producer(d).id, j.id) for j in self.jobs for d in j.deps}

    def sinks(self) -> list[Job]:
        """Jobs nothing depends on: the targets of ``rule all``."""
        upstream = {u for u, _ in self.edges()}
        return [j for j in self.jobs if j.id not in upstream]


def _deps(stage: Stage, ctx: Mapping[str, str], exps: Mapping[str, Experiment]) -> list[str]:
    """Dependency paths of one job: templates filled from its context, a placeholder it lacks expanded over
    every experiment, plus the outputs of the per-dataset stages its method needs."""
    paths = []
    for template in stage.deps:
        if placeholders(template) <= set(ctx):
            paths.append(fill(template, ctx))
        else:
            paths += [fill(template, {**e.ctx, **ctx}) for e in exps.values()]
    if stage.method_needs:
        paths += exps[ctx["experiment"]].need_paths()
    return sorted(set(paths))


def need_paths(method: str, dataset: str, variants: Mapping[str, str] | None = None) -> list[str]:
    """Outputs of the per-dataset stages ``method`` needs, for ``dataset`` and the experiment's ``variants``
    (section → name; absent: default), persisted outputs excluded."""
    ctx = need_context(dataset, variants)
    return [fill(o.path, ctx) for name in needs(method) for o in STAGES.get(name).outs if not o.persist]


def need_context(dataset: str, variants: Mapping[str, str] | None = None) -> dict[str, str]:
    """The placeholders of a per-dataset output an experiment on ``dataset`` with ``variants`` reads."""
    return {"dataset": dataset, **{f"{s}_variant": (variants or {}).get(s, DEFAULT_VARIANT) for s in variant_sections()}}


def dataset_job_contexts(stage: Stage, params: Mapping, exps: Mapping[str, Experiment]) -> list[dict[str, str]]:
    """Every job context a per-dataset stage could have: one per dataset, and for a stage with variants one
    per (dataset, variant) that an experiment training on it uses, plus the default. ``<section>_params``
    is the params key the variant's override is tracked at (the dataset's section itself for the default);
    ``config`` the key of the section configuring the job (:func:`config_key`)."""
    datasets = list(params.get("datasets") or {})
    config = {d: {"config": config_key(params, stage.config, d)} if stage.config else {} for d in datasets}
    if not stage.variants:
        return [{"dataset": d, **config[d]} for d in datasets]
    section = stage.variants
    tracked: dict[tuple[str, str], str] = {(d, DEFAULT_VARIANT): config_key(params, section, d) for d in datasets}
    for e in sorted(exps.values(), key=lambda e: e.name):
        v = e.variant(section)
        tracked.setdefault((e.dataset, v), f"experiments.{e.name}.overrides.{section}")
    return [{"dataset": d, f"{section}_variant": v, f"{section}_params": key, **config[d]}
            for (d, v), key in tracked.items()]


def build_plan(params: Mapping, source: str = "params.yaml") -> Plan:
    """All jobs for ``params``: experiment stages for every experiment, the no-fan-out stages once, and
    per-dataset stages for exactly the datasets (and variants) some job depends on (walking dependencies
    backwards)."""
    exps = experiments_of(params, source)
    exps = {name: exps[name] for name in selected_experiments(params, source)}  # the active profile's (profiles.py)
    jobs: dict[str, Job] = {}
    for name in ORDER:
        stage = STAGES.get(name)
        if stage.fanout == "experiment":
            for e in exps.values():
                ctx = e.ctx
                jobs[f"{name}@{e.name}"] = Job(stage, e.name, ctx, tuple(_deps(stage, ctx, exps)))
        elif stage.fanout is None:
            jobs[name] = Job(stage, None, {}, tuple(_deps(stage, {}, exps)))
    # Per-dataset jobs on demand: a path wanted by some job, made by a per-dataset stage for one dataset.
    made_by = {fill(o.path, ctx): (s, ctx)
               for s in (STAGES.get(n) for n in ORDER) if s.fanout == "dataset"
               for ctx in dataset_job_contexts(s, params, exps) for o in s.outs}
    wanted = [d for j in jobs.values() for d in j.deps]
    while wanted:
        path = wanted.pop()
        if path not in made_by:
            continue
        stage, ctx = made_by[path]
        key = stage.key_of(ctx)
        if f"{stage.name}@{key}" not in jobs:
            job = Job(stage, key, ctx, tuple(_deps(stage, ctx, exps)))
            jobs[job.id] = job
            wanted += job.deps
    ordered = sorted(jobs.values(), key=lambda j: (ORDER.index(j.stage.name), j.key or ""))
    plan = Plan(tuple(ordered), exps)
    plan.edges()  # every dependency has a producer, or the registry is wrong
    return plan
