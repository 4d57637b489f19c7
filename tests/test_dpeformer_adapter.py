"""The DPEFormer checkpoint adapter on a synthetic reference state dict (the released code's names, tiny shapes)."""

from __future__ import annotations

import pytest
import torch

from occreid.config import merge
from occreid.errors import OccreidError
from occreid.methods import create_method
from occreid.methods.dpeformer import VARIANTS
from occreid.models.adapters.dpeformer import adapt_dpeformer_state_dict, load_dpeformer_checkpoint
from occreid.models.adapters.released import LOADERS

D, DEPTH, CLASSES, SUB = 96, 4, 5, 16  # vit_tiny: width 96, 4 blocks; 64x32 at patch 16 → 4x2 grid + CLS
IMG = [64, 32]


def reference_names() -> dict[str, tuple[int, ...]]:
    """The names ``build_transformer`` registers (zhangxin06/DPEFormer, model/make_model_zx.py), at tiny widths.

    Written from the module structure: TransReID ViT ``base``, four REM blocks, four ``fbm_qkv``, four copies of
    the last block ``b2``, the classifiers and BN lists."""
    names: dict[str, tuple[int, ...]] = {"base.cls_token": (1, 1, D), "base.pos_embed": (1, 9, D),
                                         "base.patch_embed.proj.weight": (D, 3, 16, 16), "base.patch_embed.proj.bias": (D,),
                                         "base.norm.weight": (D,), "base.norm.bias": (D,), "base.fc.weight": (1000, D),
                                         "base.fc.bias": (1000,)}

    def block(prefix: str) -> None:
        for n, shape in (("norm1", (D,)), ("norm2", (D,)), ("attn.qkv", (3 * D, D)), ("attn.proj", (D, D)),
                         ("mlp.fc1", (4 * D, D)), ("mlp.fc2", (D, 4 * D))):
            names[f"{prefix}.{n}.weight"] = shape
            names[f"{prefix}.{n}.bias"] = (shape[0],)

    def bn(prefix: str) -> None:
        for n in ("weight", "bias", "running_mean", "running_var"):
            names[f"{prefix}.{n}"] = (D,)
        names[f"{prefix}.num_batches_tracked"] = ()

    for i in range(DEPTH):
        block(f"base.blocks.{i}")
    for i in range(4):
        for n in ("conv_query", "conv_part", "conv_value"):
            names[f"REM_zx.{i}.{n}.weight"], names[f"REM_zx.{i}.{n}.bias"] = (D, D), (D,)
        names[f"REM_zx.{i}.param"] = (1,)
        names[f"REM_zx.{i}.linear1.weight"], names[f"REM_zx.{i}.linear1.bias"] = (D, 2 * D), (D,)
        names[f"REM_zx.{i}.linear2.weight"], names[f"REM_zx.{i}.linear2.bias"] = (1, D), (1,)
        a = f"attention_global.{i}"
        for outer in (a, f"{a}.Block"):
            names[f"{outer}.norm1.weight"] = names[f"{outer}.norm1.bias"] = (SUB,)
            names[f"{outer}.norm2.weight"] = names[f"{outer}.norm2.bias"] = (SUB,)
            names[f"{outer}.attn.q.weight"], names[f"{outer}.attn.kv.weight"] = (SUB, SUB), (2 * SUB, SUB)
            names[f"{outer}.attn.proj.weight"], names[f"{outer}.attn.proj.bias"] = (SUB, SUB), (SUB,)
            names[f"{outer}.attn.param"] = (1,)
        names[f"{a}.param"], names[f"{a}.pos_embed"] = (1,), (1, D // SUB, SUB)
        names[f"{a}.Block.norm3.weight"] = names[f"{a}.Block.norm3.bias"] = (SUB,)
        names[f"{a}.Block.mlp.fc1.weight"], names[f"{a}.Block.mlp.fc1.bias"] = (SUB, SUB), (SUB,)
        names[f"{a}.Block.mlp.fc2.weight"], names[f"{a}.Block.mlp.fc2.bias"] = (SUB, SUB), (SUB,)
        block(f"b2.{i}.0")
        names[f"b2.{i}.1.weight"] = names[f"b2.{i}.1.bias"] = (D,)
    for n, width in (("classifier1", 4), ("classifier1_4", 4), ("classifier1_3", 3), ("classifier1_2", 2),
                     ("classifier2", 3), ("classifier3", 1)):
        names[f"{n}.weight"] = (CLASSES, width * D)
    bn("bottleneck_global")
    for i in range(10):
        bn(f"bottleneck_local.{i}")
        names[f"classifier_local.{i}.weight"] = (CLASSES, D)
    for i in range(4):
        bn(f"bottleneck_local_stage2.{i}")
    for f in ("ffn2", "ffn3"):
        names[f"{f}.layers2.norm.weight"] = names[f"{f}.layers2.norm.bias"] = (D,)
        names[f"{f}.layers2.fn.net.0.weight"], names[f"{f}.layers2.fn.net.0.bias"] = (8 * D, D), (8 * D,)
        names[f"{f}.layers2.fn.net.3.weight"], names[f"{f}.layers2.fn.net.3.bias"] = (D, 4 * D), (D,)
    return names


def synthetic_reference(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randint(0, 100, (), generator=g) if not s else torch.randn(s, generator=g)
            for n, s in reference_names().items()}


def tiny(**over):
    torch.manual_seed(0)
    cfg = merge(merge(VARIANTS["reference_code"], {"backbone": {"name": "vit_tiny", "img_size": IMG, "sie": False},
                                                   "selection": {"k_min": 2}}), over)
    return create_method("dpeformer", cfg, CLASSES, 2)


def expected(method) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in method.state_dict().items()}


def test_reference_state_dict_loads_and_values_land_in_place():
    ref = synthetic_reference()
    model = tiny()
    adapted = adapt_dpeformer_state_dict(ref, expected=expected(model))
    missing, unexpected = model.load_state_dict(adapted, strict=False)
    assert sorted(missing) == ["memory.bank", "memory.ready"] and unexpected == []
    pairs = {
        "base.pos_embed": model.backbone.vit.pos_embed,
        "base.blocks.3.attn.qkv.weight": model.backbone.vit.blocks[3].attn.qkv.weight,
        "classifier3.weight": model.global_classifier.weight,
        "classifier1.weight": model.pooled_classifier.weight,
        "classifier1_4.weight": model.final_classifier.weight,
        "bottleneck_local.2.running_var": model.pooled_necks[2].bn.running_var,
        "bottleneck_local.6.weight": model.part_necks[2].bn.weight,
        "classifier_local.7.weight": model.part_necks[3].classifier.weight,
        "attention_global.1.pos_embed": model.fbms[1].pos_embed,
        "attention_global.0.Block.norm1.bias": model.fbms[0].norm_q.bias,
        "attention_global.0.Block.norm2.weight": model.fbms[0].norm_kv.weight,
        "attention_global.2.Block.attn.kv.weight": model.fbms[2].kv.weight,
        "attention_global.3.Block.attn.proj.bias": model.fbms[3].proj.bias,
        "attention_global.3.Block.norm3.weight": model.fbms[3].norm_ffn.weight,
        "attention_global.1.Block.mlp.fc2.weight": model.fbms[1].ffn.fc2.weight,
    }
    for ref_name, tensor in pairs.items():
        assert torch.equal(tensor, ref[ref_name]), ref_name
    assert len(adapted) == len(model.state_dict()) - 2  # every model tensor but the bank comes from the file


def test_module_prefix_memory_file_and_released_loader(tmp_path):
    ref = {f"module.{k}": v for k, v in synthetic_reference(1).items()}
    torch.save(ref, tmp_path / "transformer_120.pth")
    bank = torch.randn(CLASSES, 4 * D)
    torch.save(bank, tmp_path / "transformermemory_120.pth")
    model = load_dpeformer_checkpoint(tiny(), tmp_path / "transformer_120.pth", tmp_path / "transformermemory_120.pth")
    assert torch.equal(model.memory.bank, bank) and bool(model.memory.ready)
    assert LOADERS["dpeformer"] is load_dpeformer_checkpoint


def test_unknown_missing_and_mismatched_names_are_listed():
    ref = synthetic_reference()
    with pytest.raises(OccreidError, match=r"1 names are not DPEFormer checkpoint names: extra\.weight"):
        adapt_dpeformer_state_dict({**ref, "extra.weight": torch.zeros(1)})
    with pytest.raises(OccreidError, match=r"missing in the checkpoint: part_necks\.1\.classifier\.weight"):
        adapt_dpeformer_state_dict({k: v for k, v in ref.items() if k != "classifier_local.5.weight"},
                                   expected=expected(tiny()))
    # the paper's FBM layout has other parameters: the code's checkpoint does not fit it
    with pytest.raises(OccreidError, match=r"not in the model: fbms\.0\.kv\.weight"):
        adapt_dpeformer_state_dict(ref, expected=expected(tiny(blending={"style": "paper", "heads": 1})))
    # a BN on the global head (paper) is not in the reference
    with pytest.raises(OccreidError, match=r"missing in the checkpoint: global_neck"):
        adapt_dpeformer_state_dict(ref, expected=expected(tiny(global_bnneck=True)))
    with pytest.raises(OccreidError, match="not found"):
        load_dpeformer_checkpoint(tiny(), "/nonexistent/transformer_120.pth")
