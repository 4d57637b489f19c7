"""Patch transfer: every output pixel/token comes from i (rolled) or j exactly as the partner's mask says;
the cut-and-paste and random-erasing baselines change only their box."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from occreid.augment.config import CutPasteConfig
from occreid.augment.erasing import cut_paste, random_erase, sample_box
from occreid.augment.transfer import pixel_mask, roll_tokens, transfer_image, transfer_sheet, transfer_tokens
from occreid.saliency.geometry import PatchGeometry

GEOM = PatchGeometry((4, 8), (2, 4), 2, 2)  # 2x2-pixel patches
MJ = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], bool)


def two_images(shape=(4, 8, 3), seed=0):
    """x_i values in 0..99, x_j in 150..249: the source of every output pixel is unambiguous."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 100, shape, dtype=np.uint8), rng.integers(150, 250, shape, dtype=np.uint8)


def test_transfer_by_hand_without_roll():
    x_i, x_j = two_images()
    out, pm = transfer_image(x_i, x_j, MJ, 0, GEOM)
    assert pm[:, 4:].all() and not pm[:, :4].any()  # patch columns 2, 3 = pixel columns 4..7
    assert (out[:, 4:] == x_i[:, 4:]).all() and (out[:, :4] == x_j[:, :4]).all()


def test_transfer_by_hand_with_roll():
    x_i, x_j = two_images()
    out, _ = transfer_image(x_i, x_j, MJ, 1, GEOM)  # roll +1 column = 2 pixels right
    assert (out[:, 4:] == x_i[:, 2:6]).all()
    assert (out[:, :4] == x_j[:, :4]).all()
    out, _ = transfer_image(x_i, x_j, MJ, -2, GEOM)  # 4 pixels left, wrapping around
    assert (out[:, 4:] == x_i[:, [0, 1, 2, 3]]).all()


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 4), w=st.integers(1, 5), p=st.integers(2, 5), s=st.integers(1, 5), extra=st.integers(0, 3),
       roll=st.integers(-3, 3), seed=st.integers(0, 10_000))
def test_every_pixel_comes_from_i_or_j_as_the_mask_says(h, w, p, s, extra, roll, seed):
    s = min(s, p)
    geom = PatchGeometry(((h - 1) * s + p + extra, (w - 1) * s + p + extra), (h, w), p, s)
    rng = np.random.default_rng(seed)
    mask = rng.random((h, w)) < 0.5
    x_i, x_j = two_images((*geom.img_size, 3), seed)
    out, pm = transfer_image(x_i, x_j, mask, roll, geom)
    from_i = out < 100
    assert (from_i == pm[..., None]).all()  # i's pixels exactly where the (upsampled) mask is set
    shifted = np.roll(x_i, geom.column_shift(roll), axis=1)
    assert (out[pm] == shifted[pm]).all() and (out[~pm] == x_j[~pm]).all()
    rows, cols = geom.cell_index()
    assert (pm == mask[rows][:, cols]).all()


def test_transfer_refuses_images_of_another_size():
    with pytest.raises(ValueError):
        transfer_image(np.zeros((4, 6, 3)), np.zeros((4, 6, 3)), MJ, 0, GEOM)


def test_roll_tokens_matches_numpy_roll_per_sample():
    tokens = torch.arange(2 * 6 * 1, dtype=torch.float32).reshape(2, 6, 1)  # grid 2x3
    out = roll_tokens(tokens, torch.tensor([1, -1]), (2, 3))
    for b, r in enumerate([1, -1]):
        expected = np.roll(tokens[b].numpy().reshape(2, 3), r, axis=1).reshape(6, 1)
        assert np.array_equal(out[b].numpy(), expected)


def test_token_transfer_by_hand_and_identity_for_full_masks():
    ti = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1)  # grid 2x4, values 0..7
    tj = 100 + ti
    out = transfer_tokens(ti, tj, torch.from_numpy(MJ)[None], torch.tensor([1]), (2, 4))
    # row 0: cols 0,1 from j (100, 101); cols 2,3 from i rolled right: old cols 1,2 -> 1, 2
    assert out.flatten().tolist() == [100, 101, 1, 2, 104, 105, 5, 6]
    same = transfer_tokens(ti, tj, torch.ones(1, 2, 4, dtype=torch.bool), torch.tensor([0]), (2, 4))
    assert torch.equal(same, ti)


def test_pixel_and_token_transfer_agree_on_a_tiling_grid():
    """Transfer then patchify == patchify then transfer, when tokens are the raw pixels of each patch."""
    x_i, x_j = two_images()

    def patchify(x):  # [4, 8, 3] -> [1, 8 patches, 12]
        return torch.from_numpy(x.reshape(2, 2, 4, 2, 3).transpose(0, 2, 1, 3, 4).reshape(1, 8, 12).astype(np.float32))

    mask = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], bool)
    for roll in (-1, 0, 2):
        pixel, _ = transfer_image(x_i, x_j, mask, roll, GEOM)
        token = transfer_tokens(patchify(x_i), patchify(x_j), torch.from_numpy(mask)[None], torch.tensor([roll]),
                                (2, 4))
        assert torch.equal(patchify(pixel), token)


def test_transfer_sheet_has_four_tiles_per_row():
    x_i, x_j = two_images()
    out, _ = transfer_image(x_i, x_j, MJ, 0, GEOM)
    sheet = transfer_sheet([(x_i, x_j, MJ, out)] * 2, GEOM)
    assert sheet.shape == (3 + 2 * (4 + 3), 3 + 4 * (8 + 3), 3)
    assert (sheet[3:7, 3 + 3 * 11:3 + 3 * 11 + 8] == out).all()  # the result is the 4th tile


def test_pixel_mask_is_the_upsampled_grid_mask():
    assert pixel_mask(MJ, GEOM).tolist() == [[False] * 4 + [True] * 4] * 4


@pytest.mark.parametrize("from_border", [False, True])
def test_cut_paste_changes_only_its_box_with_donor_pixels(from_border):
    x_i, x_j = two_images((32, 16, 3), seed=4)
    cfg = CutPasteConfig(area=[0.1, 0.3], from_border=from_border)
    for seed in range(10):
        out, mask = cut_paste(x_i, x_j, np.random.default_rng(seed), cfg)
        assert (out[~mask] == x_i[~mask]).all() and (out[mask] >= 150).all()
        ys, xs = np.nonzero(mask)
        assert mask.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # one rectangle
        assert 0.05 * 512 <= mask.sum() <= 0.4 * 512
        if from_border:
            assert ys.min() == 0 or xs.min() == 0 or ys.max() == 31 or xs.max() == 15
    a = cut_paste(x_i, x_j, np.random.default_rng(7), cfg)[0]
    assert np.array_equal(a, cut_paste(x_i, x_j, np.random.default_rng(7), cfg)[0])


def test_random_erase_fills_only_its_box_and_is_seeded():
    img = torch.full((3, 32, 16), 5.0)
    out, mask = random_erase(img, np.random.default_rng(0), CutPasteConfig())
    m = torch.from_numpy(mask)
    assert (out[:, ~m] == 5.0).all() and (out[:, m] != 5.0).all()
    again, _ = random_erase(img, np.random.default_rng(0), CutPasteConfig())
    assert torch.equal(out, again)


def test_sample_box_stays_inside_the_image():
    cfg = CutPasteConfig(area=[0.5, 1.0], aspect=[0.1, 10.0])
    for seed in range(50):
        top, left, h, w = sample_box(np.random.default_rng(seed), (20, 10), cfg, from_border=seed % 2 == 0)
        assert 0 <= top and top + h <= 20 and 0 <= left and left + w <= 10 and h >= 1 and w >= 1
