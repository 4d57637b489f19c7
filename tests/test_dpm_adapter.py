"""The DPM checkpoint adapter on a synthetic reference state dict (the released names, tiny shapes)."""

from __future__ import annotations

import pytest
import torch

from occreid.errors import OccreidError
from occreid.methods.dpm import DPMConfig, DPMMethod
from occreid.models.adapters.dpm import adapt_dpm_state_dict, load_dpm_checkpoint, to_reference_names
from occreid.models.factory import BackboneConfig

# The reference checkpoint's names and ViT-B shapes (stone96123/DPM, OCC_Duke: 22x11 grid, 8 cameras,
# 702 classes), block 0 standing for every block. BN counters are 0-d int64.
REFERENCE = """
base.cls_token 1,1,768
base.pos_embed 1,243,768
base.sie_embed 8,1,768
base.patch_embed.proj.weight 768,3,16,16
base.patch_embed.proj.bias 768
base.blocks.0.norm1.weight 768
base.blocks.0.norm1.bias 768
base.blocks.0.attn.qkv.weight 2304,768
base.blocks.0.attn.qkv.bias 2304
base.blocks.0.attn.proj.weight 768,768
base.blocks.0.attn.proj.bias 768
base.blocks.0.norm2.weight 768
base.blocks.0.norm2.bias 768
base.blocks.0.mlp.fc1.weight 3072,768
base.blocks.0.mlp.fc1.bias 3072
base.blocks.0.mlp.fc2.weight 768,3072
base.blocks.0.mlp.fc2.bias 768
base.norm.weight 768
base.norm.bias 768
base.ConvLayer.0.0.weight 1536,3072,3,3
base.ConvLayer.0.0.bias 1536
base.ConvLayer.0.1.weight 1536
base.ConvLayer.0.1.bias 1536
base.ConvLayer.0.1.running_mean 1536
base.ConvLayer.0.1.running_var 1536
base.ConvLayer.0.1.num_batches_tracked
base.ConvLayer.2.0.weight 768,1536,3,3
base.ConvLayer.2.0.bias 768
base.ConvLayer.2.1.weight 768
base.ConvLayer.2.1.bias 768
base.ConvLayer.2.1.running_mean 768
base.ConvLayer.2.1.running_var 768
base.ConvLayer.2.1.num_batches_tracked
base.ConvLayer.4.0.weight 768,768,3,3
base.ConvLayer.4.0.bias 768
base.ConvLayer.4.1.weight 768
base.ConvLayer.4.1.bias 768
base.ConvLayer.4.1.running_mean 768
base.ConvLayer.4.1.running_var 768
base.ConvLayer.4.1.num_batches_tracked
base.attfc.weight 768,768
base.attfc.bias 768
base.fc.weight 1000,768
base.fc.bias 1000
classifier.weight 702,768
bottleneck.weight 768
bottleneck.bias 768
bottleneck.running_mean 768
bottleneck.running_var 768
bottleneck.num_batches_tracked
"""
# ViT-B sizes → vit_tiny sizes (D = 96, 4 blocks with 4 taps, 48x32 image → 3x2 grid, 2 cameras, 5 classes)
TINY = {768: 96, 3072: 384, 2304: 288, 1536: 192, 243: 7, 8: 2, 702: 5, 1000: 10}
DEPTH, CAMS, CLASSES, IMG = 4, 2, 5, [48, 32]


def synthetic_reference(seed: int = 0) -> dict[str, torch.Tensor]:
    """Every reference name with tiny shapes and distinct random values, blocks 0..DEPTH-1."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for line in REFERENCE.strip().splitlines():
        name, *shape = line.split()
        dims = tuple(TINY.get(int(d), int(d)) for d in shape[0].split(",")) if shape else ()
        names = [name.replace("blocks.0.", f"blocks.{i}.") for i in range(DEPTH)] if "blocks.0." in name else [name]
        for n in names:
            sd[n] = torch.randint(0, 1000, (), generator=g) if not dims else torch.randn(dims, generator=g)
    return sd


def tiny_dpm(**kw) -> DPMMethod:
    torch.manual_seed(0)
    cfg = DPMConfig(backbone=BackboneConfig(name="vit_tiny", img_size=IMG), **kw)
    return DPMMethod(cfg, CLASSES, CAMS)


def expected(method) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in method.state_dict().items()}


def test_reference_state_dict_loads_strictly_and_values_land_in_place():
    ref = synthetic_reference()
    model = tiny_dpm()
    model.load_state_dict(adapt_dpm_state_dict(ref, expected=expected(model)), strict=True)
    sd = model.state_dict()
    pairs = {
        "base.cls_token": model.backbone.vit.cls_token,
        "base.pos_embed": model.backbone.vit.pos_embed,
        "base.sie_embed": model.backbone.sie_embed,
        "base.patch_embed.proj.weight": model.backbone.vit.patch_embed.proj.weight,
        "base.blocks.3.attn.qkv.weight": model.backbone.vit.blocks[3].attn.qkv.weight,
        "base.blocks.2.mlp.fc2.bias": model.backbone.vit.blocks[2].mlp.fc2.bias,
        "base.norm.weight": model.backbone.vit.norm.weight,
        "base.ConvLayer.0.0.weight": model.mask_generator.body[0][0].weight,
        "base.ConvLayer.2.1.running_var": model.mask_generator.body[2][1].running_var,
        "base.ConvLayer.4.1.num_batches_tracked": model.mask_generator.body[4][1].num_batches_tracked,
        "base.attfc.weight": model.mask_generator.fc.weight,
        "base.attfc.bias": model.mask_generator.fc.bias,
        "classifier.weight": model.classifier.weight,
        "bottleneck.running_mean": model.neck.bn.running_mean,
        "bottleneck.bias": model.neck.bn.bias,
    }
    for ref_name, tensor in pairs.items():
        assert torch.equal(tensor, ref[ref_name]), ref_name
    # every non-dropped reference tensor is somewhere in the model, unchanged
    ours = adapt_dpm_state_dict(ref)
    assert len(ours) == len(ref) - 2 == len(sd)
    assert all(torch.equal(sd[k], v) for k, v in ours.items())


def test_round_trip_back_to_reference_names():
    ref = synthetic_reference(1)
    back = to_reference_names(adapt_dpm_state_dict(ref))
    assert set(back) == set(ref) - {"base.fc.weight", "base.fc.bias"}
    assert all(back[k] is ref[k] for k in back)
    model = tiny_dpm()
    again = adapt_dpm_state_dict(to_reference_names(model.state_dict()), expected=expected(model))
    assert set(again) == set(model.state_dict())


def test_dataparallel_prefix_and_singleton_axes():
    ref = {f"module.{k}": v for k, v in synthetic_reference().items()}
    ref["module.base.sie_embed"] = ref["module.base.sie_embed"].reshape(CAMS, 96)  # [cams, D] instead of [cams, 1, D]
    model = tiny_dpm()
    model.load_state_dict(adapt_dpm_state_dict(ref, expected=expected(model)), strict=True)
    assert torch.equal(model.backbone.sie_embed[:, 0], ref["module.base.sie_embed"])


def test_unknown_missing_and_mismatched_names_are_listed():
    ref = synthetic_reference()
    with pytest.raises(OccreidError, match=r"2 names are not DPM checkpoint names: image_encoder\.proj, neck\.extra"):
        adapt_dpm_state_dict({**ref, "image_encoder.proj": torch.zeros(1), "neck.extra": torch.zeros(1)})
    model = tiny_dpm()
    with pytest.raises(OccreidError, match=r"not in the model: backbone\.vit\.head\.weight"):
        adapt_dpm_state_dict({**ref, "base.head.weight": torch.zeros(1)}, expected=expected(model))
    partial = {k: v for k, v in ref.items() if k not in ("base.attfc.bias", "bottleneck.running_var")}
    with pytest.raises(OccreidError, match=r"missing in the checkpoint: mask_generator\.fc\.bias, neck\.bn\.running_var"):
        adapt_dpm_state_dict(partial, expected=expected(model))
    # a model without the mask generator does not have the ConvLayer/attfc weights
    with pytest.raises(OccreidError, match=r"not in the model: mask_generator\.body\.0\.0\.bias"):
        adapt_dpm_state_dict(ref, expected=expected(tiny_dpm(mask=False)))
    # a model without hierarchy has a narrower first convolution
    with pytest.raises(OccreidError, match=r"shape mismatch.*mask_generator\.body\.0\.0\.weight \(192, 384, 3, 3\) vs \(192, 96, 3, 3\)"):
        adapt_dpm_state_dict(ref, expected=expected(tiny_dpm(hierarchy=False)))


def test_load_checkpoint_file(tmp_path):
    ref = synthetic_reference(2)
    path = tmp_path / "transformer_150.pth"
    torch.save({"model": ref}, path)
    model = load_dpm_checkpoint(tiny_dpm(), path)
    assert torch.equal(model.classifier.weight, ref["classifier.weight"])
    with pytest.raises(OccreidError, match="not found"):
        load_dpm_checkpoint(tiny_dpm(), tmp_path / "none.pth")
    torch.save({k: v for k, v in ref.items() if k != "base.norm.bias"}, path)
    with pytest.raises(OccreidError, match="backbone.vit.norm.bias") as err:
        load_dpm_checkpoint(tiny_dpm(), path)
    assert str(path) in str(err.value)
