"""Forward parity with the released DPEFormer code (zhangxin06/DPEFormer), same weights, on the CPU.

Needs a checkout of the reference repository: ``OCCREID_DPEFORMER_REF=/path/to/DPEFormer pytest
tests/test_dpeformer_parity.py``; skipped otherwise (the repository is not on PyPI and is not vendored: its code
stays out of this project). The reference ``build_transformer`` (ViT-B/16, 256x128, stride 16, no SIE) is built
with random weights and random BN statistics, its state dict goes through our adapter into our ``dpeformer``
method with ``VARIANTS["reference_code"]``, and both models run the same images:

- test mode: the reference returns (the BN'd pooled stripes, the BN'd blended parts) = our ``embed`` with
  ``embed_feature: pooled`` and ``final`` (``neck_feat: after``);
- training mode (drop path off): the reference's identity loss, combined as its processor does (the mean CE of
  its 4 concatenated-feature scores + 2 × the mean of its 2 global scores + the mean of its 8 part scores), equals
  the sum of our identity terms for the clean and occluded views.
The reference imports ``einops`` only for a module its model never runs; a stand-in is registered when the
package is absent.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from occreid.config import merge
from occreid.methods import create_method
from occreid.methods.dpeformer import VARIANTS
from occreid.models.adapters.dpeformer import adapt_dpeformer_state_dict

REF = os.environ.get("OCCREID_DPEFORMER_REF", "")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(REF) / "model" / "make_model_zx.py").is_file(),
                       reason="set OCCREID_DPEFORMER_REF to a checkout of github.com/zhangxin06/DPEFormer"),
]
CLASSES, B = 7, 4


def reference_model(drop_path: float):
    """The reference ``build_transformer`` built through its own ``make_model_1`` from a config namespace."""
    if "einops" not in sys.modules and importlib.util.find_spec("einops") is None:
        sys.modules.setdefault("einops", types.SimpleNamespace(rearrange=None, repeat=None))
    sys.path.insert(0, REF)
    try:
        make_model = importlib.import_module("model.make_model_zx")
    finally:
        sys.path.remove(REF)
    model_cfg = SimpleNamespace(LAST_STRIDE=1, PRETRAIN_PATH="", NAME="transformer", PRETRAIN_CHOICE="none",
                                COS_LAYER=False, NECK="bnneck", ID_LOSS_TYPE="softmax", SIE_CAMERA=False,
                                SIE_VIEW=False, SIE_COE=3.0, TRANSFORMER_TYPE="vit_base_patch16_224_TransReID",
                                STRIDE_SIZE=[16, 16], DROP_PATH=drop_path, DROP_OUT=0.0, ATT_DROP_RATE=0.0)
    cfg = SimpleNamespace(MODEL=model_cfg, TEST=SimpleNamespace(NECK_FEAT="after"),
                          INPUT=SimpleNamespace(SIZE_TRAIN=[256, 128]))
    torch.manual_seed(0)
    model = make_model.make_model_1(cfg, num_class=CLASSES, camera_num=0, view_num=0)
    with torch.no_grad():  # non-trivial BN statistics and FBM position embeddings
        for name, tensor in model.state_dict().items():
            if name.endswith("running_mean") or name.endswith("pos_embed") and "attention_global" in name:
                tensor.normal_(0, 0.1)
            elif name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
    return model


def ours_like(reference, drop_path: float):
    cfg = merge(VARIANTS["reference_code"], {
        "backbone": {"name": "vit_base_patch16_224", "pretrained": None, "img_size": [256, 128], "stride": 16,
                     "sie": False, "drop_path": drop_path}, "memory_bank": False})
    method = create_method("dpeformer", cfg, CLASSES, 2)
    expected = {k: tuple(v.shape) for k, v in method.state_dict().items()}
    method.load_state_dict(adapt_dpeformer_state_dict(reference.state_dict(), expected=expected), strict=True)
    return method


def test_test_mode_features_match():
    ref = reference_model(0.1).eval()
    ours = ours_like(ref, 0.1).eval()
    images = torch.randn(B, 3, 256, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_pooled, ref_final = ref(images)
        final = ours.embed(images).feat
        ours.cfg.embed_feature = "pooled"
        pooled = ours.embed(images).feat
    assert final.shape == ref_final.shape == (B, 3072)
    torch.testing.assert_close(pooled, ref_pooled, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(final, ref_final, rtol=1e-4, atol=1e-4)


def test_training_identity_loss_matches():
    ref = reference_model(0.0).train()
    ours = ours_like(ref, 0.0).train()
    g = torch.Generator().manual_seed(2)
    clean, occluded = torch.randn(B, 3, 256, 128, generator=g), torch.randn(B, 3, 256, 128, generator=g)
    pids = torch.tensor([0, 0, 3, 3])
    scores = ref(torch.cat([clean, occluded, occluded[:, :1]], dim=1), labels=pids)[0]
    mean_ce = lambda group: sum(F.cross_entropy(s, pids) for s in group) / len(group)  # noqa: E731
    ref_loss = mean_ce(scores[0:4]) + 2 * mean_ce(scores[4:6]) + mean_ce(scores[6:14])
    terms = ours.losses({"image": clean, "image_aug": occluded, "pid": pids, "camid": torch.zeros(B, dtype=torch.long)})
    torch.testing.assert_close(sum(terms.values()), ref_loss, rtol=1e-4, atol=1e-4)
