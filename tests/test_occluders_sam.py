"""SAM for the occluder library: the tiny random model, and checkpoints from a file or a URL pinned by sha256."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from occreid.errors import OccreidError
from occreid.occluders import SamConfig
from occreid.occluders.sam import TINY_SAM, SamMasks, assemble_sam, build_sam, checkpoint_path, load_state


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "tiny_sam.pth"
    torch.save(assemble_sam(TINY_SAM).state_dict(), path)
    return path


def test_tiny_sam_is_small_seeded_and_runs_the_real_mask_generator():
    a, b, c = build_sam(SamConfig(model_type="tiny"), seed=0), build_sam(SamConfig(model_type="tiny"), seed=0), \
        build_sam(SamConfig(model_type="tiny"), seed=1)
    n = sum(p.numel() for p in a.parameters())
    assert 50_000 < n < 200_000 and not a.training
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    masks = SamMasks(SamConfig(model_type="tiny", points_per_side=2, pred_iou_thresh=0, stability_score_thresh=0))
    image = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    found = masks(image)
    assert found and all(c.mask.any() and c.box[0] + c.box[2] <= 40 and c.box[1] + c.box[3] <= 48 for c in found)
    strict = SamMasks(SamConfig(model_type="tiny", points_per_side=2))  # SAM's own thresholds: a random SAM
    assert strict(image) == []  # keeps nothing (the demo uses the classical backend)


def test_checkpoint_round_trip_and_a_mismatch_names_the_differences(tiny_checkpoint):
    model = assemble_sam(TINY_SAM)
    load_state(model, tiny_checkpoint, "tiny")
    saved = torch.load(tiny_checkpoint, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    state = dict(saved)
    state.pop("mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    state["image_encoder.pos_embed"] = torch.zeros(1, 2, 2, 32)
    torch.save(state, tiny_checkpoint)
    with pytest.raises(OccreidError, match="1 missing .*iou_token.*1 unexpected .*extra.weight.*1 of another shape "
                                           ".*pos_embed") as e:
        load_state(assemble_sam(TINY_SAM), tiny_checkpoint, "vit_b")
    assert "model_type" in e.value.fix
    tiny_checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(OccreidError, match="cannot read the SAM checkpoint"):
        load_state(assemble_sam(TINY_SAM), tiny_checkpoint, "tiny")


def test_local_checkpoint_is_checked_against_its_sha256(tiny_checkpoint, tmp_path):
    good = sha(tiny_checkpoint)
    pinned = SamConfig(model_type="vit_b", checkpoint=str(tiny_checkpoint), sha256=good)
    assert checkpoint_path(pinned) == tiny_checkpoint
    with pytest.raises(OccreidError, match="sha256 mismatch"):
        checkpoint_path(SamConfig(model_type="vit_b", checkpoint=str(tiny_checkpoint), sha256="0" * 64))
    with pytest.raises(OccreidError, match=f"its sha256 is {good}"):  # unpinned: the hash to paste
        checkpoint_path(SamConfig(model_type="vit_b", checkpoint=str(tiny_checkpoint)))
    with pytest.raises(OccreidError, match="SAM checkpoint not found") as e:
        checkpoint_path(SamConfig(model_type="vit_b", checkpoint=str(tmp_path / "nope.pth")))
    assert "sam_vit_b_01ec64.pth" in e.value.fix


def test_url_checkpoint_is_downloaded_once_into_the_cache(tiny_checkpoint, tmp_path):
    cfg = SamConfig(model_type="vit_l", urls=[tiny_checkpoint.as_uri()], sha256=sha(tiny_checkpoint),
                    cache_dir=str(tmp_path / "cache"))
    got = checkpoint_path(cfg)
    assert got == tmp_path / "cache" / "tiny_sam.pth" and got.read_bytes() == tiny_checkpoint.read_bytes()
    tiny_checkpoint.unlink()  # the cached copy is re-checked, not downloaded again
    assert checkpoint_path(cfg) == got


def test_a_real_type_is_built_by_segment_anything_and_loads_strictly(tiny_checkpoint):
    cfg = SamConfig(model_type="vit_b", checkpoint=str(tiny_checkpoint), sha256=sha(tiny_checkpoint))
    with pytest.raises(OccreidError, match="does not fit SAM vit_b"):  # a vit_b from the registry, tiny weights
        build_sam(cfg)
