"""The training loop on a toy dataset: learning, exact resume, checkpoints, callbacks, save/load, errors."""

from __future__ import annotations

import math

import pytest
import torch

from data_fixtures import toy_person_records
from engine_fixtures import KillAt, Killed
from occreid.data.records import Record
from occreid.engine import OptimizerSpec, PeriodicEval, TrainConfig, fit, load_model, param_groups, save_model
from occreid.engine.checkpoint import list_checkpoints, load_checkpoint
from occreid.engine.seeding import seed_everything
from occreid.errors import OccreidError
from occreid.methods import create_method
from occreid.methods.vit import VitMethod
from stages.params import from_dict

NUM_IDS, PER_ID, H, W = 6, 4, 64, 32


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[Record]:
    """6 identities × 4 images (2 cameras): each id has its own colours and a bright band at its own height."""
    return toy_person_records(tmp_path_factory.mktemp("toy"), NUM_IDS, PER_ID, H, W, band_step=8)


def config(**over) -> TrainConfig:
    base = {
        "epochs": 2, "ids_per_batch": 3, "images_per_id": 2, "log_period": 100,
        "optimizer": {"lr": 0.01}, "scheduler": {"warmup_epochs": 1},
        "transforms": {"size": [H, W], "pad": 2},
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return from_dict(TrainConfig, base)


def vit(seed: int = 0, **backbone) -> VitMethod:
    seed_everything(seed)
    return create_method("vit", {"backbone": {"img_size": [H, W], "drop_path": 0.1, **backbone}}, NUM_IDS, 2)


class TwoStep(VitMethod):
    """A DPM-shaped method: two optimisers (the neck's unscheduled), two forward/backward/step per iteration."""

    def optimizers(self, train_cfg):
        named = list(self.named_parameters())
        neck = [(n, p) for n, p in named if n.startswith("neck.")]
        rest = [(n, p) for n, p in named if not n.startswith("neck.")]
        opt = train_cfg.optimizer
        return [
            OptimizerSpec("main", param_groups(rest, opt), opt),
            OptimizerSpec("neck", param_groups(neck, opt), opt, scheduled=False),
        ]

    def train_step(self, batch, ctx):
        ctx.zero_grad()
        with ctx.autocast():
            first = sum(self.losses(batch).values())
        ctx.backward_and_step(first, "main")
        ctx.zero_grad("neck")
        with ctx.autocast():
            second = sum(self.losses(batch).values())  # with the updated backbone
        ctx.backward_and_step(second, "neck")
        return {"loss": first.item(), "second": second.item()}


class Recorder:
    def __init__(self):
        self.calls = []

    def on_train_start(self, config):
        self.calls.append(("start", config))

    def on_epoch_end(self, epoch, metrics):
        self.calls.append(("epoch", epoch, dict(metrics)))

    def on_train_end(self, history):
        self.calls.append(("end", len(history)))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_tiny_vit_training_decreases_the_loss(records, tmp_path):
    cfg = config(epochs=6, optimizer={"lr": 0.02}, scheduler={"warmup_epochs": 1, "min_lr_factor": 0.1})
    history = fit(vit(), records, cfg, tmp_path)
    assert [h["epoch"] for h in history] == list(range(1, 7))
    first, last = history[0], history[-1]
    assert last["loss"] < 0.8 * first["loss"]
    assert last["id"] < first["id"] and last["triplet"] < first["triplet"]
    assert all(h["iterations"] >= 1 and h["images_per_s"] > 0 for h in history)


@pytest.mark.parametrize("method_cls", [VitMethod, TwoStep])
def test_killed_run_resumes_to_the_same_weights(records, tmp_path, method_cls):
    """2 epochs straight == 1 epoch, kill during epoch 2, restart with resume, finish."""
    cfg = config(transforms={"random_erasing_p": 0.5})  # drop-path and erasing exercise every RNG stream

    def method(seed):
        seed_everything(seed)
        return method_cls(vit(seed).cfg, NUM_IDS, 2)

    straight = method(0)
    ref = fit(straight, records, cfg, tmp_path / "straight")

    victim = method(0)
    with pytest.raises(Killed):
        fit(victim, records, cfg, tmp_path / "killed", callbacks=[KillAt(2)])
    assert [e for e, _ in list_checkpoints(tmp_path / "killed" / "checkpoints")] == [1]

    restarted = method(99)  # another init: everything must come from the checkpoint
    rec = Recorder()
    resumed = fit(restarted, records, cfg, tmp_path / "killed", callbacks=[rec])
    assert [c[1] for c in rec.calls if c[0] == "epoch"] == [2]  # only epoch 2 trained again
    assert_same_weights(straight, restarted)
    drop = {"seconds", "images_per_s"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in resumed] == [
        {k: v for k, v in h.items() if k not in drop} for h in ref
    ]
    if method_cls is TwoStep:
        assert all(h["lr_neck"] == cfg.optimizer.lr for h in ref)  # unscheduled: constant
        assert ref[0]["lr"] != ref[1]["lr"]


def test_checkpoints_are_weights_only_pruned_and_finished_runs_do_not_retrain(records, tmp_path):
    cfg = config(keep_checkpoints=1)
    method = vit()
    history = fit(method, records, cfg, tmp_path)
    found = list_checkpoints(tmp_path / "checkpoints")
    assert [e for e, _ in found] == [2]
    state = load_checkpoint(found[0][1])  # weights_only=True inside
    assert {"model", "optimizers", "schedulers", "rng", "sampler", "history", "epoch"} <= state.keys()
    rec = Recorder()
    again = fit(vit(5), records, cfg, tmp_path, callbacks=[rec])
    assert again == history and [c[0] for c in rec.calls] == ["start", "end"]


def test_changed_config_trains_from_scratch(records, tmp_path):
    fit(vit(), records, config(epochs=1), tmp_path)
    rec = Recorder()
    history = fit(vit(), records, config(epochs=1, optimizer={"lr": 0.005}), tmp_path, callbacks=[rec])
    assert len(history) == 1 and [c[1] for c in rec.calls if c[0] == "epoch"] == [1]
    # a change that cannot affect the weights (log_period) still resumes
    rec = Recorder()
    fit(vit(), records, config(epochs=1, optimizer={"lr": 0.005}, log_period=7), tmp_path, callbacks=[rec])
    assert [c[0] for c in rec.calls] == ["start", "end"]


def test_callbacks_see_config_and_metrics_and_periodic_eval_adds_keys(records, tmp_path):
    rec = Recorder()
    evaluated = []

    def evaluate(epoch):
        evaluated.append(epoch)
        return {"mAP": 0.5 + epoch}

    cfg = config(epochs=3)
    history = fit(vit(), records, cfg, tmp_path, callbacks=[PeriodicEval(evaluate, 2, cfg.epochs), rec])
    start = rec.calls[0]
    assert start[0] == "start" and start[1]["train"]["epochs"] == 3 and start[1]["method"] == "vit"
    epochs = [c for c in rec.calls if c[0] == "epoch"]
    assert [c[1] for c in epochs] == [1, 2, 3]
    assert {"loss", "id", "triplet", "lr", "seconds", "images_per_s"} <= epochs[0][2].keys()
    assert evaluated == [2, 3] and epochs[1][2]["val/mAP"] == 2.5  # seen by the later callback
    assert "val/mAP" not in history[0] and history[2]["val/mAP"] == 3.5
    assert rec.calls[-1] == ("end", 3)


def test_save_and_load_model_round_trip(records, tmp_path):
    # the method was built from a pretrained file that is gone by load time: loading must not need it
    seed_everything(3)
    src = create_method("vit", {"backbone": {"img_size": [224, 224]}}, 2, 0).backbone.vit
    weights = tmp_path / "pre.pth"
    torch.save(src.state_dict(), weights)
    method = vit(1, pretrained=str(weights), stride=12)
    method.neck.bn.running_mean.fill_(0.25)  # buffers travel too
    resolved = {"method": "vit", "train": {"epochs": 2}, "dataset": "toy"}
    save_model(tmp_path / "model.pt", method, resolved)
    weights.unlink()
    loaded, cfg = load_model(tmp_path / "model.pt")
    assert cfg == resolved and isinstance(loaded, VitMethod) and not loaded.training
    assert loaded.cfg == method.cfg and loaded.cfg.backbone.pretrained == str(weights)
    assert_same_weights(method, loaded)
    x, cams = torch.randn(2, 3, H, W), torch.tensor([0, 1])
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x, cams).feat, method.embed(x, cams).feat, rtol=0, atol=0)
    with pytest.raises(OccreidError, match="not an occreid model"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
        load_model(tmp_path / "other.pt")


def test_user_errors(records, tmp_path):
    with pytest.raises(OccreidError, match="differs from the model input size"):
        fit(vit(), records, config(transforms={"size": [128, 64]}), tmp_path)
    with pytest.raises(OccreidError, match="fewer than ids_per_batch"):
        fit(vit(), records, config(ids_per_batch=7), tmp_path)

    class Diverges(VitMethod):
        def losses(self, batch):
            return {k: v * math.nan for k, v in super().losses(batch).items()}

    with pytest.raises(OccreidError, match="diverged"):
        fit(Diverges(vit().cfg, NUM_IDS, 2), records, config(), tmp_path / "nan")


def test_vit_method_embedding_and_config():
    method = vit(0, sie=False)
    assert method.backbone.sie_embed is None
    method.eval()
    x = torch.randn(3, 3, H, W)
    with torch.no_grad():
        before = method.embed(x).feat
        method.cfg.neck_feat = "after"
        after = method.embed(x).feat
    assert before.shape == after.shape == (3, 96)
    torch.testing.assert_close(after, method.neck.bn(before))
    with pytest.raises(OccreidError, match="unknown params key"):
        create_method("vit", {"neckfeat": "after"}, 3, 1)
    with pytest.raises(OccreidError, match="unknown method"):
        create_method("vitt", None, 3, 1)


def test_amp_policy_and_bf16_autocast_on_cpu(records, tmp_path):
    from occreid.engine.context import resolve_amp

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_amp("auto", cpu) is None and resolve_amp("auto", cuda) is torch.float16
    assert resolve_amp("off", cuda) is None and resolve_amp("bf16", cpu) is torch.bfloat16
    method = vit()
    history = fit(method, records, config(epochs=1, amp="bf16"), tmp_path)
    assert math.isfinite(history[0]["loss"])
    assert all(p.dtype == torch.float32 for p in method.parameters())  # autocast, not a bf16 model
