"""SPT's saliency head: shapes, detached taps, loss terms on hand cases, a tiny training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from occreid.data.datasets import create_dataset
from occreid.models.factory import BackboneConfig
from occreid.saliency import SaliencyConfig, SpsConfig, compute_saliency
from occreid.saliency.sps import SaliencyHead, SpsMethod, SpsMethodConfig, sps_loss_terms
from saliency_fixtures import build_person_dataset

TINY = BackboneConfig(name="vit_tiny", img_size=[48, 32], stride=8, sie=False, taps=[2, 4])


def test_head_maps_taps_to_one_value_in_0_1_per_patch_and_does_not_train_the_taps():
    head = SaliencyHead(dim=5, num_taps=2)
    taps = [torch.randn(3, 6, 5, requires_grad=True) for _ in range(2)]
    sal = head(taps, (3, 2))
    assert sal.shape == (3, 3, 2)
    assert ((sal > 0) & (sal < 1)).all()
    sal.sum().backward()
    assert all(t.grad is None for t in taps)  # detached
    assert head.conv.weight.grad is not None and head.conv.weight.shape == (1, 10, 1, 1)


def test_head_is_a_1x1_conv_over_concatenated_taps():
    head = SaliencyHead(dim=2, num_taps=2)
    with torch.no_grad():
        head.conv.weight.copy_(torch.tensor([1.0, 0.0, 0.0, 2.0]).view(1, 4, 1, 1))
        head.conv.bias.fill_(-1.0)
    t1 = torch.tensor([[[1.0, 5.0], [0.0, 5.0]]])  # [B=1, N=2, D=2]
    t2 = torch.tensor([[[9.0, 0.5], [9.0, 0.0]]])
    # patch 0: 1*1 + 2*0.5 - 1 = 1 ; patch 1: 0 + 0 - 1 = -1
    expected = torch.sigmoid(torch.tensor([[[1.0], [-1.0]]]))
    torch.testing.assert_close(head([t1, t2], (2, 1)), expected)


def _terms(saliency_value: float, **cfg):
    b, c = 2, 2
    zeros = torch.zeros(b, c)
    return sps_loss_terms(zeros, zeros, zeros, torch.full((b, 3, 2), saliency_value), torch.tensor([0, 1]),
                          torch.randn(b, 4), SpsConfig(**({"triplet_weight": 0.0} | cfg)))


def test_usage_loss_is_zero_at_the_target_and_50_dm2_elsewhere():
    assert _terms(0.3)["usage"].item() == pytest.approx(0.0, abs=1e-12)
    assert _terms(0.5)["usage"].item() == pytest.approx(50 * 0.2 ** 2)
    assert _terms(0.1, usage_weight=10.0)["usage"].item() == pytest.approx(10 * 0.2 ** 2)


def test_id_and_rest_terms_by_hand():
    t = _terms(0.3)
    assert set(t) == {"id", "id_salient", "usage", "rest"}
    assert t["id"].item() == pytest.approx(math.log(2))  # uniform logits over 2 classes
    assert t["id_salient"].item() == pytest.approx(math.log(2))
    # <[.5,.5],[.5,.5]> = 0.5 per sample, summed over 2 samples, times 0.1
    assert t["rest"].item() == pytest.approx(0.1)


def test_rest_term_with_confident_disagreeing_views_is_near_zero_and_ignores_full_logits_gradient():
    full = torch.tensor([[20.0, 0.0]], requires_grad=True)
    rest = torch.tensor([[0.0, 20.0]], requires_grad=True)
    t = sps_loss_terms(full, full.detach(), rest, torch.full((1, 2, 1), 0.3), torch.tensor([0]), torch.randn(1, 4),
                       SpsConfig(id_weight=0, salient_id_weight=0, triplet_weight=0, usage_weight=0))
    assert set(t) == {"rest"} and t["rest"].item() < 1e-8
    t["rest"].backward()
    assert full.grad is None and rest.grad is not None


def test_sps_method_losses_run_three_views_and_train_the_head():
    torch.manual_seed(0)
    method = SpsMethod(SpsMethodConfig(backbone=TINY, sps=SpsConfig()), num_classes=3)
    batch = {"image": torch.randn(4, 3, 48, 32), "pid": torch.tensor([0, 0, 1, 2])}
    terms = method.losses(batch)
    assert set(terms) == {"id", "id_salient", "triplet", "usage", "rest"}
    assert all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert method.head.conv.weight.grad.abs().sum() > 0
    with torch.no_grad():
        method.eval()
        sal = method.saliency(batch["image"])
    assert sal.shape == (4, 5, 3)


def test_sps_backend_trains_and_is_deterministic(tmp_path):
    root = build_person_dataset(tmp_path / "ds", ids=3, per_id=2, size=(48, 32))
    records = create_dataset("synthocc", root).train
    cfg = SaliencyConfig(backend="sps", batch_size=4,
                         sps=SpsConfig(epochs=1, ids_per_batch=2, images_per_id=2, seed=1))
    a = compute_saliency(records, root, cfg, TINY, device="cpu")
    b = compute_saliency(records, root, cfg, TINY, device="cpu")
    assert a.maps.shape == (6, 5, 3) and a.geometry.grid == (5, 3)
    assert a.backend == "sps" and a.paths[0].startswith("bounding_box_train/")
    assert ((a.maps > 0) & (a.maps < 1)).all()
    assert a.maps.tobytes() == b.maps.tobytes()
    assert not np.allclose(a.maps, a.maps.flat[0])  # not a constant map


def test_sps_backend_refuses_a_grid_other_than_the_model_grid(tmp_path):
    from occreid.errors import OccreidError

    root = build_person_dataset(tmp_path / "ds", ids=2, per_id=2, size=(48, 32))
    records = create_dataset("synthocc", root).train
    cfg = SaliencyConfig(backend="attention", grid=[4, 4])
    with pytest.raises(OccreidError, match="differs from the model's patch grid"):
        compute_saliency(records, root, cfg, TINY, device="cpu")
