"""How a train job is started: one process, torchrun on one node, or srun + torchrun on several nodes.

An experiment's ``train.distributed`` (``gpus`` processes per node × ``nodes``) decides it:

- one process: the registry's command, ``python -m stages.train --experiment NAME``;
- one node: ``torchrun --standalone --nproc-per-node G -m stages.train ...`` (a free local port);
- several nodes: ``srun`` starts one torchrun per node, which meet at a c10d rendezvous on the job's first
  node (where the job's shell runs) on a port derived from the job id, so jobs sharing a node do not collide.

The job's shell and its ``tee`` ignore SIGTERM and SIGUSR1, which SLURM sends to every process of a job step
(``--signal=TERM@600``, ``scancel --signal``): the training processes alone act on them — they checkpoint,
log it and exit 75 (occreid/engine/preemption.py) — and torchrun forwards both to its workers
(``--signals-to-handle``).

The Snakefile runs :func:`job_command` and asks SLURM for :func:`job_resources` (GPUs per node; for several
nodes the plugin's ``mpi`` launch with one task per node). ``python -m stages.train`` started by hand or by
``dvc repro`` re-executes itself through :func:`torchrun_argv` on one node.

No torch import here: the Snakefile imports this module, and reads ``train.distributed`` from the raw params
(experiment overrides merged, ``inherit: defaults`` honoured); the defaults are those of
:class:`occreid.engine.config.DistributedConfig` (a test checks they agree).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Mapping

LAUNCHED_STAGES = ("train",)  # stages whose jobs may run as several processes
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"  # forwarded by torchrun to its workers
RDZV_PORT = "$((29500 + SLURM_JOB_ID % 10000))"  # the multi-node rendezvous port, per job
IGNORE_STOP = "trap '' TERM USR1;"  # the job's shell and tee leave SIGTERM / SIGUSR1 to the training processes
RESOURCE_KEYS = ("mem_mb", "runtime", "cpus_per_task", "gpu", "nodes", "tasks", "mpi", "gres", "tasks_per_gpu")


@dataclass(frozen=True)
class Launch:
    gpus: int = 1  # processes per node
    nodes: int = 1

    @property
    def processes(self) -> int:
        return self.gpus * self.nodes


def train_launch(params: Mapping, experiment: str) -> Launch:
    """The ``train.distributed`` processes of ``experiment``: the params' train section (unless the experiment
    inherits the defaults) with the experiment's ``overrides.train.distributed`` on top."""
    spec = (params.get("experiments") or {})[experiment] or {}
    base = {} if spec.get("inherit") == "defaults" else ((params.get("train") or {}).get("distributed") or {})
    over = (((spec.get("overrides") or {}).get("train") or {}).get("distributed") or {})
    merged = {**base, **over}
    return Launch(gpus=int(merged.get("gpus", 1)), nodes=int(merged.get("nodes", 1)))


def torchrun_argv(launch: Launch, module: str, args: list[str]) -> list[str]:
    """``torchrun`` on this node for a one-node launch: ``python -m torch.distributed.run`` of this interpreter."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={launch.gpus}",
            f"--signals-to-handle={TORCHRUN_SIGNALS}", "-m", module, *args]


def launched_command(cmd: str, launch: Launch, cpus: int) -> str:
    """``cmd`` (``python -m MODULE ARGS``) started as ``launch`` asks (see the module docstring)."""
    if launch.processes == 1:
        return cmd
    words = shlex.split(cmd)
    if words[:2] != ["python", "-m"] or len(words) < 3:
        raise ValueError(f"cannot launch {cmd!r} with torchrun: expected 'python -m MODULE ...'")
    module_args = shlex.join(words[2:])
    per_node = f"--nproc-per-node={launch.gpus} --signals-to-handle={TORCHRUN_SIGNALS}"
    if launch.nodes == 1:
        return f"torchrun --standalone {per_node} -m {module_args}"
    return (f"srun --nodes={launch.nodes} --ntasks={launch.nodes} --ntasks-per-node=1 --cpus-per-task={cpus} "
            f"--kill-on-bad-exit=1 torchrun --nnodes={launch.nodes} {per_node} --rdzv-backend=c10d "
            f"--rdzv-endpoint=$(hostname):{RDZV_PORT} --rdzv-id=$SLURM_JOB_ID -m {module_args}")


def job_command(params: Mapping, job) -> str:
    """The shell command of a plan job (stages.registry.Job) as the Snakefile runs it.

    A train job's shell (and the ``tee`` writing its log) ignore the stop signals: SLURM signals every
    process of the job step, and only the training processes should act on them (checkpoint, log it, exit
    75), with the shell still there to report the exit status and the log pipe still open."""
    if job.stage.name not in LAUNCHED_STAGES:
        return job.cmd
    return f"{IGNORE_STOP} {launched_command(job.cmd, train_launch(params, job.key), job.stage.resources.cpus)}"


def job_resources(params: Mapping, job) -> dict:
    """The Snakemake resources of a plan job (keys of :data:`RESOURCE_KEYS`, None = not asked for).

    One node: ``gpu`` = processes per node (the plugin's ``--gpus``). Several nodes: the plugin's MPI launch
    (``mpi: srun``, one task per node: the command's own srun starts them), ``gres: gpu:G`` per node, and
    ``tasks_per_gpu: 0`` so the plugin does not turn the task count into ``--ntasks-per-gpu``.
    """
    r = job.stage.resources
    res: dict = {k: None for k in RESOURCE_KEYS}
    res.update(mem_mb=r.mem_mb, runtime=r.runtime, cpus_per_task=r.cpus, gpu=r.gpus or None)
    if job.stage.name not in LAUNCHED_STAGES:
        return res
    launch = train_launch(params, job.key)
    if launch.nodes == 1:
        if launch.gpus > 1:
            res["gpu"] = launch.gpus
        return res
    res.update(gpu=None, gres=f"gpu:{launch.gpus}", nodes=launch.nodes, tasks=launch.nodes, mpi="srun",
               tasks_per_gpu=0)
    return res
