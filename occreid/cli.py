"""The ``occreid`` command (also ``python -m occreid``): the pipeline's housekeeping in one place.

    occreid dag [--write | --check]   show the DAG / render dvc.yaml from stages/registry.py / fail if stale
    occreid params check              validate params.yaml (what every stage does first)
    occreid where                     where the tables, metrics, models and the MLflow store are
    occreid preset list | apply NAME  paper presets: list them / merge one into params.yaml, re-render dvc.yaml
    occreid evaluate-checkpoint --preset NAME --weights FILE   a released model through the DAG, beside the paper
    occreid replicate EXP --seeds 1 2 seed replicates of EXP (its table row becomes mean ± sd over the seeds)
    occreid profile [NAME]            list the profiles / switch to one (fast: make demo, full: make demo-full)
    occreid prepare|train|evaluate|tables ...   run one stage (same as python -m stages.<name> ...)

Why here and not in the stages: ``dvc repro`` and ``snakemake`` run the stages; these commands are for the
person driving them. Commands that only look at the DAG never import torch, so they answer in a second.
A user error prints its message and exits 2; ``dag --check`` exits 1 when dvc.yaml is stale.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Callable

from occreid.errors import OccreidError

STAGE_ALIASES = {"prepare": "prepare_data", "train": "train", "evaluate": "evaluate", "tables": "tables"}


def cmd_dag(args: argparse.Namespace) -> int:
    from stages import render_dvc
    from stages.params import read_yaml
    from stages.registry import build_plan

    root = Path(args.root)
    if args.write:
        path = render_dvc.write(root)
        print(f"wrote {path}")
        return 0
    if args.check:
        try:
            render_dvc.check(root)
        except OccreidError as e:
            print(e.message, file=sys.stderr)
            return 1
        print(f"{root / render_dvc.DVC_FILE} is up to date")
        return 0
    plan = build_plan(read_yaml(root / "params.yaml"), str(root / "params.yaml"))
    upstream: dict[str, list[str]] = {}
    for before, after in sorted(plan.edges()):
        upstream.setdefault(after, []).append(before)
    for job in plan.jobs:
        after = f"  <- {', '.join(upstream[job.id])}" if job.id in upstream else ""
        print(f"{job.id}{after}")
    return 0


def cmd_params_check(args: argparse.Namespace) -> int:
    from stages.common import validate
    from stages.params import read_yaml
    from stages.registry import build_plan

    params = read_yaml(args.params)
    validate(params, args.params)
    plan = build_plan(params, str(args.params))
    print(f"{args.params}: OK ({len(plan.experiments)} experiment(s), {len(plan.jobs)} job(s))")
    return 0


def locations(root: Path, params_file: Path) -> dict[str, object]:
    """Where the pipeline's results are, for ``occreid where`` (paths relative to ``root``)."""
    from occreid.tracking import tracking_uri
    from occreid.tracking.mlflow_store import browse_hint
    from stages.params import read_yaml
    from stages.registry import build_plan

    params = read_yaml(params_file)
    plan = build_plan(params, str(params_file))
    uri = tracking_uri((params.get("tracking") or {}).get("uri"))

    def listed(stage: str, suffix: str) -> list[str]:
        return [p for j in plan.jobs_of(stage) for p in j.outs if p.endswith(suffix)]

    def state(path: str) -> str:
        return "" if (root / path).exists() else "   (not yet built)"

    # What to look at by eye: the synthetic dataset, its saliency maps, the transferred samples per table and
    # the occluder library of each dataset some experiment trains with one on.
    sheets = {"prepare_data": "contact_sheet.png", "saliency": "overlay.png", "spt_sets": "transfer_sheet.png",
              "occluders": "contact_sheet.png"}
    figures = [f"{out}/{name}{state(f'{out}/{name}')}" for stage, name in sheets.items() for j in plan.jobs_of(stage)
               for out in j.outs if stage != "prepare_data" or params["datasets"][j.ctx["dataset"]].get("source") == "synthetic"]
    return {
        "tables": [f"{p}/index.md{state(p)}" for p in listed("tables", "tables")],
        "sheets": figures,
        "metrics": [p + state(p) for p in listed("evaluate", "metrics.json")],
        "models": [p + state(p) for p in listed("train", "model.pt")],
        "mlflow": {"uri": uri, "ui": browse_hint(uri)},
    }


def cmd_where(args: argparse.Namespace) -> int:
    root = Path(args.root)
    info = locations(root, root / "params.yaml")
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("tables:   " + "\n          ".join(info["tables"]))
    print("metrics:  " + "\n          ".join(info["metrics"]))
    print("models:   " + "\n          ".join(info["models"]))
    print("sheets:   " + "\n          ".join(info["sheets"]))
    print(f"MLflow:   {info['mlflow']['uri']}")
    print(f"          browse with: {info['mlflow']['ui']}")
    return 0


def cmd_preset_list(args: argparse.Namespace) -> int:
    from occreid.presets import list_presets

    root = Path(args.root)
    for name in list_presets(root / "workflow" / "presets"):
        print(name)
    return 0


def cmd_preset_apply(args: argparse.Namespace) -> int:
    """Merge a preset into params.yaml — only if the merged file passes the whole-file validation every stage
    runs first (so a preset never leaves a params.yaml the pipeline refuses) — then re-render dvc.yaml, so
    ``dvc repro`` sees the new experiments at once."""
    from occreid.presets import apply_preset
    from stages import render_dvc
    from stages.common import validate

    root = Path(args.root)
    params_file = root / "params.yaml"
    added = apply_preset(args.name, params_file, presets_dir=root / "workflow" / "presets",
                         validate=lambda params: validate(params, params_file))
    render_dvc.write(root)
    experiments = ", ".join(added.get("experiments") or {}) or "none"
    print(f"applied preset {args.name} to {params_file} (experiments: {experiments}); "
          f"re-rendered {root / render_dvc.DVC_FILE}")
    return 0


def cmd_evaluate_checkpoint(args: argparse.Namespace) -> int:
    """Evaluate a released checkpoint with a paper preset in one command: the preset's experiment gets
    ``weights: <file>`` (its train stage imports the file through the method's adapter instead of training),
    the preset is merged into params.yaml (validated), dvc.yaml re-rendered, ``dvc repro evaluate@<experiment>``
    run — so the result is a tracked DAG run like any other — and ours is printed beside the paper's number."""
    import subprocess

    import yaml

    from occreid.presets import merge_into_params, preset_path
    from occreid.reports.collect import load_metrics, metrics_path
    from occreid.reports.paper import comparison, to_markdown
    from stages import render_dvc
    from stages.common import validate

    root = Path(args.root)
    params_file = root / "params.yaml"
    path = preset_path(args.preset, root / "workflow" / "presets")
    preset = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    names = list(preset.get("experiments") or {})
    name = args.experiment or (names[0] if len(names) == 1 else None)
    if name not in names:
        raise OccreidError(f"preset {args.preset} has experiments {names}: say which one the weights are for",
                           path=path, fix="add --experiment NAME")
    weights = Path(args.weights).resolve()
    if not weights.is_file():
        raise OccreidError("checkpoint file not found", path=weights, fix="give the path of the released .pth file")
    entry = preset["experiments"][name]
    entry["weights"] = str(weights)
    if args.sha256:
        entry["weights_sha256"] = args.sha256
    merge_into_params(preset, params_file, validate=lambda params: validate(params, params_file))
    render_dvc.write(root)
    print(f"experiment {name}: preset {args.preset} with weights {weights} written to {params_file}")
    if args.no_run:
        print(f"run it with: dvc repro evaluate@{name}")
        return 0
    proc = subprocess.run(["dvc", "repro", f"evaluate@{name}"], cwd=root)
    if proc.returncode != 0:
        raise OccreidError(f"dvc repro evaluate@{name} failed (exit {proc.returncode})", fix="see its output above")
    metrics = load_metrics(metrics_path(root / "reports" / "eval", name))
    print(to_markdown(f"{name}: released weights, ours beside the paper", comparison([name], {name: metrics}), 1))
    return 0


def cmd_replicate(args: argparse.Namespace) -> int:
    """Add seed replicates of an experiment to params.yaml (validated, comments kept), re-render dvc.yaml:
    the tables then show the experiment's row as mean ± sd over its seeds."""
    import yaml

    from occreid.presets import merge_into_params, seed_replicates
    from stages import render_dvc
    from stages.common import validate

    root = Path(args.root)
    params_file = root / "params.yaml"
    experiments = (yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}).get("experiments") or {}
    added = seed_replicates(experiments, args.experiment, args.seeds)
    existing = sorted(set(added) & set(experiments))
    if existing:
        raise OccreidError(f"params.yaml already has experiment(s) {', '.join(existing)}", path=params_file,
                           fix="choose other seeds, or remove them first")
    merge_into_params({"experiments": added}, params_file, validate=lambda params: validate(params, params_file))
    render_dvc.write(root)
    print(f"added {', '.join(added)} to {params_file} (replicates of {args.experiment}); "
          f"re-rendered {root / render_dvc.DVC_FILE}; run `dvc repro`")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """Without a name: list the profiles (the active one starred). With one: set ``profile`` in params.yaml
    (comments kept; only when it changes) and re-render dvc.yaml, so ``dvc repro`` runs that profile's
    experiments — what ``make demo`` (fast) and ``make demo-full`` (full) do first."""
    from occreid.io import write_text
    from stages import render_dvc
    from stages.params import read_yaml
    from stages.profiles import profiles_of, selected_experiments, unknown_names, with_profile

    root = Path(args.root)
    params_file = root / "params.yaml"
    params = read_yaml(params_file)
    total = len(params.get("experiments") or {})
    if args.name is None:
        active = params.get("profile")
        experiments = params.get("experiments") or {}
        unknown = unknown_names(params, str(params_file))
        for name, left in profiles_of(params, str(params_file)).items():
            runs = sum(e not in left for e in experiments)
            note = f" (leave_out names no experiment: {', '.join(unknown[name])})" if name in unknown else ""
            print(f"{'*' if name == active else ' '} {name}: {runs} of {total} experiments{note}")
        if active is None:
            print(f"* (profile: null) every experiment: {total}")
        return 0
    if params.get("profile") != args.name:
        selected_experiments({**params, "profile": args.name}, str(params_file))  # a known profile, or an error
        write_text(params_file, with_profile(params_file.read_text(encoding="utf-8"), args.name, params_file))
    expected = render_dvc.render_text(params_file)
    dvc_file = root / render_dvc.DVC_FILE
    if not dvc_file.is_file() or dvc_file.read_text(encoding="utf-8") != expected:
        render_dvc.write(root)
    chosen = selected_experiments(read_yaml(params_file), str(params_file))
    print(f"profile {args.name}: {len(chosen)} of {total} experiments in {dvc_file}; run `dvc repro`")
    return 0


def stage_runner(stage: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from stages.common import run as run_stage

        run_stage(importlib.import_module(f"stages.{stage}").main, args.stage_args)
        return 0

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="occreid", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    dag = sub.add_parser("dag", help="show the DAG, render dvc.yaml, or check it is up to date")
    mode = dag.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="render dvc.yaml from stages/registry.py + params.yaml")
    mode.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs from the rendering")
    dag.add_argument("--root", default=".", help="project folder (default: .)")
    dag.set_defaults(func=cmd_dag)

    params = sub.add_parser("params", help="params.yaml tools")
    psub = params.add_subparsers(dest="params_command", required=True)
    check = psub.add_parser("check", help="validate every section, dataset, method and experiment")
    check.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    check.set_defaults(func=cmd_params_check)

    where = sub.add_parser("where", help="print where the tables, metrics, models and MLflow store are")
    where.add_argument("--root", default=".", help="project folder (default: .)")
    where.add_argument("--json", action="store_true", help="machine-readable output")
    where.set_defaults(func=cmd_where)

    preset = sub.add_parser("preset", help="paper presets (workflow/presets/*.yaml)")
    presub = preset.add_subparsers(dest="preset_command", required=True)
    plist = presub.add_parser("list", help="list the presets")
    plist.add_argument("--root", default=".", help="project folder (default: .)")
    plist.set_defaults(func=cmd_preset_list)
    papply = presub.add_parser("apply", help="merge a preset into params.yaml (validated) and re-render dvc.yaml")
    papply.add_argument("name", help="a preset name (see `occreid preset list`) or a .yaml file")
    papply.add_argument("--root", default=".", help="project folder (default: .)")
    papply.set_defaults(func=cmd_preset_apply)

    evc = sub.add_parser("evaluate-checkpoint", help="evaluate a released DPM / CLIP-ReID checkpoint with a paper "
                                                     "preset (a tracked DAG run), print ours beside the paper")
    evc.add_argument("--preset", required=True, help="a preset name (see `occreid preset list`) or a .yaml file")
    evc.add_argument("--weights", required=True, help="the released checkpoint (.pth)")
    evc.add_argument("--sha256", default=None, help="pin the file's sha256 (checked before loading)")
    evc.add_argument("--experiment", default=None, help="the preset's experiment (when it has several)")
    evc.add_argument("--no-run", action="store_true", help="only write params.yaml / dvc.yaml")
    evc.add_argument("--root", default=".", help="project folder (default: .)")
    evc.set_defaults(func=cmd_evaluate_checkpoint)

    rep = sub.add_parser("replicate", help="add seed replicates of an experiment (tables: mean ± sd over seeds)")
    rep.add_argument("experiment", help="an experiment of params.yaml")
    rep.add_argument("--seeds", type=int, nargs="+", required=True, help="train.seed of each replicate")
    rep.add_argument("--root", default=".", help="project folder (default: .)")
    rep.set_defaults(func=cmd_replicate)

    prof = sub.add_parser("profile", help="list the profiles, or switch params.yaml / dvc.yaml to one "
                                          "(fast: make demo, full: make demo-full)")
    prof.add_argument("name", nargs="?", default=None, help="a key of params.yaml 'profiles'")
    prof.add_argument("--root", default=".", help="project folder (default: .)")
    prof.set_defaults(func=cmd_profile)

    for alias, stage in STAGE_ALIASES.items():
        p = sub.add_parser(alias, help=f"run stage {stage} (python -m stages.{stage} ARGS)", add_help=False)
        p.set_defaults(func=stage_runner(stage), stage_args=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)  # a stage alias passes its arguments on to the stage
    if args.command in STAGE_ALIASES:
        args.stage_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.func(args)
    except OccreidError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
