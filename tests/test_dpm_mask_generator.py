"""DPM's hierarchical mask generator: shapes, initial value, gradients, tiny grids, batch size 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from occreid.errors import OccreidError
from occreid.models.mask_generator import HierarchicalMaskGenerator, SafeMaxPool2x2, tokens_to_map


def _taps(num: int, b: int, grid: tuple[int, int], d: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, grid[0] * grid[1], d, generator=g) for _ in range(num)]


def test_initial_mask_is_exactly_one_half_and_has_the_right_shape():
    torch.manual_seed(0)
    hmg = HierarchicalMaskGenerator(dim=8, num_taps=4)
    mask = hmg(_taps(4, 3, (6, 3), 8), (6, 3))
    assert mask.shape == (3, 8)
    assert torch.equal(mask, torch.full((3, 8), 0.5))


def test_channel_widths_follow_the_reference_layout():
    hmg = HierarchicalMaskGenerator(dim=8, num_taps=4)
    shapes = {k: tuple(v.shape) for k, v in hmg.state_dict().items()}
    assert shapes["body.0.0.weight"] == (16, 32, 3, 3)  # 4D -> 2D
    assert shapes["body.2.0.weight"] == (8, 16, 3, 3)  # 2D -> D
    assert shapes["body.4.0.weight"] == (8, 8, 3, 3)  # D -> D
    assert shapes["fc.weight"] == (8, 8)
    assert shapes["body.4.1.running_var"] == (8,)


def test_zero_initialised_head_means_only_the_head_learns_at_first():
    # With fc.weight = 0 the mask does not depend on the conv body, so the body's gradient is exactly 0
    # while the head's is not; once fc.weight is non-zero the body receives gradient too.
    torch.manual_seed(0)
    hmg = HierarchicalMaskGenerator(dim=6, num_taps=2)
    taps = _taps(2, 4, (4, 2), 6)
    target = torch.randn(4, 6)
    (hmg(taps, (4, 2)) * target).sum().backward()
    assert hmg.fc.weight.grad.abs().sum() > 0
    assert hmg.fc.bias.grad.abs().sum() > 0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in hmg.body.parameters())

    hmg.zero_grad()
    with torch.no_grad():
        hmg.fc.weight.normal_()
    (hmg(taps, (4, 2)) * target).sum().backward()
    assert hmg.body[0][0].weight.grad.abs().sum() > 0


def test_gradient_reaches_the_tapped_tokens():
    torch.manual_seed(1)
    hmg = HierarchicalMaskGenerator(dim=4, num_taps=2)
    with torch.no_grad():
        hmg.fc.weight.normal_()
    taps = [t.requires_grad_() for t in _taps(2, 2, (4, 4), 4)]
    hmg(taps, (4, 4)).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in taps)


@pytest.mark.parametrize("grid", [(1, 1), (1, 3), (2, 1), (3, 2), (5, 5), (22, 11)])
def test_any_grid_size_gives_a_mask_in_the_open_unit_interval(grid):
    torch.manual_seed(2)
    hmg = HierarchicalMaskGenerator(dim=4, num_taps=1)
    with torch.no_grad():
        hmg.fc.weight.normal_()
        hmg.fc.bias.normal_()
    mask = hmg(_taps(1, 2, grid, 4), grid)
    assert mask.shape == (2, 4)
    assert bool(((mask > 0) & (mask < 1)).all())


def test_batch_of_one_keeps_its_batch_axis():
    torch.manual_seed(3)
    hmg = HierarchicalMaskGenerator(dim=4, num_taps=4).eval()
    assert hmg(_taps(4, 1, (4, 2), 4), (4, 2)).shape == (1, 4)
    # in training mode every BatchNorm needs > 1 value per channel: an 8x4 grid still has 2x1 at the last one
    hmg.train()
    assert hmg(_taps(4, 1, (8, 4), 4), (8, 4)).shape == (1, 4)


def test_safe_pool_matches_floor_pooling_where_that_works_and_skips_unit_sides():
    pool = SafeMaxPool2x2()
    x = torch.randn(2, 3, 22, 11)
    assert torch.equal(pool(x), F.max_pool2d(x, 2))
    assert pool(x).shape[-2:] == (11, 5)
    assert pool(pool(x)).shape[-2:] == (5, 2)
    row = torch.tensor([[[[1.0, 5.0, 2.0]]]])  # 1x3: pools along the width only, floor drops the last
    assert pool(row).tolist() == [[[[5.0]]]]
    col = torch.tensor([[[[1.0], [7.0], [2.0], [3.0]]]])  # 4x1
    assert pool(col).tolist() == [[[[7.0], [3.0]]]]
    one = torch.tensor([[[[4.0]]]])
    assert torch.equal(pool(one), one)


def test_tokens_are_laid_out_row_major_on_the_grid():
    b, h, w, d = 1, 3, 2, 2
    tokens = torch.arange(h * w).float().view(1, h * w, 1).expand(b, h * w, d)
    fmap = tokens_to_map(tokens, (h, w))
    assert fmap.shape == (1, d, h, w)
    assert fmap[0, 0].tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]


def test_wrong_tap_count_or_grid_is_a_user_error():
    hmg = HierarchicalMaskGenerator(dim=4, num_taps=2)
    with pytest.raises(OccreidError, match="2 tapped blocks"):
        hmg(_taps(3, 2, (2, 2), 4), (2, 2))
    with pytest.raises(OccreidError, match="grid 3x2"):
        hmg(_taps(2, 2, (2, 2), 4), (3, 2))
