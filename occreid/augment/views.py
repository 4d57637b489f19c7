"""Two views per training image: the normally augmented image and an occluded copy of it (DPEFormer's ROA).

DPEFormer trains on every image twice (paper Alg. 1 makes one occluded copy x_roa of each image of a batch;
the released code feeds ``img1`` and ``img2 = occlude(img1)`` through the model): the identity losses see both,
the contrastive loss weighs the occluded one 0.3, and only the clean one updates the memory bank. The occluded
copy shares the clean view's resize, flip, crop and colour jitter — the occluder is put on top of exactly the
image the model sees — so :class:`TwoViewDataset` runs the training pipeline's stages itself
(:func:`occreid.data.transforms.train_transform_stages`): PIL augmentation → occlusion on the PIL image
(pasting) or on the tensor (random erasing) → tensor. The pipeline's own random erasing, when switched on,
acts on the clean view only.

Randomness comes from the global ``torch`` generator (and timm's erasing from ``random``), which the engine
seeds per epoch and worker, so an epoch is reproducible. Items are dicts like ``ImageDataset``'s plus
``"image_aug"`` and ``"occluded"`` (whether the second view was occluded: drawn with probability ``p``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from occreid.data.cache import DecodedImages
from occreid.data.loader import read_image
from occreid.data.records import Record

Occluder = Callable[[Image.Image], Image.Image]  # PIL RGB -> PIL RGB with an occluder on it (same size)
TensorOccluder = Callable[[torch.Tensor], torch.Tensor]  # normalised [3, H, W] -> occluded copy


def draw_rng() -> np.random.Generator:
    """A numpy generator seeded from the global torch stream (which the engine seeds per worker and epoch)."""
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


class TwoViewDataset(Dataset):
    """``{"image", "image_aug", "occluded", "pid", "camid", "index"}`` per record; see the module docstring.

    ``geometric`` (PIL → PIL), ``to_tensor`` (PIL → normalised tensor) and ``erasing`` (tensor → tensor or None)
    are the training pipeline's stages; exactly one of ``occlude`` (on the PIL image) and ``occlude_tensor``
    (on the clean tensor) makes the occluded view, with probability ``p`` (else the view is the clean image).
    ``images``: the split decoded once at the training size (:mod:`occreid.data.cache`), read instead of the
    files; ``geometric``'s resize is then the identity, so the items are the same.
    """

    def __init__(self, records: Sequence[Record], geometric: Callable, to_tensor: Callable,
                 erasing: Callable | None, *, occlude: Occluder | None = None,
                 occlude_tensor: TensorOccluder | None = None, p: float = 1.0,
                 images: DecodedImages | None = None):
        if (occlude is None) == (occlude_tensor is None):
            raise ValueError("give exactly one of occlude (PIL) and occlude_tensor")
        self.records = list(records)
        self.geometric, self.to_tensor, self.erasing = geometric, to_tensor, erasing
        self.occlude, self.occlude_tensor, self.p = occlude, occlude_tensor, float(p)
        self.images = images

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        pil = self.geometric(self.images.pil(index) if self.images is not None else read_image(rec.path))
        clean = self.to_tensor(pil)
        occluded = bool(torch.rand(()) < self.p)
        if not occluded:
            aug = clean.clone()
        elif self.occlude is not None:
            aug = self.to_tensor(self.occlude(pil))
        else:
            aug = self.occlude_tensor(clean)
        if self.erasing is not None:
            clean = self.erasing(clean)
        return {"image": clean, "image_aug": aug, "occluded": occluded, "pid": rec.pid, "camid": rec.camid,
                "index": index}
