"""Released CLIP-ReID checkpoints → our ``clipreid`` method (and prompt learner / text tower) names.

CLIP-ReID (``model/make_model_clipreid.py``) saves ``model.state_dict()`` of its ``build_transformer``:
``image_encoder.*`` (OpenAI CLIP's visual tower, whose parameter names open_clip keeps), ``cv_embed`` (SIE),
``bottleneck*`` / ``classifier*`` (two BNNecks), ``prompt_learner.{cls_ctx, token_prefix, token_suffix}``
and ``text_encoder.{transformer, positional_embedding, ln_final, text_projection}`` — with ``module.``
in front when saved from DataParallel. :func:`adapt_clipreid_state_dict` renames them (a pure function,
no tensor is changed); :func:`load_clipreid_checkpoint` puts them into a built method and recomputes the
per-identity text features from the checkpoint's own prompts and text tower, so a released model can be
evaluated or fine-tuned here.
"""

from __future__ import annotations

from pathlib import Path

import torch

from occreid.errors import OccreidError

# CLIP-ReID prefix → ours, longest first (``bottleneck_proj.`` before ``bottleneck.``).
PREFIXES: tuple[tuple[str, str], ...] = (
    ("image_encoder.", "backbone.visual."),
    ("bottleneck_proj.", "neck_proj.bn."),
    ("bottleneck.", "neck.bn."),
    ("classifier_proj.", "neck_proj.classifier."),
    ("classifier.", "neck.classifier."),
    ("prompt_learner.cls_ctx", "prompt_learner.ctx"),
    ("prompt_learner.token_prefix", "prompt_learner.token_prefix"),
    ("prompt_learner.token_suffix", "prompt_learner.token_suffix"),
    ("text_encoder.", "text_encoder."),
)
EXACT = {"cv_embed": "backbone.cam_embed"}
METHOD_PREFIXES = ("backbone.", "neck.", "neck_proj.")  # the keys that belong to ClipReIDMethod itself


def adapt_clipreid_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a CLIP-ReID state dict to ours: method keys (``backbone.*``, ``neck.*``, ``neck_proj.*``),
    ``prompt_learner.*`` (:class:`~occreid.models.prompt_learner.PromptLearner`) and ``text_encoder.*``
    (:class:`~occreid.models.prompt_learner.ClipTextEncoder`). Unknown keys are an error (a checkpoint of
    another model), not silently dropped."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        name = key[len("module."):] if key.startswith("module.") else key
        new = EXACT.get(name)
        if new is None:
            for old, ours in PREFIXES:
                if name.startswith(old):
                    new = ours + name[len(old):]
                    break
        if new is None:
            unknown.append(key)
            continue
        if new in out:
            raise OccreidError(f"checkpoint holds '{key}' twice (with and without 'module.')")
        out[new] = value
    if unknown:
        raise OccreidError(
            f"{len(unknown)} keys are not CLIP-ReID (ViT-B/16) names, e.g. {unknown[:3]}",
            fix="pass a checkpoint saved by CLIP-ReID's train_clipreid.py (ViT-B-16)",
        )
    if not any(k.startswith("backbone.visual.") for k in out):
        raise OccreidError("no image_encoder.* weights: not a CLIP-ReID checkpoint",
                           fix="pass a checkpoint saved by CLIP-ReID's train_clipreid.py")
    return out


def split_adapted(adapted: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Group adapted keys: ``method`` (full names), ``prompt_learner`` and ``text_encoder`` (prefix removed)."""
    groups: dict[str, dict[str, torch.Tensor]] = {"method": {}, "prompt_learner": {}, "text_encoder": {}}
    for key, value in adapted.items():
        head, _, rest = key.partition(".")
        if head in ("prompt_learner", "text_encoder"):
            groups[head][rest] = value
        else:
            groups["method"][key] = value
    return groups


def load_clipreid_checkpoint(method, path: str | Path) -> None:
    """Load a CLIP-ReID checkpoint file into a built ``clipreid`` method (same backbone, stride, ids, cameras).

    Image tower, SIE, necks and classifiers are copied; when the checkpoint has its prompts and text tower
    (CLIP-ReID saves both), the per-identity text features are recomputed from them into
    ``method.text_features``.
    """
    from occreid.models.clip_backbone import load_clip
    from occreid.models.prompt_learner import ClipTextEncoder, PromptLearner
    from occreid.prompts.train import compute_text_features

    path = Path(path)
    if not path.is_file():
        raise OccreidError("CLIP-ReID checkpoint not found", path=path, fix="give the path of the .pth file")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise OccreidError(f"cannot read checkpoint: {e}", path=path, fix="pass a CLIP-ReID state dict (.pth)") from None
    groups = split_adapted(adapt_clipreid_state_dict(sd))
    own = method.state_dict()
    bad = [k for k, v in groups["method"].items() if k not in own or own[k].shape != v.shape]
    if bad:
        k = bad[0]
        got = tuple(groups["method"][k].shape)
        want = tuple(own[k].shape) if k in own else "absent"
        raise OccreidError(
            f"checkpoint does not fit this clipreid model: '{k}' is {got} here {want} ({len(bad)} such keys)",
            path=path, fix="build the method with the checkpoint's backbone, stride, SIE, identities and cameras",
        )
    missing = method.load_state_dict(groups["method"], strict=False).missing_keys
    missing = [k for k in missing if k != "text_features"]
    if missing:
        raise OccreidError(f"checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}", path=path,
                           fix="build the method with the checkpoint's SIE setting (backbone.sie)")
    if groups["prompt_learner"].get("ctx") is None or not groups["text_encoder"]:
        return
    clip = load_clip(method.cfg.backbone.name, None)
    encoder = ClipTextEncoder(clip)
    encoder.load_state_dict(groups["text_encoder"], strict=True)
    ctx = groups["prompt_learner"]["ctx"]
    learner = PromptLearner(ctx.shape[0], clip.token_embedding, n_ctx=ctx.shape[1], context_length=clip.context_length)
    learner.load_state_dict({**learner.state_dict(), **groups["prompt_learner"]}, strict=True)
    method.text_features.copy_(compute_text_features(learner, encoder))
