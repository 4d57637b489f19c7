"""``fit``: the one training loop every method runs through.

Per epoch: re-seed the sampler and loader streams for this epoch, set the epoch's learning rates, run
``method.train_step`` over the P×K batches (or the batches of the method's own dataset and sampler, see
``ReIDMethod.train_data``; tqdm bar, a log line every ``log_period`` iterations), average the returned
scalars, hand the epoch's metrics to the callbacks, then write a checkpoint every ``checkpoint_period``
epochs and at the end. Restarting with ``resume=True`` continues from the newest checkpoint of the same
configuration and reaches bit-identical weights (on CPU) to an uninterrupted run. A raised ``stop`` flag
(SIGTERM / SIGUSR1: :mod:`occreid.engine.preemption`) ends the run after the current iteration with a
mid-epoch checkpoint, from which a restart continues just as exactly.

Under torchrun every process runs ``fit`` on its share of each batch (:mod:`occreid.engine.distributed`);
rank 0 alone writes checkpoints and runs the callbacks (tracking, evaluation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from tqdm import tqdm

from occreid.data.loader import build_train_loader, train_dataloader
from occreid.data.records import Record, Splits
from occreid.data.transforms import build_train_transform
from occreid.engine import checkpoint as ck
from occreid.engine import distributed as ddp
from occreid.engine.preemption import EpochInterrupted, EpochProgress, Preempted, StopRequest, resume_batches
from occreid.engine.callbacks import CallbackList
from occreid.engine.config import TrainConfig
from occreid.engine.context import TrainContext, resolve_amp, resolve_device
from occreid.engine.optim import build_optimizer
from occreid.engine.schedulers import EpochLR
from occreid.engine.seeding import derive_seed, get_rng_state, seed_everything, set_rng_state
from occreid.errors import OccreidError

if TYPE_CHECKING:
    from occreid.methods.base import ReIDMethod

log = logging.getLogger(__name__)
_LOADER_STREAM = 1  # derive_seed key of the loader's worker-seed stream
_NO_EFFECT = ("log_period", "checkpoint_period", "keep_checkpoints", "eval_period", "loader")  # may change on resume


def _fingerprint(method: ReIDMethod, records: Sequence[Record], cfg: TrainConfig) -> str:
    """Hash of everything that determines the trained weights (config, method, data)."""
    train = {k: v for k, v in asdict(cfg).items() if k not in _NO_EFFECT}
    if cfg.distributed.world_size == 1:  # one process: how it would be distributed changes nothing
        train.pop("distributed")
    data = hashlib.sha256("\n".join(f"{r.path}\t{r.pid}\t{r.camid}" for r in records).encode()).hexdigest()
    blob = {
        "train": train, "method": method.name, "method_config": asdict(method.cfg),
        "num_classes": method.num_classes, "num_cams": method.num_cams, "data": data,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def _newest_usable(ckpt_dir: Path, fingerprint: str) -> dict | None:
    """The newest loadable checkpoint of this configuration; stale ones (other config) are deleted."""
    found = ck.list_checkpoints(ckpt_dir)
    for epoch, path in reversed(found):
        try:
            state = ck.load_checkpoint(path)
        except Exception as e:  # truncated or corrupt file: fall back to an older one
            log.warning("cannot read checkpoint %s (%s); trying an older one", path, e)
            continue
        if state.get("fingerprint") == fingerprint:
            return state
        log.warning("checkpoint %s belongs to another configuration: deleting it, training from scratch", path)
        break
    ck.prune_checkpoints(ckpt_dir, 0)
    return None


def _resume_state(ckpt_dir: Path, fingerprint: str, group: ddp.Distributed) -> dict | None:
    """The checkpoint to resume from. With several processes rank 0 picks it (deleting stale ones) and every
    rank loads that same file, so all of them resume from one state."""
    if not group.active:
        return _newest_usable(ckpt_dir, fingerprint)
    state = _newest_usable(ckpt_dir, fingerprint) if group.is_main else None
    path = None
    if state is not None:
        path = str(ck.checkpoint_path(ckpt_dir, state["epoch"], state.get("progress", {}).get("iteration", 0)))
    path = group.broadcast_object(path)
    if path is not None and not group.is_main:
        state = ck.load_checkpoint(path)
    group.barrier()
    return state


def method_train_loader(method: ReIDMethod, records: list[Record], cfg: TrainConfig, *, pin_memory: bool = False,
                        shard=None):
    """(loader, sampler, worker-seed generator) as :func:`fit` trains with: the method's own dataset and batch
    sampler when it supplies them (:meth:`~occreid.methods.base.ReIDMethod.train_data`), else the P×K loader
    over ``ImageDataset``; ``shard`` wraps the batch sampler (this process's share of each batch, resumable
    mid-epoch; None: the whole batch)."""
    transform = build_train_transform(cfg.transforms)
    custom = method.train_data(records, transform, cfg, cfg.seed)
    if custom is None:
        return build_train_loader(
            records, transform, ids_per_batch=cfg.ids_per_batch, images_per_id=cfg.images_per_id,
            seed=cfg.seed, num_workers=cfg.num_workers, pin_memory=pin_memory, shard=shard, options=cfg.loader,
        )
    dataset, sampler = custom
    return train_dataloader(dataset, shard(sampler) if shard is not None else sampler, seed=cfg.seed,
                            num_workers=cfg.num_workers, pin_memory=pin_memory, options=cfg.loader)


def fit(
    method: ReIDMethod,
    train: Splits | Sequence[Record],
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    callbacks: Sequence[Any] = (),
    resume: bool = True,
    stop: StopRequest | None = None,
) -> list[dict]:
    """Train ``method`` on ``train`` (a Splits' train part or records) for ``cfg.epochs`` epochs.

    Checkpoints go to ``out_dir/checkpoints/``. Returns the per-epoch history (mean of each scalar that
    ``train_step`` returns, ``lr``, ``seconds``, ``images_per_s``, plus what callbacks add), including the
    epochs of a resumed run. Seed the global RNGs before building ``method`` for a reproducible init.
    When ``stop`` is raised, writes a mid-epoch checkpoint and raises
    :class:`~occreid.engine.preemption.Preempted`.
    """
    records = list(train.train if isinstance(train, Splits) else train)
    if tuple(cfg.transforms.size) != tuple(method.img_size):
        raise OccreidError(
            f"train.transforms.size {list(cfg.transforms.size)} differs from the model input size "
            f"{list(method.img_size)}",
            fix="set the same [H, W] in train.transforms.size and the method's backbone img_size",
        )
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    group = ddp.setup(cfg.distributed, resolve_device(cfg.device))
    group.check_batch(cfg.ids_per_batch)
    device = group.device
    seed_everything(group.rank_seed(cfg.seed), cfg.deterministic)
    method.to(device)
    group.broadcast_module(method)
    group.whole_batch_norm(method)

    loader, sampler, loader_gen = method_train_loader(method, records, cfg, pin_memory=device.type == "cuda",
                                                      shard=group.shard)
    specs = method.optimizers(cfg)
    if len({s.name for s in specs}) != len(specs):
        raise ValueError(f"optimizer names must be unique: {[s.name for s in specs]}")
    optimizers = {s.name: build_optimizer(s) for s in specs}
    schedulers = {
        s.name: EpochLR(optimizers[s.name], cfg.scheduler, cfg.epochs, s.config.lr) for s in specs if s.scheduled
    }
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 and device.type == "cuda" else None
    ctx = TrainContext(device=device, optimizers=optimizers, amp_dtype=amp_dtype, scaler=scaler, distributed=group)

    fingerprint = _fingerprint(method, records, cfg)
    history: list[dict] = []
    state = None
    if resume:
        state = _resume_state(ckpt_dir, fingerprint, group)
    elif group.is_main:
        ck.prune_checkpoints(ckpt_dir, 0)  # old ones would otherwise outrank this run's in pruning and resume
    progress = None
    if state is not None:
        method.load_state_dict(state["model"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        ck.restore(scaler, state["scaler"])
        sampler.load_state_dict(state["sampler"])
        ctx.global_step = state["global_step"]
        history = list(state["history"])
        if "progress" in state:  # stopped mid-epoch: that epoch continues where it was
            progress = EpochProgress.from_state(state["progress"])
            log.info("resuming epoch %d after iteration %d (%s)", progress.epoch, progress.iteration, ckpt_dir)
        else:
            log.info("resuming after epoch %d (%s)", state["epoch"], ckpt_dir)
    else:
        method.before_training(records, cfg)  # e.g. DPEFormer's memory bank initialisation
    start = len(history) + 1

    def save(progress: EpochProgress | None = None) -> Path | None:
        """Checkpoint after the epochs in ``history`` (and ``progress`` into the next one); rank 0 writes."""
        rng = group.gather_objects(get_rng_state())
        if not group.is_main:
            return None
        path = ck.checkpoint_path(ckpt_dir, len(history), progress.iteration if progress else 0)
        ck.save_checkpoint(path, {
            "epoch": len(history),
            "fingerprint": fingerprint,
            "model": method.state_dict(),
            "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
            "scaler": scaler.state_dict() if scaler is not None else {},
            "sampler": sampler.state_dict(),
            "global_step": ctx.global_step,
            "history": history,
            "rng": rng[0],
            **({"rank_rng": rng} if group.active else {}),
            **({"progress": progress.state_dict()} if progress is not None else {}),
        })
        ck.prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
        return path

    cbs = CallbackList(callbacks if group.is_main else ())
    cbs.on_train_start({
        "train": asdict(cfg), "method": method.name, "method_config": asdict(method.cfg),
        "num_classes": method.num_classes, "num_cams": method.num_cams, "num_images": len(records),
        "start_epoch": start, "device": str(device),
    })
    if state is not None:  # after the callbacks' start-up, which may draw random numbers in either run
        set_rng_state(state["rank_rng"][group.rank] if group.active else state["rng"])
    log.info(
        "training %s on %d images (%d ids), %d iterations/epoch, epochs %d..%d, device %s, checkpoints in %s",
        method.name, len(records), len({r.pid for r in records}), len(sampler), start, cfg.epochs, device, ckpt_dir,
    )
    main = specs[0].name
    for epoch in range(start, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        loader_gen.manual_seed(group.rank_seed(derive_seed(cfg.seed, _LOADER_STREAM, epoch)))
        for sched in schedulers.values():
            sched.step(epoch)
        try:
            metrics = _train_epoch(method, loader, ctx, epoch, cfg, progress, stop)
        except EpochInterrupted as interrupted:
            path = save(interrupted.progress)
            reason = (stop.reason if stop else None) or "a stop request on another process"
            raise Preempted(reason, epoch, interrupted.progress.iteration, path) from None
        progress = None
        metrics["lr"] = optimizers[main].param_groups[0]["lr"]
        metrics.update({f"lr_{n}": o.param_groups[0]["lr"] for n, o in optimizers.items() if n != main})
        history.append(metrics)
        cbs.on_epoch_end(epoch, metrics)
        if epoch % cfg.checkpoint_period == 0 or epoch == cfg.epochs:
            save()
    cbs.on_train_end(history)
    return history


def _train_epoch(method: ReIDMethod, loader, ctx: TrainContext, epoch: int, cfg: TrainConfig,
                 progress: EpochProgress | None = None, stop: StopRequest | None = None) -> dict:
    """One epoch (the rest of it after ``progress``, a resumed one). The logged scalars are averaged over the
    processes every iteration, which is also where they agree to stop (:class:`EpochInterrupted`)."""
    method.train()
    group = ctx.distributed
    progress = progress if progress is not None else EpochProgress(epoch)
    start = time.perf_counter()
    batches = resume_batches(loader, loader.batch_sampler, progress.iteration)
    bar = tqdm(batches, total=len(loader), initial=progress.iteration, desc=f"epoch {epoch}/{cfg.epochs}",
               leave=False, mininterval=1.0, disable=not group.is_main)
    for it, batch in enumerate(bar, start=progress.iteration):
        batch = {k: v.to(ctx.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
        ctx.epoch, ctx.iteration = epoch, it
        with group.global_batch():
            stats = method.train_step(batch, ctx)
        ctx.global_step += 1
        stats, stopping = group.reduce_stats(stats, bool(stop))
        if not math.isfinite(stats["loss"]):
            raise OccreidError(
                f"training diverged: loss {stats['loss']} at epoch {epoch}, iteration {it + 1}",
                fix="lower train.optimizer.lr or enable warm-up (train.scheduler.warmup_epochs)",
            )
        progress.add(stats, len(batch["pid"]) * group.world_size)
        bar.set_postfix(loss=f"{progress.sums['loss'] / progress.iteration:.4f}", refresh=False)
        if (it + 1) % cfg.log_period == 0:
            log.info("epoch %d iter %d/%d loss %.4f", epoch, it + 1, len(loader),
                     progress.sums["loss"] / progress.iteration)
        if stopping:
            progress.seconds += time.perf_counter() - start
            bar.close()
            raise EpochInterrupted(progress)
    seconds = progress.seconds + time.perf_counter() - start
    iterations, images = progress.iteration, progress.images
    metrics: dict[str, float] = {"epoch": epoch}
    metrics.update({k: v / max(iterations, 1) for k, v in progress.sums.items()})
    metrics["seconds"] = seconds
    metrics["images_per_s"] = images / seconds if seconds > 0 else 0.0
    metrics["iterations"] = iterations
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "epoch")
    log.info("epoch %d/%d: %s", epoch, cfg.epochs, summary)
    return metrics
