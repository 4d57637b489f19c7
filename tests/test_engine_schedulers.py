"""Learning-rate schedules (values worked out by hand) and optimiser parameter groups."""

from __future__ import annotations

import math

import pytest
import torch

from occreid.engine.config import OptimizerConfig, SchedulerConfig, TrainConfig
from occreid.engine.optim import OptimizerSpec, build_optimizer, param_groups
from occreid.engine.schedulers import EpochLR, lr_curve
from occreid.errors import OccreidError


def test_cosine_with_warmup_by_hand():
    # base 1.0, 10 epochs, warm-up 2 from 0.01, floor 0.002; lr of epoch e is the value at t = e
    cfg = SchedulerConfig(name="cosine", warmup_epochs=2, warmup_factor=0.01, min_lr_factor=0.002)
    lrs = [g[0] for g in lr_curve(cfg, 10, 1.0)]
    # t=1 < warm-up: 0.01 + 1 * (1 - 0.01) / 2 = 0.505
    assert lrs[0] == pytest.approx(0.505)
    # t >= 2: 0.002 + 0.5 * 0.998 * (1 + cos(pi * t / 10))
    for e in (2, 5, 7):
        assert lrs[e - 1] == pytest.approx(0.002 + 0.499 * (1 + math.cos(math.pi * e / 10)))
    assert lrs[4] == pytest.approx(0.501)  # t=5: cos(pi/2) = 0
    assert lrs[9] == pytest.approx(0.002)  # t = epochs: the floor


def test_cosine_floor_and_warmup_are_absolute_for_bias_group():
    cfg = SchedulerConfig(name="cosine", warmup_epochs=2, warmup_factor=0.01, min_lr_factor=0.002)
    weight, bias = zip(*lr_curve(cfg, 10, 1.0, group_lr_factors=(1.0, 2.0)))
    assert bias[0] == pytest.approx(0.01 + (2.0 - 0.01) / 2)  # warm-up from the same 0.01 towards 2.0
    assert bias[4] == pytest.approx(0.002 + 0.5 * (2.0 - 0.002))
    assert bias[9] == pytest.approx(0.002)


def test_multistep_with_warmup_by_hand():
    # CLIP-ReID: warm-up 10 epochs from 0.1, ×0.1 at 30 and 50
    cfg = SchedulerConfig(name="multistep", warmup_epochs=10, warmup_factor=0.1, milestones=[30, 50], gamma=0.1)
    lrs = [g[0] for g in lr_curve(cfg, 60, 5e-6)]
    for e in (1, 5, 9):  # 0.1 * (1 - e/10) + e/10
        assert lrs[e - 1] == pytest.approx(5e-6 * (0.1 + 0.9 * e / 10))
    assert lrs[9] == pytest.approx(5e-6)  # e = 10: warm-up done
    assert lrs[28] == pytest.approx(5e-6)  # e = 29
    assert lrs[29] == pytest.approx(5e-7)  # e = 30: first decay
    assert lrs[49] == pytest.approx(5e-8)  # e = 50: second decay
    assert lrs[59] == pytest.approx(5e-8)


def test_scheduler_state_round_trip_continues_identically():
    cfg = SchedulerConfig(name="multistep", warmup_epochs=3, warmup_factor=0.1, milestones=[4, 6], gamma=0.5)

    def make():
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        return opt, EpochLR(opt, cfg, 8, 1.0)

    opt, sched = make()
    for e in range(1, 5):
        sched.step(e)
    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    for e in range(5, 9):
        sched.step(e)
        sched2.step(e)
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]
    with pytest.raises(ValueError):
        sched.step(2)


def test_param_groups_bias_rule_and_frozen_params():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2, bias=False))
    model[1].bias.requires_grad_(False)
    cfg = OptimizerConfig(lr=0.1, weight_decay=1e-4, bias_lr_factor=2.0, weight_decay_bias=0.0)
    groups = param_groups(model.named_parameters(), cfg)
    weight, bias = groups
    assert {id(p) for p in weight["params"]} == {id(model[0].weight), id(model[1].weight), id(model[2].weight)}
    assert [id(p) for p in bias["params"]] == [id(model[0].bias)]  # the frozen BN bias is left out
    assert (weight["lr"], weight["weight_decay"], bias["lr"], bias["weight_decay"]) == (0.1, 1e-4, 0.2, 0.0)
    for name, cls in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        spec = OptimizerSpec("main", param_groups(model.named_parameters(), cfg), OptimizerConfig(name=name, lr=0.1))
        opt = build_optimizer(spec)
        assert isinstance(opt, cls) and [g["lr"] for g in opt.param_groups] == [0.1, 0.1 * 2.0]


@pytest.mark.parametrize("bad", [
    lambda: TrainConfig(epochs=0), lambda: OptimizerConfig(lr=0), lambda: SchedulerConfig(milestones=[5, 3]),
    lambda: SchedulerConfig(warmup_factor=0),
])
def test_bad_values_are_user_errors(bad):
    with pytest.raises(OccreidError):
        bad()


def test_train_config_from_params_rejects_unknown_keys():
    from stages.params import from_dict

    data = {"epochs": 3, "optimizer": {"name": "adam", "lr": 3.5e-4}, "transforms": {"size": [128, 64]}}
    cfg = from_dict(TrainConfig, data)
    assert cfg.optimizer.name == "adam" and cfg.transforms.size == [128, 64] and cfg.batch_size == 64
    with pytest.raises(OccreidError, match="unknown params key"):
        from_dict(TrainConfig, {"optimiser": {}})
