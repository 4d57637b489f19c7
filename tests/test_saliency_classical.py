"""Classical and attention saliency: a bright "person" stands out, flat images do not, hand-worked attention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occreid.data.loader import build_test_loader
from occreid.data.records import Record
from occreid.data.transforms import TransformConfig, build_test_transform
from occreid.models.factory import create_backbone
from occreid.saliency.attention import attention_maps, attention_saliency
from occreid.saliency.classical import centre_prior, classical_saliency, unit_scale
from occreid.saliency.config import ClassicalConfig
from occreid.saliency.geometry import PatchGeometry

GEOM = PatchGeometry.tiling((64, 32), (8, 4))


def scene(person: bool = True) -> np.ndarray:
    img = np.full((64, 32, 3), (40, 60, 50), np.uint8)
    if person:
        img[8:56, 8:24] = (235, 225, 210)  # patch rows 1..6, cols 1..2
    return img


@pytest.mark.parametrize("method", ["contrast", "spectral", "both"])
@pytest.mark.parametrize("centre", [None, [0.6, 0.3]])
def test_bright_person_is_more_salient_than_flat_background(method, centre):
    sal = classical_saliency(scene(), GEOM, ClassicalConfig(method=method, centre_sigma=centre))
    assert sal.shape == (8, 4) and sal.dtype == np.float32
    assert sal.min() >= 0.0 and sal.max() == pytest.approx(1.0)
    person = sal[1:7, 1:3]
    background = np.concatenate([sal[0], sal[7]])  # rows entirely outside the person
    assert person.mean() > background.mean() + 0.2


def test_contrast_with_centre_prior_binarises_to_the_person_box():
    sal = classical_saliency(scene(), GEOM, ClassicalConfig(method="contrast", centre_sigma=None))
    expected = np.zeros((8, 4), bool)
    expected[1:7, 1:3] = True
    assert ((sal >= 0.5) == expected).all()


def test_flat_image_has_no_salient_patch():
    sal = classical_saliency(scene(person=False), GEOM, ClassicalConfig())
    assert (sal == 0).all()


def test_classical_saliency_is_deterministic():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    a = classical_saliency(img, GEOM, ClassicalConfig())
    assert a.tobytes() == classical_saliency(img.copy(), GEOM, ClassicalConfig()).tobytes()


def test_classical_refuses_an_image_of_another_size():
    with pytest.raises(ValueError):
        classical_saliency(np.zeros((32, 32, 3), np.uint8), GEOM, ClassicalConfig())


def test_unit_scale_by_hand():
    assert unit_scale(np.array([1.0, 3.0, 5.0])).tolist() == [0.0, 0.5, 1.0]
    assert unit_scale(np.array([2.0, 2.0])).tolist() == [0.0, 0.0]


def test_centre_prior_peaks_in_the_middle_and_is_symmetric():
    prior = centre_prior((6, 4), (0.5, 0.25))
    assert prior[2:4, 1:3].min() == prior.max()
    np.testing.assert_allclose(prior, prior[::-1, ::-1])
    # at x = 0.375 (the outer column centre) with sigma 0.25 and y = 1/12: exp(-0.5 (1/36/.25 + 2.25))
    assert prior[2, 0] == pytest.approx(math.exp(-0.5 * ((1 / 12 / 0.5) ** 2 + (0.375 / 0.25) ** 2)))


def test_attention_saliency_by_hand():
    # head 1: softmax([0, 0, 0, ln 3]) = [1, 1, 1, 3] / 6 ; head 2: softmax([ln 2, 0, 0, 0]) = [2, 1, 1, 1] / 5
    logits = torch.tensor([[[0.0, 0.0, 0.0, math.log(3)], [math.log(2), 0.0, 0.0, 0.0]]])
    # mean = [17, 11, 11, 21] / 60 -> min-max -> [0.6, 0, 0, 1]
    sal = attention_saliency(logits, (2, 2))
    torch.testing.assert_close(sal, torch.tensor([[[0.6, 0.0], [0.0, 1.0]]]))


def test_attention_saliency_of_uniform_attention_is_zero():
    assert (attention_saliency(torch.zeros(2, 3, 6), (3, 2)) == 0).all()


def test_attention_maps_over_a_loader(tmp_path):
    from PIL import Image

    paths = []
    for k in range(3):
        path = tmp_path / f"000{k}_c1s1_000001_01.jpg"
        Image.fromarray(scene(person=k != 1)).save(path)
        paths.append(str(path))
    records = [Record(p, 0, 0) for p in paths]
    torch.manual_seed(0)
    bb = create_backbone("vit_tiny", img_size=(64, 32), stride=8, taps=(), return_attn=True)
    loader = build_test_loader(records, build_test_transform(TransformConfig(size=[64, 32])), batch_size=2)
    maps = attention_maps(bb, loader, torch.device("cpu"))
    assert maps.shape == (3, 7, 3) and maps.dtype == np.float32
    assert maps.min() >= 0 and np.allclose(maps.reshape(3, -1).max(axis=1), 1.0)
