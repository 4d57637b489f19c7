"""Prompt learner: token layout of the template, prompt embeddings, frozen text tower, gradient flow."""

from __future__ import annotations

import open_clip
import pytest
import torch

from occreid.errors import OccreidError
from occreid.losses.supcon import symmetric_supcon
from occreid.models.clip_backbone import load_clip
from occreid.models.prompt_learner import ClipTextEncoder, PromptLearner



@pytest.fixture(scope="module")
def clip():
    return load_clip("clip_tiny", seed=0)


def _learner(clip, num_ids=5, **kw) -> PromptLearner:
    return PromptLearner(num_ids, clip.token_embedding, context_length=clip.context_length,
                         generator=torch.Generator().manual_seed(0), **kw)


def test_token_layout_decodes_back(clip):
    pl = _learner(clip)
    tokens = pl.tokenized[0]
    words = [open_clip.decode(tokens[i : i + 1]).strip() for i in range(12)]
    assert words == ["<start_of_text>", "a", "photo", "of", "a", "x", "x", "x", "x", "person", ".", "<end_of_text>"]
    assert torch.count_nonzero(tokens[12:]) == 0  # zero padding to the context length
    assert tokens.shape == (clip.context_length,) == (32,)  # the tiny config's context length
    assert pl.ctx_start == 5 and pl.eot_index == 11
    assert pl.token_prefix.shape == (1, 5, 32) and pl.token_suffix.shape == (1, 32 - 9, 32)


def test_prompt_embeddings_put_identity_vectors_in_the_x_slots(clip):
    pl = _learner(clip)
    labels = torch.tensor([3, 0, 3])
    prompts = pl(labels)
    emb = clip.token_embedding(pl.tokenized)[0]
    assert prompts.shape == (3, 32, 32)
    assert torch.equal(prompts[:, :5], emb[:5].expand(3, -1, -1))
    assert torch.equal(prompts[:, 9:], emb[9:].expand(3, -1, -1))
    assert torch.equal(prompts[:, 5:9], pl.ctx[labels])
    assert torch.equal(prompts[0], prompts[2]) and not torch.equal(prompts[0], prompts[1])


def test_context_init_is_normal_002_and_seeded(clip):
    pl = _learner(clip, num_ids=60)
    assert pl.ctx.shape == (60, 4, 32)
    assert 0.018 < pl.ctx.std().item() < 0.022 and abs(pl.ctx.mean().item()) < 0.002
    assert torch.equal(pl.ctx, _learner(clip, num_ids=60).ctx)


def test_text_encoder_matches_open_clip_on_plain_tokens(clip):
    # fed CLIP's own token embeddings, the prompt path must be exactly open_clip's encode_text
    enc = ClipTextEncoder(clip)
    tokens = open_clip.tokenize(["a photo of a person.", "a red bag"], context_length=clip.context_length)
    eot = tokens.argmax(-1)
    ours = enc(clip.token_embedding(tokens), eot)
    assert ours.shape == (2, 32) and enc.embed_dim == 32
    assert torch.allclose(ours, clip.encode_text(tokens), atol=1e-5)


def test_only_prompt_vectors_receive_gradients(clip):
    pl, enc = _learner(clip), ClipTextEncoder(clip)
    enc.train()
    assert not enc.training  # frozen tower stays in eval mode
    labels = torch.tensor([0, 1, 1, 4])
    img = torch.randn(4, 32, requires_grad=False)
    text = enc(pl(labels), pl.eot_index)
    i2t, t2i = symmetric_supcon(img, text, labels)
    (i2t + t2i).backward()
    assert pl.ctx.grad is not None and pl.ctx.grad[[0, 1, 4]].abs().sum() > 0
    assert torch.count_nonzero(pl.ctx.grad[[2, 3]]) == 0  # identities not in the batch get no gradient
    assert all(p.grad is None and not p.requires_grad for p in enc.parameters())
    assert [n for n, p in pl.named_parameters()] == ["ctx"]
    assert clip.token_embedding.weight.grad is None


@pytest.mark.parametrize("template, n_ctx", [("A photo of a X X person.", 4), ("A X photo X of a X X person.", 4)])
def test_bad_templates_are_explained(clip, template, n_ctx):
    with pytest.raises(OccreidError, match="consecutive"):
        _learner(clip, template=template, n_ctx=n_ctx)


def test_other_slot_counts_and_templates(clip):
    pl = _learner(clip, template="A photo of a X X X X X X vehicle.", n_ctx=6)
    assert pl.ctx.shape == (5, 6, 32) and pl.ctx_start == 5 and pl.eot_index == 13
    assert open_clip.decode(pl.tokenized[0, 11:12]).strip() == "vehicle"
