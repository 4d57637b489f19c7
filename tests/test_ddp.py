"""Data-parallel training: sharded P×K batches, the launch commands, and two processes (torchrun, gloo, CPU)
training with half batches like one process with the whole batch.

Measured (this machine, CPU float32, 7 SGD steps of a P×K = 4×2 batch): the largest parameter difference
between 2 × B/2 and 1 × B is 1.4e-7 for ``vit``, 5.9e-7 for ``dpm`` (two-step update, mask generator with
batch norm, summed head-enrich loss) and 3.2e-7 for ``dpmpp`` (occlusion pairs, masked triplet, pair
consistency), while training moved the parameters by up to 0.25, 0.58 and 0.30; the epoch losses agree to
1.4e-6 (relative). Without the whole-batch batch norm the ``vit`` difference is 1.9e-2. ``batch_scope:
rank`` matches its one-process simulation bit for bit. The tests allow 1e-5.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddp_fixtures import (CASES, NUM_IDS, WORLD, make_method, per_share_vit, run_case, save_records, train_config,
                          write_toy_records)
from occreid.data.sampler import PKBatchSampler
from occreid.engine import fit
from occreid.engine.config import DistributedConfig
from occreid.engine.distributed import (Distributed, ShardedBatchSampler, batch_mean, batch_sum, gather_batch,
                                        global_batch, setup, whole_batch_norm)
from occreid.errors import OccreidError
from stages import launch
from stages.params import read_yaml
from stages.registry import build_plan

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # largest parameter difference allowed between 2 × B/2 and 1 × B (float32 on the CPU)


# ------------------------------------------------------------------------------------------------ sampler
def pk_sampler(p: int = 4, k: int = 2, epoch: int = 3) -> PKBatchSampler:
    pids = [i // 5 for i in range(40)]  # 8 identities × 5 images
    sampler = PKBatchSampler(pids, p, k, seed=11)
    sampler.set_epoch(epoch)
    return sampler


def test_shards_split_every_batch_of_the_one_process_plan_into_whole_identities():
    whole = list(pk_sampler())
    shards = [ShardedBatchSampler(pk_sampler(), rank, 2) for rank in range(2)]
    assert [len(s) for s in shards] == [len(whole)] * 2
    pids = pk_sampler().by_pid
    owner = {i: pid for pid, idxs in pids.items() for i in idxs}
    for batch, first, second in zip(whole, *shards, strict=True):
        assert first + second == batch and len(first) == len(second) == 4
        assert not {owner[i] for i in first} & {owner[i] for i in second}  # P=4 over 2 ranks: 2 whole ids each


def test_shards_resume_mid_epoch_and_forward_the_sampler_state():
    whole = list(pk_sampler())
    shard = ShardedBatchSampler(pk_sampler(), 1, 2)
    shard.skip_next(2)
    assert list(shard) == [b[4:] for b in whole[2:]]
    assert list(shard) == [b[4:] for b in whole]  # the skip applies once
    assert shard.state_dict() == pk_sampler().state_dict()
    shard.load_state_dict({**pk_sampler().state_dict(), "epoch": 9})
    assert shard.base.epoch == 9
    one = ShardedBatchSampler(pk_sampler(), 0, 1)
    assert list(one) == whole  # one process: the batches whole
    odd = ShardedBatchSampler(pk_sampler(p=3, k=1), 0, 2)
    with pytest.raises(OccreidError, match="3 items cannot be split into 2"):
        list(odd)


# ------------------------------------------------------------------------------------ one-process behaviour
def test_whole_batch_helpers_are_the_local_operation_outside_the_global_scope():
    x = torch.randn(4, 3, requires_grad=True)
    assert gather_batch(x, None) == (x, None)
    values = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    with global_batch(False):
        assert batch_sum(values).item() == 7.0 and batch_mean(values).item() == pytest.approx(7 / 3)
    empty = values[:0] * 2
    zero = batch_mean(empty)
    assert zero.item() == 0.0 and zero.requires_grad  # no items: a zero that keeps the graph
    neck = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    plain = neck(x).detach()
    assert len(whole_batch_norm(neck)) == 2 and whole_batch_norm(neck) == []  # hooked once
    torch.testing.assert_close(neck(x), plain, rtol=0, atol=0)  # inert outside the global scope


def test_the_world_must_be_what_the_config_asks_for(monkeypatch):
    cpu = torch.device("cpu")
    assert not setup(DistributedConfig(), cpu).active
    with pytest.raises(OccreidError, match="not started by torchrun") as err:
        setup(DistributedConfig(gpus=2), cpu)
    assert "torchrun --nproc-per-node 2" in err.value.fix
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(OccreidError, match="torchrun started 4 processes.*2 × 1 = 2"):
        setup(DistributedConfig(gpus=2), cpu)
    with pytest.raises(OccreidError, match="ids_per_batch = 3 identities cannot be shared equally by 2"):
        Distributed(world_size=2).check_batch(3)
    Distributed(world_size=2).check_batch(4)
    assert Distributed(rank=0, world_size=2).rank_seed(5) == 5 != Distributed(rank=1, world_size=2).rank_seed(5)


# ------------------------------------------------------------------------------------------ launch commands
def params_with(experiments: dict) -> dict:
    params = read_yaml(ROOT / "params.yaml")
    params["experiments"] = experiments
    return params


EXPERIMENTS = {
    "one": {"dataset": "synthocc", "method": "vit"},
    "node": {"dataset": "synthocc", "method": "vit", "overrides": {"train": {"distributed": {"gpus": 4}}}},
    "nodes": {"dataset": "synthocc", "method": "vit",
              "overrides": {"train": {"distributed": {"gpus": 4, "nodes": 2}}}},
    "fresh": {"dataset": "synthocc", "method": "vit", "inherit": "defaults"},
}


def test_launch_reads_train_distributed_with_overrides_and_inheritance():
    params = params_with(EXPERIMENTS)
    params["train"]["distributed"] = {"gpus": 2}
    got = {name: launch.train_launch(params, name) for name in EXPERIMENTS}
    assert got == {"one": launch.Launch(2, 1), "node": launch.Launch(4, 1), "nodes": launch.Launch(4, 2),
                   "fresh": launch.Launch(1, 1)}  # inherit: defaults ignores params' train section
    defaults = DistributedConfig()
    assert launch.Launch() == launch.Launch(defaults.gpus, defaults.nodes)


def test_train_jobs_run_under_torchrun_and_ask_slurm_for_their_gpus_and_nodes():
    params = params_with(EXPERIMENTS)
    plan = build_plan(params)
    cmd = {k: launch.job_command(params, plan.job("train", k)) for k in ("one", "node", "nodes")}
    res = {k: launch.job_resources(params, plan.job("train", k)) for k in ("one", "node", "nodes")}
    stop = launch.IGNORE_STOP
    assert cmd["one"] == f"{stop} python -m stages.train --experiment one"
    assert cmd["node"] == (f"{stop} torchrun --standalone --nproc-per-node=4 --signals-to-handle="
                           f"{launch.TORCHRUN_SIGNALS} -m stages.train --experiment node")
    assert cmd["nodes"].startswith(f"{stop} srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --cpus-per-task=8 ")
    assert "torchrun --nnodes=2 --nproc-per-node=4" in cmd["nodes"]
    assert "--rdzv-endpoint=$(hostname):" in cmd["nodes"] and "--rdzv-id=$SLURM_JOB_ID" in cmd["nodes"]
    assert "SIGUSR1" in launch.TORCHRUN_SIGNALS and "SIGTERM" in launch.TORCHRUN_SIGNALS
    assert res["one"]["gpu"] == 1 and res["one"]["nodes"] is None
    assert res["node"]["gpu"] == 4 and res["node"]["mpi"] is None
    assert {k: res["nodes"][k] for k in ("gpu", "gres", "nodes", "tasks", "mpi", "tasks_per_gpu")} == {
        "gpu": None, "gres": "gpu:4", "nodes": 2, "tasks": 2, "mpi": "srun", "tasks_per_gpu": 0}
    other = plan.job("evaluate", "node")
    assert launch.job_command(params, other) == other.cmd and launch.job_resources(params, other)["gpu"] == 1


def test_snakemake_renders_the_launch_of_each_train_job(tmp_path):
    """The real Snakefile, dry run: the shell commands and resources Snakemake would hand to SLURM."""
    from tests.dag_fixtures import project_copy, tiny

    def change(params):
        params = tiny(params)
        params["experiments"] = {k: v for k, v in EXPERIMENTS.items() if k != "fresh"}
        params["tables"]["tables"] = []
        return params

    project = project_copy(tmp_path / "project", change)
    targets = [f"data/train/{k}/model.pt" for k in ("one", "node", "nodes")]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "-c2", *targets], cwd=project,
                          env={**os.environ, "PYTHONPATH": str(project)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "torchrun --standalone --nproc-per-node=4" in out and "-m stages.train --experiment node" in out
    assert "srun --nodes=2 --ntasks=2" in out and "torchrun --nnodes=2" in out
    assert "gpu=4" in out and "nodes=2, tasks=2, mpi=srun, gres=gpu:4, tasks_per_gpu=0" in out


# ---------------------------------------------------------------------- two processes versus one process
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    records = write_toy_records(folder / "images")
    return folder, records, save_records(records, folder / "records.json")


@pytest.fixture(scope="module")
def distributed_runs(toy):
    """Every case trained by 2 processes: ``torchrun --nproc-per-node 2`` on the gloo backend."""
    folder, _, records_file = toy
    out = folder / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
           str(ROOT / "tests" / "ddp_fixtures.py"), "--records", str(records_file), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {name: torch.load(out / f"{name}.pt", weights_only=True) for name in CASES}, out


def one_process(records, tmp, name):
    if name == "vit_rank":  # the references' update, computed in one process: mean of the shares' gradients
        method = per_share_vit()
        history = fit(method, records, train_config(1, "global"), tmp / name, resume=False)
        return {k: v.detach().clone() for k, v in method.named_parameters()}, history
    return run_case(name, records, tmp)


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("case", ["vit_global", "dpm_global", "dpmpp_global"])
def test_two_processes_with_half_batches_train_like_one_process_with_the_whole_batch(toy, distributed_runs,
                                                                                    tmp_path, case):
    _, records, _ = toy
    two, _ = distributed_runs
    params, history = one_process(records, tmp_path, case)
    start = {k: v.detach() for k, v in make_method(CASES[case][0]).named_parameters()}
    moved = max_difference(params, start)
    difference = max_difference(params, two[case]["params"])
    assert difference < TOL and moved > 100 * TOL, (difference, moved)
    theirs = two[case]["history"]
    assert [h["iterations"] for h in theirs] == [h["iterations"] for h in history]
    for mine, other in zip(history, theirs, strict=True):
        keys = [k for k in mine if k not in ("seconds", "images_per_s")]
        assert keys == [k for k in other if k not in ("seconds", "images_per_s")]  # same columns, same order
        for k in keys:
            assert other[k] == pytest.approx(mine[k], rel=1e-5, abs=1e-6), k


def test_rank_scope_is_the_mean_of_the_shares_updates_and_differs_from_the_whole_batch(toy, distributed_runs,
                                                                                      tmp_path):
    _, records, _ = toy
    two, _ = distributed_runs
    params, history = one_process(records, tmp_path, "vit_rank")
    assert max_difference(params, two["vit_rank"]["params"]) < TOL
    assert [h["loss"] for h in two["vit_rank"]["history"]] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    # the scope matters: per-share batch losses and batch norm are another objective than the whole batch's
    assert max_difference(two["vit_rank"]["params"], two["vit_global"]["params"]) > 100 * TOL


def test_rank_zero_alone_writes_checkpoints_with_every_ranks_random_state(distributed_runs):
    _, out = distributed_runs
    from occreid.engine.checkpoint import list_checkpoints, load_checkpoint

    found = list_checkpoints(out / "dpm_global" / "checkpoints")
    assert [e for e, _ in found] == [2]
    state = load_checkpoint(found[0][1])
    assert len(state["rank_rng"]) == WORLD and torch.equal(state["rank_rng"][0]["torch"], state["rng"]["torch"])
    assert not torch.equal(state["rank_rng"][0]["torch"], state["rank_rng"][1]["torch"])  # own streams per rank
    assert NUM_IDS == state["model"]["classifier.weight"].shape[0]
