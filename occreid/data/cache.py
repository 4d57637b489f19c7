"""Training images decoded once into memory instead of read from disk every epoch.

A small training split is read dozens of times per run (the CPU demo: 480 images, 40 epochs), and decoding
and resizing every image every epoch costs more than a tiny model's step. :class:`DecodedImages` reads each
record once, applies the training resize exactly as the training transform would (the same torchvision op
on the same PIL image, :func:`~occreid.data.transforms.train_resize`) and keeps the results as one uint8
array ``[N, H, W, 3]``. The training transform's resize is then the identity (torchvision returns an image
of the target size unchanged), so a cached run sees the same pixels as an uncached one and trains to the
same weights. DataLoader workers forked after the cache is built share its memory pages.

``train.loader.cache`` decides: ``on``, ``off``, or ``auto`` — on when the decoded split fits in
``cache_max_mb`` (the demo, small datasets), off otherwise (the workers of a GPU node decode a large
dataset as it streams).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from occreid.data.batch_augment import BatchTrainTransform, batch_train_transform
from occreid.data.loader import LoaderConfig, read_image
from occreid.data.records import Record
from occreid.data.transforms import TrainTransform, TransformConfig, train_resize

log = logging.getLogger(__name__)


class DecodedImages:
    """The images of ``records`` after the training resize of ``cfg``, decoded once (module docstring)."""

    def __init__(self, records: Sequence[Record], cfg: TransformConfig, *, progress: bool = True):
        H, W = (int(v) for v in cfg.size)
        self.size = (H, W)
        self.interpolation = cfg.interpolation
        self.paths = [r.path for r in records]
        resize = train_resize(cfg)
        self.array = np.empty((len(records), H, W, 3), dtype=np.uint8)
        start = time.perf_counter()
        for i, path in enumerate(tqdm(self.paths, desc="decoding images", leave=False, disable=not progress,
                                      mininterval=1.0)):
            self.array[i] = np.asarray(resize(read_image(path)), dtype=np.uint8)
        log.info("decoded %d training images once (%dx%d, %.0f MB in memory) in %.1f s", len(records), H, W,
                 self.array.nbytes / 2**20, time.perf_counter() - start)

    def __len__(self) -> int:
        return len(self.array)

    def pil(self, index: int) -> Image.Image:
        """Image ``index`` as PIL, for the per-image training transform."""
        return Image.fromarray(self.array[index])

    def rgb(self, index: int, size: Sequence[int], interpolation: str = "bicubic") -> np.ndarray | None:
        """Image ``index`` as RGB uint8 ``[H, W, 3]`` if it was cached at ``size`` with ``interpolation`` (what
        :func:`occreid.saliency.store.load_rgb` returns for the same size, which resizes bicubic), else None."""
        if (tuple(int(v) for v in size), interpolation) != (self.size, self.interpolation):
            return None
        return self.array[index].copy()

    def uint8(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB arrays ``[H, W, 3]`` → a uint8 batch ``[B, 3, H, W]`` (the input of the batched transform)."""
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """Cached images ``indices`` as a uint8 batch ``[B, 3, H, W]``."""
        return torch.from_numpy(self.array[np.asarray(indices, dtype=np.int64)]).permute(0, 3, 1, 2).contiguous()


def decoded_size_mb(num_images: int, size: Sequence[int]) -> float:
    """Memory of ``num_images`` decoded RGB images of ``size`` (H, W), in MB."""
    return num_images * int(size[0]) * int(size[1]) * 3 / 2**20


def decode_train_images(records: Sequence[Record], transforms: TransformConfig,
                        loader: LoaderConfig | None = None) -> DecodedImages | None:
    """The decoded-image cache of the training split when ``loader.cache`` asks for it (``auto``: when it fits
    in ``loader.cache_max_mb``), else None."""
    loader = loader or LoaderConfig()
    mb = decoded_size_mb(len(records), transforms.size)
    if loader.cache == "off" or (loader.cache == "auto" and mb > loader.cache_max_mb):
        if loader.cache == "auto":
            log.info("not caching decoded images: %.0f MB > train.loader.cache_max_mb %d", mb, loader.cache_max_mb)
        return None
    return DecodedImages(records, transforms)


def train_images(records: Sequence[Record], transform: Callable, loader: LoaderConfig | None = None
                 ) -> tuple[DecodedImages | None, BatchTrainTransform | None]:
    """(decoded-image cache or None, batched training transform or None) for a training dataset whose items go
    through ``transform``. Only a :class:`~occreid.data.transforms.TrainTransform` (whose first op is the
    resize the cache applies) gets them; the batched transform needs the cache (images at the training size)."""
    cfg = getattr(transform, "config", None) if isinstance(transform, TrainTransform) else None
    images = decode_train_images(records, cfg, loader) if cfg is not None else None
    return images, batch_train_transform(cfg) if images is not None else None
