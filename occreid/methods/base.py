"""The method API every re-ID method implements, and the registry of methods.

A method is an ``nn.Module`` that owns its whole model (backbone, heads, prototypes, prompts) and says
how it is trained: which optimisers over which parameters (:meth:`ReIDMethod.optimizers`), which loss
terms (:meth:`ReIDMethod.losses`) and, when one forward/backward/step is not enough, its own
:meth:`ReIDMethod.train_step` built from the :class:`~occreid.engine.context.TrainContext` helpers. The
engine (:func:`occreid.engine.fit`) does everything else, identically for every method. Evaluation calls
:meth:`ReIDMethod.embed`.
"""

from __future__ import annotations

import pkgutil
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from occreid.engine.optim import OptimizerSpec, param_groups
from occreid.models.base import Embedding
from occreid.models.factory import LazyRegistry

if TYPE_CHECKING:
    from occreid.data.records import Record
    from occreid.engine.config import TrainConfig
    from occreid.engine.context import TrainContext

Batch = dict[str, torch.Tensor]  # "image" [B,3,H,W], "pid" [B], "camid" [B], "index" [B], on the device


def _method_modules() -> list[str]:
    """Every module of the ``occreid.methods`` package (each registers its method on import)."""
    import occreid.methods as package

    return [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)
            if m.name != "base" and not m.name.startswith("_")]


METHODS: LazyRegistry[type["ReIDMethod"]] = LazyRegistry(
    "method", _method_modules, module_for=lambda name: f"occreid.methods.{name}"
)


class ReIDMethod(nn.Module):
    """Base class. Subclasses set ``name`` and ``config_cls`` (a dataclass: the params schema, saved with the
    model and hashed into checkpoint fingerprints) and implement ``losses`` and ``embed``; a method whose
    model is not in ``self.backbone`` overrides ``img_size``."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type]  # the method's params dataclass

    def __init__(self, cfg: Any, num_classes: int, num_cams: int):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.num_cams = num_cams

    @property
    def img_size(self) -> tuple[int, int]:
        """The input size (H, W) the model was built for; the engine checks the transforms against it."""
        return tuple(self.backbone.img_size)

    def optimizers(self, train_cfg: TrainConfig) -> list[OptimizerSpec]:
        """Default: one scheduled optimiser "main" over all trainable parameters (bias rule applied)."""
        return [OptimizerSpec("main", param_groups(self.named_parameters(), train_cfg.optimizer), train_cfg.optimizer)]

    def train_data(
        self, records: Sequence[Record], transform: Callable, cfg: TrainConfig, seed: int
    ) -> tuple[Dataset, Sampler] | None:
        """The training dataset and batch sampler, for a method whose batches are not the engine's P×K ones.

        ``None`` (the default): :func:`occreid.engine.fit` builds its own ``ImageDataset(records, transform)``
        and P×K sampler. Otherwise ``fit`` wraps the pair in its DataLoader (worker seeds, pinning) and
        treats the sampler like its own, so it must have ``set_epoch(epoch)``, ``state_dict()``,
        ``load_state_dict(state)`` and ``__len__``, and plan each epoch as a pure function of its seed and
        epoch: that is what makes a resumed run replay the same batches. DPM++ returns its occlusion-pair
        sampler here. ``transform`` is the training transform, ``seed`` the run's seed.
        """
        return None

    def before_training(self, records: Sequence[Record], cfg: TrainConfig) -> None:
        """Called by :func:`occreid.engine.fit` once before the first epoch of a run that starts from scratch
        (not when it resumes: what this computes must live in the state dict, which the checkpoint restores).

        Default: nothing. DPEFormer initialises its memory bank with per-identity mean features here. It must
        draw no random numbers from the global generators (the run's augmentation streams follow it).
        """

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Named, already weighted loss terms of one batch; their sum is minimised."""
        raise NotImplementedError

    def train_step(self, batch: Batch, ctx: TrainContext) -> dict[str, float]:
        """One iteration: forward + losses under autocast, backward, step "main".

        Returns the scalars to log, averaged per epoch into the history; must include ``"loss"`` (the total,
        checked for divergence). Overrides use ``ctx.zero_grad``, ``ctx.autocast``, ``ctx.backward_and_step``.
        """
        ctx.zero_grad("main")
        with ctx.autocast():
            terms = self.losses(batch)
            total = torch.stack([t.float() for t in terms.values()]).sum()
        ctx.backward_and_step(total, "main")
        return {"loss": total.item(), **{k: v.item() for k, v in terms.items()}}

    def embed(self, images: torch.Tensor, camids: torch.Tensor | None = None) -> Embedding:
        """Retrieval feature (and optional channel mask) of a batch; callers set eval() and no_grad."""
        raise NotImplementedError
