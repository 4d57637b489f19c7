"""Stopping on a signal and resuming: a mid-epoch checkpoint, then the same weights and metrics as a run that
was never stopped — in the library (stop flag, in-process and worker loading) and through the train stage
as SLURM would stop it (SIGTERM mid-epoch; SIGKILL between checkpoints)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddp_fixtures import H, NUM_IDS, W, load_records, save_records, write_toy_records
from occreid.engine import TrainConfig, fit
from occreid.engine.checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from occreid.engine.preemption import EXIT_PREEMPTED, EpochProgress, Preempted, StopRequest
from occreid.engine.seeding import seed_everything
from occreid.methods import create_method
from occreid.methods.vit import VitMethod
from stages.params import from_dict

TIMING = {"seconds", "images_per_s"}  # wall-clock columns: the only ones allowed to differ


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_toy_records(tmp_path_factory.mktemp("toy"))


def noisy_config(**over) -> TrainConfig:
    """Augmentation and drop-path on: every RNG stream (python, numpy, torch, loader workers) is exercised."""
    base = {"epochs": 3, "ids_per_batch": 4, "images_per_id": 2, "log_period": 100, "seed": 3,
            "optimizer": {"name": "sgd", "lr": 0.02}, "scheduler": {"warmup_epochs": 1},
            "transforms": {"size": [H, W], "pad": 2, "flip_p": 0.5, "random_erasing_p": 0.5}, **over}
    return from_dict(TrainConfig, base)


class StopAt(VitMethod):
    """Raises the stop flag during iteration ``at`` = (epoch, 0-based iteration), like a signal arriving then."""

    stop: StopRequest | None = None
    at: tuple[int, int] = (0, 0)

    def train_step(self, batch, ctx):
        logs = super().train_step(batch, ctx)
        if (ctx.epoch, ctx.iteration) == self.at and self.stop is not None:
            self.stop.request("SIGTERM")
        return logs


def stop_at(seed: int) -> StopAt:
    seed_everything(seed)
    cfg = create_method("vit", {"backbone": {"name": "vit_tiny", "img_size": [H, W], "drop_path": 0.1}}, NUM_IDS, 2).cfg
    seed_everything(seed)
    return StopAt(cfg, NUM_IDS, 2)


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in TIMING} for h in history]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("workers", [0, 2])
def test_stop_mid_epoch_writes_a_checkpoint_that_resumes_exactly(records, tmp_path, workers):
    """Stopped after iteration 2 of epoch 2, resumed by a fresh process-like run: same weights, same history.
    With worker processes the resumed pass must load and drop the batches done (worker RNG streams)."""
    cfg = noisy_config(num_workers=workers)
    straight = stop_at(0)
    ref = fit(straight, records, cfg, tmp_path / "straight")

    victim, stop = stop_at(0), StopRequest()
    victim.stop, victim.at = stop, (2, 1)
    with pytest.raises(Preempted) as info:
        fit(victim, records, cfg, tmp_path / "stopped", stop=stop)
    assert (info.value.reason, info.value.epoch, info.value.iteration) == ("SIGTERM", 2, 2)
    path = checkpoint_path(tmp_path / "stopped" / "checkpoints", 1, 2)
    assert info.value.path == path and path.name == "epoch_0001_iter_000002.pt"
    state = load_checkpoint(path)  # weights_only inside
    assert state["epoch"] == 1 and len(state["history"]) == 1 and state["progress"]["iteration"] == 2
    assert set(state["progress"]["sums"]) == {"loss", "id", "triplet"}

    restarted = stop_at(99)  # another init: everything must come from the checkpoint
    resumed = fit(restarted, records, cfg, tmp_path / "stopped")
    assert_same_weights(straight, restarted)
    assert without_timing(resumed) == without_timing(ref)
    assert [e for e, _ in list_checkpoints(tmp_path / "stopped" / "checkpoints")] == [3]  # the partial one pruned


def test_a_stop_in_the_last_iteration_of_an_epoch_resumes_to_the_end_of_that_epoch(records, tmp_path):
    cfg = noisy_config(epochs=2)
    straight = stop_at(0)
    ref = fit(straight, records, cfg, tmp_path / "straight")
    iterations = int(ref[0]["iterations"])
    victim, stop = stop_at(0), StopRequest()
    victim.stop, victim.at = stop, (1, iterations - 1)
    with pytest.raises(Preempted):
        fit(victim, records, cfg, tmp_path / "stopped", stop=stop)
    assert list_checkpoints(tmp_path / "stopped" / "checkpoints")[-1][1].name == f"epoch_0000_iter_{iterations:06d}.pt"
    restarted = stop_at(5)
    assert without_timing(fit(restarted, records, cfg, tmp_path / "stopped")) == without_timing(ref)
    assert_same_weights(straight, restarted)


def test_stop_request_catches_the_signals_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGUSR1)
    stop = StopRequest()
    assert not stop
    with stop.installed():
        os.kill(os.getpid(), signal.SIGUSR1)
        for _ in range(100):  # the handler runs between bytecodes of the main thread
            if stop:
                break
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal (torchrun forwards one) keeps the first reason
        time.sleep(0.05)
    assert stop and stop.reason == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before


def test_epoch_progress_round_trip_and_checkpoint_order(tmp_path):
    p = EpochProgress(4)
    p.add({"loss": 1.5, "id": 1.0}, 8)
    p.add({"loss": 0.5, "id": 0.25}, 8)
    q = EpochProgress.from_state(p.state_dict())
    assert q == p and list(q.sums) == ["loss", "id"] and q.sums["loss"] == 2.0 and q.images == 16
    folder = tmp_path / "ck"
    folder.mkdir()
    for epoch, it in [(2, 0), (1, 0), (1, 7), (0, 3), (10, 0)]:
        checkpoint_path(folder, epoch, it).write_bytes(b"")
    names = [p.name for _, p in list_checkpoints(folder)]
    assert names == ["epoch_0000_iter_000003.pt", "epoch_0001.pt", "epoch_0001_iter_000007.pt", "epoch_0002.pt",
                     "epoch_0010.pt"]


# ------------------------------------------------------------------ the train stage, stopped as SLURM stops it
ROOT = Path(__file__).resolve().parents[1]
NAMES = ("straight", "signalled", "killed")
DDP_NAMES = ("ddp", "ddp_signalled")  # 2 processes (train.distributed.gpus: 2), run by the slow test only


def stage_params(params: dict) -> dict:
    """The tiny demo with identical vit experiments (one output folder each), 3 epochs of about 10 batches, a
    checkpoint every epoch and a log line every iteration (the tests read them to time their signals; the
    third epoch is slack, should a signal land later than aimed on a loaded machine)."""
    from tests.dag_fixtures import tiny

    params = tiny(params)
    params["datasets"]["synthocc"]["generator"]["images_per_id"] = 10
    params["train"].update(epochs=3, checkpoint_period=1, log_period=1)
    params["experiments"] = {n: {"dataset": "synthocc", "method": "vit"} for n in NAMES}
    params["experiments"].update({n: {"dataset": "synthocc", "method": "vit",
                                      "overrides": {"train": {"distributed": {"gpus": 2}}}} for n in DDP_NAMES})
    params["tables"]["tables"] = []
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project copy with the data prepared and the uninterrupted run done."""
    from tests.dag_fixtures import project_copy

    root = project_copy(tmp_path_factory.mktemp("stop") / "project", stage_params)
    run_stage(root, ["-m", "stages.prepare_data", "--dataset", "synthocc"])
    run_stage(root, ["-m", "stages.train", "--experiment", "straight"])
    return root


def stage_env(root: Path, tracking: bool = False) -> dict:
    return {**os.environ, "PYTHONPATH": str(root), "OCCREID_TRACKING": "1" if tracking else "0",
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1"}


def run_stage(root: Path, args: list[str], tracking: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=root, env=stage_env(root, tracking), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def interrupt(root: Path, experiment: str, when: str, sig: signal.Signals) -> tuple[int, str]:
    """Start the train stage, send ``sig`` as soon as its log shows ``when``; (exit status, its log). A stage
    asking for several processes has replaced itself by torchrun, which gets the signal and forwards it."""
    proc = subprocess.Popen([sys.executable, "-m", "stages.train", "--experiment", experiment], cwd=root,
                            env=stage_env(root), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if when in line:
            proc.send_signal(sig)
            break
    _, rest = proc.communicate(timeout=120)
    return proc.returncode, "".join(lines) + (rest or "")


def outputs(root: Path, experiment: str) -> tuple[dict, list[str], dict]:
    """(train_metrics.json without wall-clock keys, history.csv rows without timing columns, model weights)."""
    out = root / "data" / "train" / experiment
    metrics = json.loads((out / "train_metrics.json").read_text())
    rows = [line.split(",") for line in (out / "history.csv").read_text().splitlines()]
    keep = [i for i, col in enumerate(rows[0]) if col not in TIMING]
    history = [",".join(row[i] for i in keep) for row in rows]
    weights = torch.load(out / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in metrics.items() if k not in TIMING}, history, weights


def stopped_at(root: Path, experiment: str) -> tuple[int, int]:
    """(epoch, iteration) of the mid-epoch checkpoint a stopped run left (the only checkpoint kept)."""
    found = list_checkpoints(root / "data" / "train" / experiment / "checkpoints")
    assert len(found) == 1 and "_iter_" in found[0][1].name, [p.name for _, p in found]
    return found[0][0] + 1, int(found[0][1].stem.rsplit("_", 1)[1])


def assert_same_outputs(root: Path, a: str, b: str) -> None:
    ma, ha, wa = outputs(root, a)
    mb, hb, wb = outputs(root, b)
    assert ma == mb and ha == hb
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_mid_epoch_checkpoints_exits_75_and_the_rerun_ends_like_an_uninterrupted_run(project):
    status, log = interrupt(project, "signalled", "epoch 2 iter 1/", signal.SIGTERM)
    assert status == EXIT_PREEMPTED, log[-2000:]
    epoch, iteration = stopped_at(project, "signalled")  # epoch 2, iteration 2 unless the machine lagged
    assert epoch >= 2 and iteration >= 1 and "SIGTERM" in log and "run the same command again to resume" in log
    assert not (project / "data" / "train" / "signalled" / "model.pt").exists()

    resumed = run_stage(project, ["-m", "stages.train", "--experiment", "signalled"])
    assert f"resuming epoch {epoch} after iteration {iteration}" in resumed.stderr
    assert_same_outputs(project, "straight", "signalled")


def test_kill_9_between_checkpoints_resumes_from_the_last_one_to_the_same_result(project):
    status, log = interrupt(project, "killed", "epoch 2 iter 3/", signal.SIGKILL)
    assert status == -signal.SIGKILL
    found = list_checkpoints(project / "data" / "train" / "killed" / "checkpoints")
    assert len(found) == 1 and found[0][1].name == f"epoch_{found[0][0]:04d}.pt", log[-2000:]  # epoch 1's

    resumed = run_stage(project, ["-m", "stages.train", "--experiment", "killed"])
    assert f"resuming after epoch {found[0][0]}" in resumed.stderr
    assert_same_outputs(project, "straight", "killed")


@pytest.mark.slow
def test_two_process_training_stops_on_sigterm_and_resumes_to_the_uninterrupted_result(project):
    """``python -m stages.train`` of an experiment with ``train.distributed.gpus: 2`` re-executes itself under
    torchrun (gloo): rank 0 alone tracks (one MLflow run) and writes the outputs. SIGTERM to torchrun reaches
    both workers, which agree on the iteration to stop at; the re-run resumes to the straight run's result."""
    straight = run_stage(project, ["-m", "stages.train", "--experiment", "ddp"], tracking=True)
    assert "re-executing under torchrun" in straight.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.distributed.gpus"] == "2"

    status, log = interrupt(project, "ddp_signalled", "epoch 2 iter 1/", signal.SIGTERM)
    assert status != 0, log[-3000:]
    assert "stopped by SIGTERM" in log and f"exit status {EXIT_PREEMPTED}" in log, log[-3000:]
    epoch, iteration = stopped_at(project, "ddp_signalled")
    found = list_checkpoints(project / "data" / "train" / "ddp_signalled" / "checkpoints")
    assert len(load_checkpoint(found[0][1])["rank_rng"]) == 2

    resumed = run_stage(project, ["-m", "stages.train", "--experiment", "ddp_signalled"])
    assert f"resuming epoch {epoch} after iteration {iteration}" in resumed.stderr
    assert_same_outputs(project, "ddp", "ddp_signalled")
