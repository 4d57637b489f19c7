"""Per-identity memory bank and its InfoNCE loss (DPEFormer Sec. III-D, after FED's hybrid memory [39]).

The bank holds one vector per training identity. It is initialised once, before training, with the mean
feature of each identity over the training set (:meth:`IdentityMemory.initialize`), and updated at every
training step by each (non-augmented) instance of identity j, in batch order (Eq. 13):

    d_j ← μ·d_j + (1 − μ)·f_j          (μ = 0.2: the bank follows the newest instances closely)

The contrastive loss compares an instance with every identity's entry (Eq. 14):

    L_con = −log( exp(f·d_y / τ) / Σ_l exp(f·d_l / τ) )

with f and d L2-normalised (cosine similarity; the stored entries are not normalised, as in FED's code) and
τ = 0.05 (the paper gives no value; FED's and DPEFormer's code use 0.05). FED's code computes the same softmax
with two small epsilons (+1e-6 in the denominator and inside the log); we use the exact cross-entropy.
The bank is a buffer: it is saved with the model and in every checkpoint, so a resumed run continues with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from occreid.errors import OccreidError


def info_nce(features: torch.Tensor, bank: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE of ``features`` [B, F] against the identity entries ``bank`` [C, F] (positives ``targets``)."""
    logits = F.normalize(features.float(), dim=1) @ F.normalize(bank.float(), dim=1).t() / temperature
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def momentum_update(bank: torch.Tensor, features: torch.Tensor, targets: torch.Tensor, momentum: float) -> None:
    """In place: ``bank[y] ← μ·bank[y] + (1 − μ)·f`` for each (f, y), one instance after the other in batch order
    (two instances of one identity in a batch both act, the later on the result of the earlier)."""
    features = features.detach().to(bank.dtype)
    for f, y in zip(features, targets.tolist()):
        bank[y].mul_(momentum).add_(f, alpha=1.0 - momentum)


def identity_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[num_classes, F]``: the mean feature of each label 0..num_classes−1 (every label must occur)."""
    labels = labels.long()
    counts = torch.bincount(labels, minlength=num_classes)
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise OccreidError(f"memory bank labels must be in 0..{num_classes - 1}, got {int(labels.min())}..{int(labels.max())}")
    absent = (counts[:num_classes] == 0).nonzero().flatten().tolist()
    if absent:
        raise OccreidError(f"{len(absent)} identities have no training image to initialise the memory bank "
                           f"(e.g. {absent[:5]})", fix="train on a split whose labels are 0..N-1, every one used")
    sums = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, labels.to(features.device), features.double())
    return (sums / counts.to(features.device)[:, None]).to(features.dtype)


class IdentityMemory(nn.Module):
    """One bank of ``num_classes`` × ``dim`` entries with its temperature and momentum."""

    def __init__(self, num_classes: int, dim: int, temperature: float = 0.05, momentum: float = 0.2):
        super().__init__()
        if temperature <= 0 or not 0.0 <= momentum <= 1.0:
            raise OccreidError(f"memory bank: temperature must be > 0 and momentum in [0, 1], got {temperature}, "
                               f"{momentum}")
        self.temperature, self.momentum = float(temperature), float(momentum)
        self.register_buffer("bank", torch.zeros(num_classes, dim))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def initialize(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Entries = per-identity means of ``features`` [N, dim] with ``labels`` [N]."""
        self.bank.copy_(identity_means(features.float(), labels, self.bank.shape[0]).to(self.bank.device))
        self.ready.fill_(True)

    def check_ready(self) -> None:
        if not bool(self.ready):
            raise OccreidError("the memory bank was never initialised with the per-identity mean features",
                               fix="train through occreid.engine.fit (it calls method.before_training), or call "
                                   "the method's before_training(records, train_cfg) first")

    def loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.check_ready()
        return info_nce(features, self.bank, targets, self.temperature)

    def update(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        momentum_update(self.bank, features, targets, self.momentum)
