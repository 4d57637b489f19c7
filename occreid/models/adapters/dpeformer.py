"""DPEFormer checkpoints (zhangxin06/DPEFormer ``build_transformer``, TransReID names) → our ``dpeformer`` names.

The reference saves ``model.state_dict()`` (of a DataParallel: ``module.`` in front) every checkpoint period, and
the memory bank separately (``transformermemory_<epoch>.pth``: the [classes, 3072] tensor). Its model holds
more than its forward uses; what is used maps one to one onto our method built with
``VARIANTS["reference_code"]`` (the code's FBM layout, 2 heads, no BN on the global head):

| reference | ours |
|---|---|
| ``base.*`` (TransReID ViT; ``sie_embed`` when trained with SIE) | ``backbone.vit.*`` (``backbone.sie_embed``) |
| ``classifier3`` (global token) | ``global_classifier`` |
| ``bottleneck_local.0-3``, ``classifier1`` (pooled stripes, f_qj) | ``pooled_necks.0-3.bn``, ``pooled_classifier`` |
| ``attention_global.i.pos_embed``, ``.Block.{norm1, norm2, attn.q, attn.kv, attn.proj, norm3, mlp.fc1, mlp.fc2}`` | ``fbms.i.{pos_embed, norm_q, norm_kv, q, kv, proj, norm_ffn, ffn.fc1, ffn.fc2}`` |
| ``bottleneck_local.4-7``, ``classifier_local.4-7``, ``classifier1_4`` | ``part_necks.0-3.{bn, classifier}``, ``final_classifier`` |

Dropped, because the reference's forward never reads them: the ImageNet head ``base.fc``, the REM alternative
``REM_zx``, the unused layers inside each ``fbm_qkv`` (its own ``norm1``/``attn``/``norm2``/``param`` and the
blocks' ``attn.param``), ``b2`` (four copies of the last block), ``classifier1_2``, ``classifier1_3``,
``classifier2``, ``bottleneck_global``, ``bottleneck_local.8-9``, ``bottleneck_local_stage2``,
``classifier_local.{0-3, 8-9}`` and ``ffn2``/``ffn3``. Tensors are never changed, only renamed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from occreid.errors import OccreidError
from occreid.models.adapters.common import check_fits, listing

_FBM = {"norm1": "norm_q", "norm2": "norm_kv", "norm3": "norm_ffn", "attn.q": "q", "attn.kv": "kv",
        "attn.proj": "proj", "mlp.fc1": "ffn.fc1", "mlp.fc2": "ffn.fc2"}
# (pattern, our name from the match); the first matching pattern wins.
RULES: tuple[tuple[str, Callable[[re.Match], str]], ...] = (
    (r"base\.sie_embed", lambda m: "backbone.sie_embed"),
    (r"base\.(?!fc\.)(.+)", lambda m: f"backbone.vit.{m[1]}"),
    (r"classifier3\.weight", lambda m: "global_classifier.weight"),
    (r"classifier1\.weight", lambda m: "pooled_classifier.weight"),
    (r"classifier1_4\.weight", lambda m: "final_classifier.weight"),
    (r"bottleneck_local\.([0-3])\.(.+)", lambda m: f"pooled_necks.{m[1]}.bn.{m[2]}"),
    (r"bottleneck_local\.([4-7])\.(.+)", lambda m: f"part_necks.{int(m[1]) - 4}.bn.{m[2]}"),
    (r"classifier_local\.([4-7])\.weight", lambda m: f"part_necks.{int(m[1]) - 4}.classifier.weight"),
    (r"attention_global\.(\d+)\.pos_embed", lambda m: f"fbms.{m[1]}.pos_embed"),
    (r"attention_global\.(\d+)\.Block\.(norm1|norm2|norm3|attn\.q|attn\.kv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(.+)",
     lambda m: f"fbms.{m[1]}.{_FBM[m[2]]}.{m[3]}"),
)
DROPPED: tuple[str, ...] = (
    r"base\.fc\..+", r"REM_zx\..+", r"attention_global\.\d+\.(norm1|norm2|attn)\..+", r"attention_global\.\d+\.param",
    r"attention_global\.\d+\.Block\.attn\.param", r"b2\..+", r"classifier1_[23]\.weight", r"classifier2\.weight",
    r"bottleneck_global\..+", r"bottleneck_local\.[89]\..+", r"bottleneck_local_stage2\..+",
    r"classifier_local\.[0-389]\.weight", r"ffn[23]\..+",
)
MEMORY = ("memory.bank", "memory.ready")  # not in the model file: the bank is saved on its own


def _ours(name: str) -> str | None:
    for pattern, build in RULES:
        m = re.fullmatch(pattern, name)
        if m:
            return build(m)
    return None


def adapt_dpeformer_state_dict(sd: Mapping[str, torch.Tensor], *, expected: Mapping[str, Sequence[int]] | None = None,
                               memory: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Rename a reference DPEFormer state dict to our names (unused reference layers dropped).

    ``expected`` (our model's names → shapes): the result is checked to load strictly, except the memory bank,
    which the model file does not hold (pass the separately saved ``memory`` [classes, 3072] to fill it; it is
    only needed to continue training). Names that are neither mapped nor known-unused raise in any case."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        name = key[len("module."):] if key.startswith("module.") else key
        if any(re.fullmatch(p, name) for p in DROPPED):
            continue
        new = _ours(name)
        if new is None:
            unknown.append(key)
        elif new in out:
            raise OccreidError(f"checkpoint holds '{name}' twice (with and without 'module.')")
        else:
            out[new] = value
    if unknown:
        raise OccreidError(f"{len(unknown)} names are not DPEFormer checkpoint names: {listing(unknown)}",
                           fix="pass a state dict saved by zhangxin06/DPEFormer's train.py (base.*, attention_global.*, ...)")
    if memory is not None:
        out["memory.bank"], out["memory.ready"] = memory, torch.tensor(True)
    if expected is None:
        return out
    return check_fits(out, expected, what="DPEFormer", optional=MEMORY,
                      fix="build the method like the checkpoint: VARIANTS['reference_code'], vit_base_patch16_224 "
                          "at 256x128, stride 16, SIE as trained, the training set's classes")


def load_dpeformer_checkpoint(method: nn.Module, path: str | Path, memory_path: str | Path | None = None) -> nn.Module:
    """Load a DPEFormer checkpoint file (and optionally its memory file) into a built ``dpeformer`` method."""
    path = Path(path)
    if not path.is_file():
        raise OccreidError("DPEFormer checkpoint not found", path=path, fix="correct the path")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    memory = torch.load(memory_path, map_location="cpu", weights_only=True) if memory_path is not None else None
    expected = {k: tuple(v.shape) for k, v in method.state_dict().items()}
    try:
        adapted = adapt_dpeformer_state_dict(state, expected=expected, memory=memory)
    except OccreidError as e:
        raise OccreidError(e.problem, path=path, fix=e.fix) from None
    missing, unexpected = method.load_state_dict(adapted, strict=False)
    left = [k for k in missing if k not in MEMORY]
    if left or unexpected:  # adapt_dpeformer_state_dict checked this already; a guard against drift
        raise OccreidError(f"DPEFormer checkpoint did not load: missing {left}, unexpected {unexpected}", path=path)
    return method
