"""Patch geometry: pixel ownership worked out by hand, upsample/pool round trips, backbone grids, token hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from occreid.errors import OccreidError
from occreid.models.factory import create_backbone
from occreid.saliency.geometry import PatchGeometry, patch_tokens_hook


def test_cell_index_without_overlap_is_integer_division():
    g = PatchGeometry((8, 12), (2, 3), 4, 4)
    rows, cols = g.cell_index()
    assert rows.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert cols.tolist() == [0] * 4 + [1] * 4 + [2] * 4


def test_cell_index_with_overlap_gives_each_patch_its_central_stride():
    # H=10, patch 4, stride 2 -> 4 rows; offset (4-2)/2 = 1; row of y = clip(floor((y + .5 - 1) / 2), 0, 3)
    g = PatchGeometry((10, 4), (4, 1), 4, (2, 4))
    rows, cols = g.cell_index()
    assert rows.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    assert cols.tolist() == [0, 0, 0, 0]


def test_tiling_with_fractional_cells():
    g = PatchGeometry.tiling((10, 4), (3, 2))
    assert g.patch == g.stride == (10 / 3, 2.0)
    assert g.cell_index()[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_upsample_copies_the_owning_patch_value():
    g = PatchGeometry((4, 4), (2, 2), 2, 2)
    up = g.upsample(np.array([[1, 2], [3, 4]]))
    assert up.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]


def test_pool_is_the_mean_over_owned_pixels():
    g = PatchGeometry((2, 4), (1, 2), 2, 2)
    assert g.pool(np.array([[0, 2, 4, 4], [2, 4, 8, 0]])).tolist() == [[2.0, 4.0]]


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 5), w=st.integers(1, 5), p=st.integers(1, 6), s=st.integers(1, 6), extra=st.integers(0, 5),
       seed=st.integers(0, 1000))
def test_pool_of_upsample_is_identity(h, w, p, s, extra, seed):
    s = min(s, p)
    g = PatchGeometry(((h - 1) * s + p + extra, (w - 1) * s + p + extra), (h, w), p, s)
    m = np.random.default_rng(seed).random((h, w))
    np.testing.assert_allclose(g.pool(g.upsample(m)), m)


def test_geometry_round_trips_through_an_array():
    g = PatchGeometry((256, 128), (21, 10), 16, 12)
    assert PatchGeometry.from_array(g.to_array()) == g


@pytest.mark.parametrize("kwargs", [dict(grid=(0, 2)), dict(stride=(0.5, 4)), dict(patch=(2, 2), stride=(4, 4)),
                                    dict(grid=(5, 2))])
def test_invalid_geometry_is_a_user_error(kwargs):
    args = dict(img_size=(16, 8), grid=(2, 2), patch=(4, 4), stride=(4, 4)) | kwargs
    with pytest.raises(OccreidError):
        PatchGeometry(**args)


def test_column_shift_is_roll_times_stride():
    g = PatchGeometry((256, 128), (21, 10), 16, 12)
    assert [g.column_shift(r) for r in (-2, 0, 1, 3)] == [-24, 0, 12, 36]


def test_geometry_of_an_overlapping_vit():
    bb = create_backbone("vit_tiny", img_size=(48, 32), stride=8, taps=())
    g = PatchGeometry.of_backbone(bb)
    assert g == PatchGeometry((48, 32), (5, 3), 16, 8)  # (48-16)//8+1 = 5, (32-16)//8+1 = 3


def test_patch_tokens_hook_edits_patch_embeddings_then_goes_away():
    torch.manual_seed(0)
    bb = create_backbone("vit_tiny", img_size=(32, 16), taps=()).eval()
    a, b = torch.randn(1, 3, 32, 16), torch.randn(1, 3, 32, 16)
    with torch.no_grad():
        with patch_tokens_hook(bb, lambda t: t * 0):  # no image content left: only CLS + position embedding
            za, zb = bb(a).cls, bb(b).cls
        fa, fb = bb(a).cls, bb(b).cls
    torch.testing.assert_close(za, zb)
    assert not torch.allclose(fa, fb)  # the hook was removed
    assert not torch.allclose(fa, za)


def test_geometry_and_token_hook_of_a_clip_backbone():
    torch.manual_seed(0)
    bb = create_backbone("clip_tiny", img_size=(64, 32), stride=8, taps=()).eval()
    assert PatchGeometry.of_backbone(bb) == PatchGeometry((64, 32), (7, 3), 16, 8)
    a, b = torch.randn(1, 3, 64, 32), torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        with patch_tokens_hook(bb, lambda t: t * 0):  # open_clip's conv1 output is [B, D, h, w]: same effect
            za, zb = bb(a).cls, bb(b).cls
        fa = bb(a).cls
    torch.testing.assert_close(za, zb)
    assert not torch.allclose(fa, za)


def test_token_hook_sees_tokens_in_grid_order_for_clip():
    """The hook's [B, N, D] view of open_clip's [B, D, h, w] map is row-major, like the ViT's tokens."""
    torch.manual_seed(0)
    bb = create_backbone("clip_tiny", img_size=(32, 32), taps=()).eval()  # grid 2 x 2
    seen = {}

    def keep_first(t):
        seen["tokens"] = t.clone()
        mask = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 4, 1)
        return t * mask

    conv_out = {}
    handle = bb.visual.conv1.register_forward_hook(lambda m, i, o: conv_out.setdefault("map", o.clone()))
    with torch.no_grad(), patch_tokens_hook(bb, keep_first):
        bb(torch.randn(1, 3, 32, 32))
    handle.remove()
    torch.testing.assert_close(seen["tokens"][0, 1], conv_out["map"][0, :, 0, 1])  # token 1 = row 0, col 1
