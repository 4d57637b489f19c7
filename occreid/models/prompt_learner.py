"""CLIP-ReID's identity prompts: "A photo of a X X X X person." with learnable, identity-specific X's.

Re-ID identities have no names, so CLIP-ReID (stage 1) learns for every identity ``n_ctx`` word vectors
that replace the X's in a fixed template; passed through the *frozen* CLIP text transformer they give one
text feature per identity, which stage 2 uses as a classifier over identities (i2t loss) and DPM++ as
prototypes. The template is tokenised with open_clip's own tokenizer and embedded with CLIP's own token
embedding, so only the X slots differ from what CLIP saw in pre-training.
"""

from __future__ import annotations

import open_clip
import torch
from torch import nn

from occreid.errors import OccreidError

DEFAULT_TEMPLATE = "A photo of a X X X X person."


def tokenize(text: str, context_length: int) -> torch.Tensor:
    """open_clip's BPE tokenisation of one text → ``[1, context_length]`` ids (SOT … EOT, zero padding)."""
    return open_clip.tokenize([text], context_length=context_length)


def placeholder_slots(tokens: torch.Tensor, placeholder: str = "X") -> list[int]:
    """Positions of the placeholder word in a tokenised template (one token each)."""
    ph = open_clip.tokenize([placeholder])[0]
    ids = ph[(ph != 0) & (ph != ph.max()) & (ph != ph[0])]  # drop SOT, EOT and padding
    if ids.numel() != 1:
        raise ValueError(f"placeholder '{placeholder}' is not a single token")
    return (tokens[0] == ids[0]).nonzero().flatten().tolist()


class PromptLearner(nn.Module):
    """Per-identity prompt embeddings: frozen prefix + ``num_ids × n_ctx × width`` learned vectors + suffix.

    ``forward(labels)`` returns ``[B, context_length, width]`` token embeddings ready for
    :class:`ClipTextEncoder`. The prefix ("SOT a photo of a") and suffix ("person . EOT" + padding) are
    buffers computed once from CLIP's token embedding, so the learner does not hold the embedding table.
    """

    def __init__(
        self,
        num_ids: int,
        token_embedding: nn.Embedding,
        *,
        template: str = DEFAULT_TEMPLATE,
        n_ctx: int = 4,
        context_length: int = 77,
        placeholder: str = "X",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if num_ids < 1:
            raise OccreidError(f"the prompt learner needs at least one identity, got {num_ids}", fix="check the training split")
        tokens = tokenize(template, context_length)
        slots = placeholder_slots(tokens, placeholder)
        if len(slots) != n_ctx or slots != list(range(slots[0], slots[0] + n_ctx)):
            raise OccreidError(
                f"template '{template}' must hold exactly {n_ctx} consecutive '{placeholder}' words (found {len(slots)})",
                fix=f"write the template with {n_ctx} '{placeholder}'s, or set prompts.n_ctx to their number",
            )
        start = slots[0]
        with torch.no_grad():
            embedding = token_embedding(tokens).float()  # [1, L, width]
        width = embedding.shape[-1]
        self.num_ids, self.n_ctx, self.width, self.template = num_ids, n_ctx, width, template
        self.register_buffer("tokenized", tokens)
        self.register_buffer("token_prefix", embedding[:, :start].clone())
        self.register_buffer("token_suffix", embedding[:, start + n_ctx :].clone())
        ctx = torch.empty(num_ids, n_ctx, width)
        nn.init.normal_(ctx, std=0.02, generator=generator)
        self.ctx = nn.Parameter(ctx)

    @property
    def ctx_start(self) -> int:
        """Index of the first learned slot in the token sequence."""
        return self.token_prefix.shape[1]

    @property
    def eot_index(self) -> int:
        """Position of EOT (the largest id in CLIP's vocabulary), where the text feature is read."""
        return int(self.tokenized[0].argmax())

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        b = labels.shape[0]
        return torch.cat(
            [self.token_prefix.expand(b, -1, -1), self.ctx[labels], self.token_suffix.expand(b, -1, -1)], dim=1
        )


class ClipTextEncoder(nn.Module):
    """The frozen CLIP text tower applied to prompt *embeddings* (not token ids), read at EOT × projection.

    Holds references to open_clip ``CLIP``'s text modules (transformer, positional embedding, final norm,
    projection and causal mask). Its parameters are frozen here: only prompt vectors are ever learned.
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.context_length = clip_model.context_length
        self.embed_dim = (
            self.text_projection.out_features
            if isinstance(self.text_projection, nn.Linear)
            else self.text_projection.shape[1]
        )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "ClipTextEncoder":
        """Stays in eval mode: the text tower is frozen in both CLIP-ReID stages."""
        return super().train(False)

    def forward(self, prompts: torch.Tensor, eot_index: int | torch.Tensor) -> torch.Tensor:
        if prompts.shape[1] != self.context_length:
            raise ValueError(f"prompts have {prompts.shape[1]} tokens, the text tower takes {self.context_length}: "
                             "build the PromptLearner with context_length=clip_model.context_length")
        x = prompts + self.positional_embedding.to(prompts.dtype)
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        rows = torch.arange(x.shape[0], device=x.device)
        x = x[rows, eot_index]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection
