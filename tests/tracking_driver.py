"""Test helper: one process that logs what a train or evaluate stage logs, through the same tracking calls.

``python tests/tracking_driver.py --kind train --job 3 --experiment shared --out DIR --go FILE --stop FILE2``
imports MLflow and occreid.tracking, writes ``DIR/ready``, waits until ``FILE`` exists (so that every driver
starts writing at the same moment), then does what stages/train.py does around ``fit``: ``start_run`` with
the resolved config, an :class:`MlflowCallback` fed one epoch after the other, then — with its run still open
until ``FILE2`` exists, so that it overlaps whatever else the test runs — ``history.json``, final metrics and
``history.csv`` as an artifact; or what stages/evaluate.py does: ``start_run``, the subset metrics and
``metrics.json``. The store is ``$MLFLOW_TRACKING_URI``. Values are known functions of job and epoch
(:func:`epoch_metrics`, :func:`eval_metrics`) so a test can count every one afterwards.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

EPOCHS = 5
EPOCH_SECONDS = 0.2  # so that the runs overlap and system metrics get sampled


def epoch_metrics(job: int, epoch: int) -> dict[str, float]:
    return {"loss": 10.0 * job + 1.0 / epoch, "acc": epoch / (EPOCHS + job), "lr": 0.001 * job}


def eval_metrics(job: int) -> dict[str, float]:
    return {"all/mAP": job / 10.0, "all/R1": job / 8.0, "occluded/mAP": job / 16.0}


def train_config(job: int) -> dict:
    return {"experiment": "shared", "job": job, "train": {"epochs": EPOCHS, "lr": 0.001 * job}}


def wait_for(path: Path, seconds: float = 240.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {seconds:g} s")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("train", "evaluate"), required=True)
    parser.add_argument("--job", type=int, required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--go", type=Path, required=True)
    parser.add_argument("--stop", type=Path, required=True)
    args = parser.parse_args(argv)

    import mlflow  # noqa: F401  (before the start signal: every driver then writes at the same time)

    from occreid.io import write_json, write_text
    from occreid.tracking import MlflowCallback, start_run

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ready").write_text("")
    wait_for(args.go)

    job = args.job
    if args.kind == "train":
        with start_run(args.experiment, "train", config=train_config(job), stage="train", dataset="synthocc",
                       method="driver", tags={"job": job}) as run:
            callback = MlflowCallback(run, log_config=False)
            history = []
            for epoch in range(1, EPOCHS + 1):
                time.sleep(EPOCH_SECONDS)
                history.append(epoch_metrics(job, epoch))
                callback.on_epoch_end(epoch, history[-1])
            wait_for(args.stop)
            callback.on_train_end(history)
            write_text(args.out / "history.csv", "epoch,loss\n" + "".join(
                f"{e},{m['loss']!r}\n" for e, m in enumerate(history, start=1)))
            run.log_metrics({"final/epochs": EPOCHS, "final/loss": history[-1]["loss"]})
            run.log_artifact(args.out / "history.csv")
    else:
        with start_run(args.experiment, "evaluate", config={"evaluate": {"job": job}}, stage="evaluate",
                       dataset="synthocc", method="driver", tags={"job": job}) as run:
            write_json(args.out / "metrics.json", eval_metrics(job))
            run.log_metrics(eval_metrics(job))
            wait_for(args.stop)
            run.log_artifact(args.out / "metrics.json")
    print(json.dumps({"run_id": run.run_id, "error": run.error}))


if __name__ == "__main__":
    main()
