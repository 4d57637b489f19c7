"""ROA paste: exact compositing, the paper's size/position rules and the code's variant, labels, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from occreid.data.loader import ImageDataset
from occreid.data.records import Record
from occreid.errors import OccreidError
from occreid.occluders import OccluderLibrary, OccluderPaste, PasteConfig, Placement, composite, write_library
from occreid.occluders.paste import positions

W, H = 32, 64  # a person crop


def known_object() -> Image.Image:
    """A 4×6 (w×h) object: left half red, right half green, alpha 255 / 0 / a soft 100 in known cells."""
    rgba = np.zeros((6, 4, 4), np.uint8)
    rgba[:, :2, :3] = (200, 10, 10)
    rgba[:, 2:, :3] = (10, 200, 10)
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    rgba[5, 3, 3] = 0
    rgba[2, 1, 3] = 100
    return Image.fromarray(rgba, "RGBA")


def tall_object() -> Image.Image:
    """A 2×10 object (height / width 5 > 2: the paper's 'tall' branch), fully opaque, blue."""
    rgba = np.zeros((10, 2, 4), np.uint8)
    rgba[..., 2] = 255
    rgba[..., 3] = 255
    return Image.fromarray(rgba, "RGBA")


@pytest.fixture
def library(tmp_path):
    meta = {"source": "test", "bbox": [0, 0, 0, 0], "area": 0, "aspect": 0.0}
    write_library(tmp_path / "lib", [(known_object(), meta), (tall_object(), meta)], build={})
    return OccluderLibrary.load(tmp_path / "lib")


def person() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))


def test_composite_is_exact_per_pixel_for_the_alpha_used(library):
    """Known object at its own size (no resampling), forced position: every pixel checked by hand."""
    paste = OccluderPaste(library, PasteConfig(p=1.0, soft_edges=True))
    image = person()
    out = np.asarray(paste.apply(image, Placement(index=0, x=5, y=7, width=4, height=6, flip=False)))
    img, obj = np.asarray(image).astype(np.float64), np.asarray(known_object()).astype(np.float64)
    expected = img.copy()
    a = obj[..., 3:] / 255.0
    expected[7:13, 5:9] = img[7:13, 5:9] * (1 - a) + obj[..., :3] * a
    assert np.array_equal(out, np.rint(expected).astype(np.uint8))
    assert np.array_equal(out[7 + 2, 5 + 0], [200, 10, 10]) and np.array_equal(out[7, 5], np.asarray(image)[7, 5])
    mask = np.ones((H, W), bool)
    mask[7:13, 5:9] = False
    assert np.array_equal(out[mask], np.asarray(image)[mask])  # nothing outside the box changes


@pytest.mark.parametrize("cfg", [PasteConfig(p=1.0), PasteConfig(p=1.0, soft_edges=True),
                                 PasteConfig(p=1.0, shape="box"), PasteConfig(p=1.0, positions="corners", flip_p=1.0)],
                         ids=["hard", "soft", "box", "code"])
def test_every_pixel_comes_from_the_image_or_the_object_as_the_alpha_says(library, cfg):
    paste = OccluderPaste(library, cfg)
    image = person()
    torch.manual_seed(0)
    for _ in range(20):
        placement = paste.sample(image.size)
        rgb, alpha = paste.render(placement)
        out = np.asarray(paste.apply(image, placement)).astype(np.int64)
        x, y, h, w = placement.x, placement.y, placement.height, placement.width
        a = alpha[..., None].astype(np.float64) / 255
        region = np.asarray(image)[y:y + h, x:x + w] * (1 - a) + rgb * a
        assert np.array_equal(out[y:y + h, x:x + w], np.rint(region))
        if cfg.shape == "box":
            assert (alpha == 255).all()
        elif not cfg.soft_edges:  # hard edges: each pixel is exactly the image's or the object's
            assert set(np.unique(alpha)) <= {0, 255}


def test_flip_mirrors_the_object(library):
    paste = OccluderPaste(library, PasteConfig(p=1.0))
    plain, _ = paste.render(Placement(0, 0, 0, 4, 6, False))
    flipped, alpha = paste.render(Placement(0, 0, 0, 4, 6, True))
    assert np.array_equal(flipped, plain[:, ::-1]) and tuple(flipped[3, 0]) == (10, 200, 10)
    assert alpha[0, 3] == 0 and alpha[0, 0] == 255  # the transparent corner moved to the right


def test_sizes_and_positions_follow_algorithm_1(library):
    """Tall objects (h/w > 2) span the full height at 1/2..3/4 of the width; the others the full width at
    1/2..3/4 of the height; positions (0,0), (0,H-h), (W-w,0): tall ones at the left/right edge, the others
    along the top/bottom, each of the three positions equally likely."""
    paste = OccluderPaste(library, PasteConfig(p=1.0))
    torch.manual_seed(1)
    seen = {0: [], 1: []}
    for _ in range(600):
        pl = paste.sample((W, H))
        seen[pl.index].append(pl)
    wide, tall = seen[0], seen[1]  # the known object is 6/4 = 1.5 tall: the 'else' branch
    assert len(wide) > 200 and len(tall) > 200
    assert all(p.width == W and 0.5 * H - 0.5 <= p.height <= 0.75 * H + 0.5 for p in wide)
    assert all(p.height == H and 0.5 * W - 0.5 <= p.width <= 0.75 * W + 0.5 for p in tall)
    assert {(p.x, p.y) for p in wide} == {(0, 0)} | {(0, H - p.height) for p in wide}
    assert {(p.x, p.y) for p in tall} == {(0, 0)} | {(W - p.width, 0) for p in tall}
    top = sum(p.y == 0 for p in wide) / len(wide)  # (0,0) and (W-w,0) = (0,0) for a full-width box: 2/3
    assert abs(top - 2 / 3) < 0.08
    flips = sum(p.flip for p in wide + tall) / 600
    assert abs(flips - 0.5) < 0.07
    heights = np.array([p.height for p in wide]) / H
    assert heights.min() < 0.55 and heights.max() > 0.7  # the whole 1/2..3/4 range is drawn


def test_the_reference_codes_variant_uses_four_corners_and_always_flips(library):
    assert positions((W, H), (10, 20), "corners") == [(0, 0), (22, 0), (0, 44), (22, 44)]
    assert positions((W, H), (10, 20), "paper") == [(0, 0), (0, 44), (22, 0)]
    paste = OccluderPaste(library, PasteConfig(p=1.0, positions="corners", flip_p=1.0))
    torch.manual_seed(2)
    draws = [paste.sample((W, H)) for _ in range(300)]
    assert all(p.flip for p in draws)
    tall = [p for p in draws if p.index == 1]
    assert {p.x for p in tall} == {0} | {W - p.width for p in tall} and {p.y for p in tall} == {0}


def test_p_zero_is_the_identity_and_draws_nothing(library):
    paste = OccluderPaste(library, PasteConfig(p=0.0))
    image = person()
    torch.manual_seed(4)
    state = torch.get_rng_state()
    assert all(paste(image) is image for _ in range(10))
    assert torch.equal(torch.get_rng_state(), state)


def test_p_is_the_share_of_occluded_images(library):
    paste = OccluderPaste(library, PasteConfig(p=0.3))
    image = person()
    torch.manual_seed(5)
    changed = sum(paste(image) is not image for _ in range(2000)) / 2000
    assert abs(changed - 0.3) < 0.035  # 3.4 standard deviations


def test_same_seed_same_augmented_images(library):
    paste = OccluderPaste(library, PasteConfig(p=0.5))
    image = person()

    def epoch(seed):
        torch.manual_seed(seed)
        return [np.asarray(paste(image)) for _ in range(12)]

    a, b, c = epoch(7), epoch(7), epoch(8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_the_label_survives_the_dataset_path(library, tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        person().save(paths[-1])
    records = [Record(str(p), pid=pid, camid=cam) for p, pid, cam in zip(paths, (4, 9, 4), (0, 1, 2))]
    dataset = ImageDataset(records, OccluderPaste(library, PasteConfig(p=1.0)))
    torch.manual_seed(0)
    for i, rec in enumerate(records):
        item = dataset[i]
        assert (item["pid"], item["camid"], item["index"]) == (rec.pid, rec.camid, i)
        assert item["image"].size == (W, H)
        assert not np.array_equal(np.asarray(item["image"]), np.asarray(person()))  # it was occluded


def test_the_transform_pickles_for_loader_workers(library):
    import pickle

    paste = OccluderPaste(library, PasteConfig(p=1.0))
    library.object(0)  # fill the cache: workers start without it
    clone = pickle.loads(pickle.dumps(paste))
    assert clone.library._cache == {} and len(clone.library) == 2
    torch.manual_seed(3)
    a = np.asarray(paste(person()))
    torch.manual_seed(3)
    assert np.array_equal(np.asarray(clone(person())), a)


def test_composite_function_known_answer():
    image = np.full((2, 3, 3), 100, np.uint8)
    rgb = np.full((1, 2, 3), 200, np.uint8)
    alpha = np.array([[255, 51]], np.uint8)  # 51/255 = 0.2: 100·0.8 + 200·0.2 = 120
    out = composite(image, rgb, alpha, x=1, y=1)
    assert out[1, 1].tolist() == [200] * 3 and out[1, 2].tolist() == [120] * 3
    assert out[0].tolist() == [[100] * 3] * 3 and out[1, 0].tolist() == [100] * 3


@pytest.mark.parametrize("kwargs, message", [({"p": 1.5}, "paste.p"), ({"area": [0.8, 0.5]}, "paste.area"),
                                             ({"tall_ratio": 0}, "tall_ratio"), ({"flip_p": -0.1}, "flip_p")])
def test_paste_config_rejects_bad_values(kwargs, message):
    with pytest.raises(OccreidError, match=message):
        PasteConfig(**kwargs)
