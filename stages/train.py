"""Stage ``train``: ``python -m stages.train --experiment NAME [--params params.yaml]``.

Resolves experiment NAME (``train``, ``model`` and ``methods.<method>`` with the experiment's overrides
merged; top-level ``seed`` is the default training seed), loads its prepared dataset, builds the method and
trains it with :func:`occreid.engine.fit` (resumable checkpoints in ``data/train/NAME/checkpoints/``, one
MLflow run with per-epoch curves), then writes ``data/train/NAME/``: ``model.pt`` (weights + the resolved
config evaluation rebuilds the model from), ``history.csv`` (one row per epoch, a DVC plot) and
``train_metrics.json`` (last epoch's scalars, a DVC metric). A user error prints its message and exits 2.

With ``train.distributed`` asking for several processes the stage runs under torchrun (started by the
Snakefile, or re-executing itself through torchrun on one node), and only rank 0 tracks and writes outputs.
SIGTERM / SIGUSR1 stop training with a resumable mid-epoch checkpoint and exit status 75
(occreid/engine/preemption.py); running the same command again resumes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from stages import common
from stages.launch import Launch, torchrun_argv
from stages.params import PARAMS_FILE
from stages.registry import STAGES, fill, need_context, variant_sections

log = logging.getLogger("occreid.stages.train")
PREPARED = Path(common.PREPARED_DIR)
OUT = Path("data/train")
# Method inputs made by per-dataset stages (stages/registry.py METHOD_NEEDS), filled from the experiment's
# training dataset: field of the method config → the output folder (template) of the stage making it.
METHOD_INPUTS = {"text_features": STAGES.get("prompts").outs[0].path,
                 "spt_partners": STAGES.get("spt_sets").outs[0].path,
                 "occluders": STAGES.get("occluders").outs[0].path}


def with_inputs(method_cfg, dataset: str, variants=None):
    """The method config with its DAG inputs (prompts, partner table) pointing at ``dataset``'s outputs (for
    the experiment's ``variants``: its own partner table when it overrides ``spt``) — exactly the folders
    stages/registry.py makes train depend on. Fields a method does not have are left."""
    names = {f.name for f in dataclasses.fields(method_cfg)}
    ctx = need_context(dataset, variants)
    return dataclasses.replace(method_cfg, **{k: fill(v, ctx) for k, v in METHOD_INPUTS.items() if k in names})


def without_inputs(method_cfg):
    """The config saved in model.pt: input paths cleared, since what they held is in the weights (the text
    features are buffers), so evaluation rebuilds the model without the prompts or partner folders."""
    names = {f.name for f in dataclasses.fields(method_cfg)}
    return dataclasses.replace(method_cfg, **{k: None for k in METHOD_INPUTS if k in names})


def partner_table_config(method_cfg) -> dict:
    """``{"spt": {variant, alpha1, alpha2, ...}}``: the settings of the partner table the experiment trains on,
    read from the table's own spt.json (what was built, not what params.yaml says now), so the MLflow run and
    model.pt of an α1/α2 sweep row say which table it used. Empty for a method without partner tables."""
    folder = getattr(method_cfg, "spt_partners", None)
    info = Path(folder) / "spt.json" if folder else None
    if info is None or not info.is_file():
        return {}
    doc = json.loads(info.read_text(encoding="utf-8"))
    return {"spt": {"variant": doc.get("variant"), **doc.get("config", {})}}


def history_csv(history: list[dict]) -> str:
    """Per-epoch history as CSV: ``epoch`` first, then every numeric column seen (blank where absent)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k, v in row.items() if k not in columns and k != "epoch" and _number(v) is not None]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *columns])
    for epoch, row in enumerate(history, start=1):
        writer.writerow([row.get("epoch", epoch), *(_cell(row.get(k)) for k in columns)])
    return buf.getvalue()


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _cell(value) -> str:
    number = _number(value)
    return "" if number is None or not math.isfinite(number) else repr(number)


def summary(history: list[dict], seconds: float) -> dict:
    """train_metrics.json: the last epoch's numeric scalars, the number of epochs and the wall time."""
    last = {k: _number(v) for k, v in (history[-1] if history else {}).items()}
    out = {k: v for k, v in last.items() if v is not None and math.isfinite(v) and k not in ("epoch", "seconds")}
    out.update(epochs=len(history), seconds=round(seconds, 1))
    return out


def train(experiment: str, params_path: str | Path = PARAMS_FILE) -> Path:
    """Train experiment ``experiment`` as params.yaml describes it; returns its output folder."""
    from occreid.data.datasets import create_dataset
    from occreid.engine import fit, save_model
    from occreid.engine.distributed import launched_rank
    from occreid.engine.preemption import StopRequest
    from occreid.engine.seeding import seed_everything
    from occreid.io import write_json, write_text
    from occreid.methods import create_method
    from occreid.tracking import MlflowCallback, TrackingConfig, start_run, tracking_enabled, tracking_uri

    params = common.load("train", experiment, params_path)
    spec = params.get(f"experiments.{experiment}")
    dataset, method_name = spec["dataset"], spec["method"]
    resolved = params.experiment(experiment, ("methods", "train"))
    variants = {s: params.job.ctx[f"{s}_variant"] for s in variant_sections()}
    weights = spec.get("weights")
    # A released model carries what the per-dataset stages would make (CLIP-ReID's prompts: the adapter
    # recomputes the text features), so it is built without their outputs, which its job does not depend on.
    method_cfg = resolved["methods"] if weights else with_inputs(resolved["methods"], dataset, variants)
    train_cfg = resolved["train"]
    tracking = params.section(TrackingConfig, "tracking")
    relaunch_under_torchrun(train_cfg.distributed, experiment, params_path)
    main = launched_rank() == 0  # rank 0 alone tracks and writes; the others train their share and stop
    if not main:
        logging.getLogger("occreid").setLevel(logging.WARNING)

    splits = create_dataset(dataset, PREPARED / dataset, check_counts=False)  # prepare_data checked them
    seed_everything(train_cfg.seed, train_cfg.deterministic)  # before building: a reproducible init
    method = create_method(method_name, method_cfg, splits.num_train_pids, splits.num_cams)
    config = {"experiment": experiment, "dataset": dataset, "method": method_name,
              "methods": {method_name: dataclasses.asdict(without_inputs(method_cfg))}, "train": dataclasses.asdict(train_cfg)}
    config.update(partner_table_config(method_cfg))
    out = OUT / experiment
    start = time.perf_counter()
    if weights:
        config["weights"] = {"file": str(weights)}
    with start_run(experiment, "train", uri=tracking_uri(tracking.uri),
                   enabled=main and tracking_enabled(tracking.enabled),
                   config=config, stage="train", dataset=dataset, method=method_name) as run:
        if weights:  # a released model: imported through its adapter, not trained
            from occreid.models.adapters.released import load_released

            config["weights"]["sha256"] = load_released(method, method_name, weights, spec.get("weights_sha256"))
            log.info("train %s: imported released weights %s (sha256 %s), no training", experiment, weights,
                     config["weights"]["sha256"])
            history = []
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)  # a declared output, empty: nothing trained
        else:
            stop = StopRequest()  # SIGTERM / SIGUSR1: checkpoint and raise Preempted (main() exits 75)
            with stop.installed():
                history = fit(method, splits, train_cfg, out, callbacks=[MlflowCallback(run, log_config=False)],
                              stop=stop)
        if not main:
            return out
        metrics = summary(history, time.perf_counter() - start)
        method.cfg = without_inputs(method.cfg)  # model.pt must not point at the prompts / partner folders
        save_model(out / "model.pt", method, config)
        write_text(out / "history.csv", history_csv(history))
        write_json(out / "train_metrics.json", metrics)
        run.log_metrics({f"final/{k}": v for k, v in metrics.items()})
        run.log_artifact(out / "history.csv")
    log.info("train %s done in %.0f s: model, history and metrics in %s", experiment, metrics["seconds"], out)
    return out


def relaunch_under_torchrun(cfg, experiment: str, params_path: str | Path) -> None:
    """Several processes asked for and this one not started by torchrun: on one node, replace this process
    by torchrun running the same stage (``dvc repro``, a hand-typed command); several nodes need srun."""
    from occreid.engine.distributed import launched_world
    from occreid.errors import OccreidError

    if cfg.world_size == 1 or launched_world()[1] > 1:
        return
    if cfg.nodes > 1:
        raise OccreidError(
            f"experiment '{experiment}' trains on {cfg.nodes} nodes: start it through SLURM",
            fix="run the workflow with `snakemake --profile workflow/profiles/slurm` (it launches srun + torchrun), "
                "or see README 'Several GPUs' for the srun command")
    argv = torchrun_argv(Launch(cfg.gpus, cfg.nodes), "stages.train",
                         ["--experiment", experiment, "--params", str(params_path)])
    log.info("train %s: %d processes, re-executing under torchrun: %s", experiment, cfg.world_size, " ".join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


def main(argv: list[str] | None = None) -> None:
    from occreid.engine.preemption import EXIT_PREEMPTED, Preempted

    parser = argparse.ArgumentParser(prog="python -m stages.train", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", required=True, help="a key of params.yaml 'experiments'")
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: params.yaml)")
    args = parser.parse_args(argv)
    try:
        train(args.experiment, args.params)
    except Preempted as e:
        log.warning("train %s: %s; run the same command again to resume (exit status %d)", args.experiment, e,
                    EXIT_PREEMPTED)
        raise SystemExit(EXIT_PREEMPTED) from None


if __name__ == "__main__":
    common.run(main)
