"""Train/test transforms: output shape and normalisation, determinism under a seed, erasing and flip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from occreid.data.transforms import TransformConfig, build_test_transform, build_train_transform
from occreid.engine.seeding import seed_everything
from occreid.errors import OccreidError


def image(h=40, w=20, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_test_transform_resizes_and_normalises_exactly():
    cfg = TransformConfig(size=[32, 16], mean=[0.5, 0.25, 0.0], std=[0.5, 0.25, 1.0])
    arr = np.zeros((32, 16, 3), dtype=np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = 255, 0, 51
    out = build_test_transform(cfg)(Image.fromarray(arr))  # already at size: resize is the identity
    assert type(out) is torch.Tensor and out.shape == (3, 32, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], torch.full((32, 16), 1.0))  # (1 - .5) / .5
    torch.testing.assert_close(out[1], torch.full((32, 16), -1.0))  # (0 - .25) / .25
    torch.testing.assert_close(out[2], torch.full((32, 16), 0.2))  # 51/255


def test_train_transform_is_deterministic_under_a_seed():
    cfg = TransformConfig(size=[32, 16], pad=3, color_jitter=[0.3, 0.3, 0.2, 0.2])
    t = build_train_transform(cfg)
    img = image()
    seed_everything(5)
    a = [t(img) for _ in range(6)]
    seed_everything(5)
    b = [t(img) for _ in range(6)]
    for x, y in zip(a, b):
        assert x.shape == (3, 32, 16)
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert any(not torch.equal(a[0], x) for x in a[1:])  # but random across draws


def test_flip_only_is_exact_mirror():
    cfg = TransformConfig(size=[32, 16], flip_p=1.0, pad=0, random_erasing_p=0.0)
    img = image(32, 16)
    flipped = build_train_transform(cfg)(img)
    torch.testing.assert_close(flipped, build_test_transform(cfg)(img).flip(-1), rtol=0, atol=0)


def test_random_erasing_with_probability_one_changes_a_rectangle():
    cfg = TransformConfig(size=[64, 32], flip_p=0.0, pad=0, random_erasing_p=1.0, erasing_mode="const")
    img = image(64, 32)
    torch.manual_seed(0)
    random.seed(0)
    erased = build_train_transform(cfg)(img)
    diff = (erased != build_test_transform(cfg)(img)).any(0)
    rows, cols = diff.any(1).nonzero(), diff.any(0).nonzero()
    assert diff.sum() > 0
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert diff.sum() >= 0.9 * box  # one filled rectangle ("const" fills zeros)
    assert (erased[:, diff] == 0).all()


@pytest.mark.parametrize("bad", [dict(size=[32]), dict(flip_p=1.5), dict(std=[0, 1, 1]), dict(color_jitter=[0.1])])
def test_bad_config_is_a_user_error(bad):
    with pytest.raises(OccreidError):
        TransformConfig(**bad)


def test_test_interpolation_is_its_own_setting():
    """Train and test resize separately (the references train bicubic, test bilinear); null follows training."""
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (40, 20, 3), dtype=np.uint8))
    base = dict(size=[16, 8], mean=[0.0] * 3, std=[1.0] * 3)
    bilinear = build_test_transform(TransformConfig(**base, test_interpolation="bilinear"))(img)
    bicubic = build_test_transform(TransformConfig(**base, test_interpolation="bicubic"))(img)
    follows = build_test_transform(TransformConfig(**base, interpolation="bicubic"))(img)
    by_hand = torch.from_numpy(np.array(img.resize((8, 16), Image.BILINEAR, reducing_gap=None))).permute(2, 0, 1) / 255
    assert not torch.equal(bilinear, bicubic)
    torch.testing.assert_close(follows, bicubic, rtol=0, atol=0)
    # torchvision's antialiased bilinear and PIL's agree up to rounding of the uint8 output
    assert (bilinear - by_hand).abs().max() <= 1.5 / 255
