"""Data-parallel training: processes started by torchrun, each training on its share of every P×K batch.

How the parts fit (README "Several GPUs"):

- **Launch.** ``torchrun --nproc-per-node G`` starts the processes and sets ``RANK``, ``WORLD_SIZE`` and
  ``LOCAL_RANK`` (on SLURM, ``srun`` starts one torchrun per node: ``stages/launch.py``). :func:`setup`
  joins the process group (nccl on CUDA, gloo on CPU) and checks the world against ``train.distributed``.
- **Data.** :class:`ShardedBatchSampler` gives rank r the r-th contiguous 1/W of every batch of the plan one
  process would train on. P×K batches are laid out identity by identity, so with P a multiple of W each rank
  holds whole identities (with DPM++'s paired views, which follow their identity).
- **Gradients.** :meth:`Distributed.average_gradients` averages, right before an optimiser steps, the
  gradients of exactly that optimiser's parameters (``TrainContext.step`` calls it). Not
  ``DistributedDataParallel``: its reducer expects one backward over a fixed set of parameters per forward,
  while DPM's step B freezes the main parameters and steps only the mask generator, and DPM++ freezes its
  prototypes while anchoring; DDP copes with that only through ``find_unused_parameters`` and then also
  all-reduces parameters no optimiser steps. Per-step averaging is exact for any such update: a parameter
  with a gradient on some rank is averaged on every rank (zeros where it has none), one with no gradient
  anywhere keeps none, so the optimiser skips it as one process would.
- **The whole batch** (``batch_scope: global``). What is minimised is the mean over ranks of each rank's loss.
  A loss term therefore equals its one-process value when it is (a) a mean of per-sample terms over equal
  shares (ID, ArcFace, image-to-text: nothing to do), (b) computed on the whole batch gathered with its
  gradient, every rank computing the same value (:func:`gather_batch`: batch-hard triplet; batch norm through
  :func:`whole_batch_norm`), or (c) a sum or a mean over a varying number of items, rescaled by
  :func:`batch_sum` / :func:`batch_mean`. Outside :func:`global_batch` (one process, ``batch_scope: rank``,
  evaluation) these helpers are the plain local operation: under ``rank`` each process's batch norm and
  batch losses see its share only, as TransReID, DPM and CLIP-ReID train under DDP.

Every collective here must be called by all ranks in the same order: methods may branch on their config and
on the batch layout (the same on every rank), never on a rank's data.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from occreid.engine.config import DistributedConfig
from occreid.engine.seeding import derive_seed
from occreid.errors import OccreidError

log = logging.getLogger(__name__)
_RANK_STREAM = 2  # derive_seed key of the per-rank streams (loop.py uses 1 for the loader's worker seeds)
_BUCKET_BYTES = 32 * 2**20  # gradients are all-reduced in flat buckets of about this size
TIMEOUT = datetime.timedelta(minutes=30)  # a rank waits this long for the others (rank 0 evaluates, saves)
_GLOBAL = False  # inside global_batch(): losses and batch norm see the whole batch of all ranks


def launched_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the environment torchrun sets; (0, 1, 0) in a plain process."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def launched_rank() -> int:
    """This process's rank (0 when not started by torchrun): stages write outputs and track on rank 0 only."""
    return launched_world()[0]


# ------------------------------------------------------------------------------------------- whole batch
class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the sum over ranks of the gradient of its rows
    (an all-reduce of the full gradient, so any backend works; gloo has no reduce-scatter)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


@contextlib.contextmanager
def global_batch(active: bool) -> Iterator[None]:
    """Within the block (when ``active``), :func:`gather_batch`, :func:`batch_sum`, :func:`batch_mean` and
    whole-batch norm act on the batch of all ranks. The engine enters it around training iterations only."""
    global _GLOBAL
    previous, _GLOBAL = _GLOBAL, bool(active)
    try:
        yield
    finally:
        _GLOBAL = previous


def gather_batch(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The tensors of every rank concatenated along dim 0 in rank order (the one-process batch), with the
    gradient flowing back to each rank's rows; the tensors themselves outside :func:`global_batch`. Every
    rank must hold the same number of rows (the sharded sampler's equal shares); None passes through."""
    if not _GLOBAL:
        return tensors
    out: list[torch.Tensor | None] = []
    for t in tensors:
        if t is None:
            out.append(None)
        elif t.requires_grad:
            out.append(_GatherWithGrad.apply(t))
        else:
            parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
            dist.all_gather(parts, t.contiguous())
            out.append(torch.cat(parts, dim=0))
    return tuple(out)


def batch_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of per-item values over the whole batch, as this rank's share of the objective: the local sum ×
    world size (the ranks' mean is then the sum over all ranks), the local sum outside :func:`global_batch`."""
    total = values.sum()
    return total * dist.get_world_size() if _GLOBAL else total


def batch_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of per-item values over the whole batch when ranks hold different numbers of items (e.g. DPM++'s
    occluded pairs); zero (keeping the graph) when there are none anywhere."""
    if not _GLOBAL:
        return values.mean() if values.numel() else values.sum() * 0.0
    count = torch.tensor([float(values.numel())], dtype=torch.float64, device=values.device)
    dist.all_reduce(count)
    total = float(count.item())
    if total == 0:
        return values.sum() * 0.0
    return values.sum() * (dist.get_world_size() / total)


def _gather_norm_input(module: nn.Module, args: tuple) -> tuple | None:
    if not (_GLOBAL and module.training):
        return None
    module.__dict__["_occreid_rows"] = args[0].shape[0]
    return (gather_batch(args[0])[0], *args[1:])


def _local_norm_rows(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    rows = module.__dict__.pop("_occreid_rows", None)
    if rows is None:
        return None
    start = dist.get_rank() * rows
    return output[start : start + rows]


def whole_batch_norm(module: nn.Module) -> list[Any]:
    """Make every batch norm of ``module`` normalise over the whole batch in :func:`global_batch` while
    training: its input is gathered (with gradient), normalised by the module itself (so its running
    statistics are the one-process ones on every rank) and this rank's rows are returned. Works on any
    device and backend, unlike ``SyncBatchNorm`` (CUDA only); the re-ID models have batch norm only on
    small inputs (BNNeck features, the mask generator's token maps). Returns the hook handles of the batch
    norms that had none yet (a module trained twice is hooked once)."""
    handles = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.__dict__.get("_occreid_whole_batch"):
            m.__dict__["_occreid_whole_batch"] = True
            handles += [m.register_forward_pre_hook(_gather_norm_input), m.register_forward_hook(_local_norm_rows)]
    return handles


# ------------------------------------------------------------------------------------------------ sampler
class ShardedBatchSampler(Sampler[list]):
    """Rank ``rank``'s contiguous 1/``world_size`` share of every batch of ``base`` (a batch sampler with
    ``set_epoch``, ``state_dict``, ``load_state_dict``): the ranks together see exactly the batches of one
    process. With one rank it yields the batches whole. :meth:`skip_next` makes the next pass start at a
    given batch without touching the skipped ones (a resumed epoch)."""

    def __init__(self, base: Any, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a world of {world_size}")
        self.base, self.rank, self.world_size = base, rank, world_size
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def state_dict(self) -> dict:
        return self.base.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state)

    def skip_next(self, batches: int) -> None:
        """The next iteration starts at batch ``batches`` of the epoch (once)."""
        self._skip = batches

    def __len__(self) -> int:
        return len(self.base)

    def __iter__(self) -> Iterator[list]:
        skip, self._skip = self._skip, 0
        for i, batch in enumerate(self.base):
            if i < skip:
                continue
            n = len(batch)
            if n % self.world_size:
                raise OccreidError(f"a batch of {n} items cannot be split into {self.world_size} equal shares",
                                   fix="make train.ids_per_batch a multiple of the number of processes")
            share = n // self.world_size
            yield list(batch[self.rank * share : (self.rank + 1) * share])


# ----------------------------------------------------------------------------------------------- the group
@dataclass
class Distributed:
    """This process's place among the training processes, and the collectives the engine needs.

    The default is one process: every method is then a no-op or the identity."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    batch_scope: str = "global"

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and outputs, logs and tracks."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def whole_batch(self) -> bool:
        """Whether losses and batch norm see the batch of all ranks (``batch_scope: global``, several ranks)."""
        return self.active and self.batch_scope == "global"

    def global_batch(self) -> contextlib.AbstractContextManager:
        return global_batch(self.whole_batch)

    def rank_seed(self, seed: int) -> int:
        """``seed`` on rank 0 (so rank 0 of a run draws what one process draws), an independent stream on the
        other ranks (their augmentations and drop-paths must not repeat rank 0's)."""
        return seed if self.rank == 0 else derive_seed(seed, _RANK_STREAM, self.rank)

    def shard(self, batch_sampler: Any) -> ShardedBatchSampler:
        return ShardedBatchSampler(batch_sampler, self.rank, self.world_size)

    def check_batch(self, ids_per_batch: int) -> None:
        if ids_per_batch % self.world_size:
            raise OccreidError(
                f"train.ids_per_batch = {ids_per_batch} identities cannot be shared equally by {self.world_size} "
                "processes", fix=f"use a multiple of {self.world_size} (each process trains on whole identities)")

    def whole_batch_norm(self, module: nn.Module) -> list[Any]:
        return whole_batch_norm(module) if self.whole_batch else []

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank (they start identical: same seed, same init;
        this makes it a guarantee)."""
        if self.active:
            with torch.no_grad():
                for t in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(t.data, src=0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a small picklable value: a path, a flag)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def average_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Average over ranks the gradients of ``optimizer``'s parameters (see the module docstring)."""
        if not self.active:
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if not params:
            return
        device = params[0].device
        has = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=device)
        dist.all_reduce(has, op=dist.ReduceOp.MAX)
        grads = []
        for p, flag in zip(params, has.tolist()):
            if flag:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
        for bucket in _buckets(grads):
            flat = torch.cat([g.reshape(-1) for g in bucket])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for g in bucket:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()

    def reduce_stats(self, stats: dict[str, float], stop: bool = False) -> tuple[dict[str, float], bool]:
        """(each logged scalar averaged over ranks, whether any rank asked to stop), in one collective. The
        mean of the ranks' per-share means is the whole batch's mean, so the history matches one process."""
        if not self.active:
            return stats, stop
        keys = list(stats)
        values = torch.tensor([float(stats[k]) for k in keys] + [float(bool(stop))], dtype=torch.float64,
                              device=self.device)
        dist.all_reduce(values)
        means = (values[:-1] / self.world_size).tolist()
        return dict(zip(keys, means)), bool(values[-1].item() > 0)


def _buckets(grads: Sequence[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """Consecutive runs of same-dtype gradients of about ``_BUCKET_BYTES`` each."""
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads:
        if bucket and (g.dtype != bucket[0].dtype or size + g.numel() * g.element_size() > _BUCKET_BYTES):
            yield bucket
            bucket, size = [], 0
        bucket.append(g)
        size += g.numel() * g.element_size()
    if bucket:
        yield bucket


def setup(cfg: DistributedConfig, device: torch.device) -> Distributed:
    """Join the processes torchrun started (once per process) and check them against ``cfg``.

    One process with ``gpus = nodes = 1``: a one-process :class:`Distributed`. On CUDA each rank uses GPU
    ``LOCAL_RANK``. The world must be what the config says: the sampler's shares and the fingerprint of the
    checkpoints depend on it.
    """
    rank, world, local_rank = launched_world()
    wanted = cfg.world_size
    if world != wanted:
        if world == 1:
            raise OccreidError(
                f"train.distributed asks for {cfg.gpus} process(es) per node on {cfg.nodes} node(s), but this is one "
                "process, not started by torchrun",
                fix=f"launch it with `torchrun --nproc-per-node {cfg.gpus} -m stages.train --experiment NAME` "
                    "(python -m stages.train does this itself on one node; on SLURM the Snakefile does), or set "
                    "train.distributed.gpus and nodes to 1")
        raise OccreidError(
            f"torchrun started {world} processes, but train.distributed asks for gpus × nodes = "
            f"{cfg.gpus} × {cfg.nodes} = {wanted}",
            fix="launch with --nproc-per-node = train.distributed.gpus and --nnodes = train.distributed.nodes")
    if world == 1:
        return Distributed(device=device)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", cfg.gpus))
    if local_world != cfg.gpus:
        raise OccreidError(f"torchrun started {local_world} processes on this node, train.distributed.gpus is "
                           f"{cfg.gpus}", fix="launch with --nproc-per-node = train.distributed.gpus")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=TIMEOUT)
        atexit.register(_destroy)
        log.info("rank %d of %d joined the process group (%s, device %s, batch scope %s)", rank, world, backend,
                 device, cfg.batch_scope)
    return Distributed(rank=rank, world_size=world, local_rank=local_rank, device=device, batch_scope=cfg.batch_scope)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
