"""Forget-Me-Not (Zhang et al. 2023, arXiv 2303.17591): attention re-steering away from the concept's tokens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..losses import attention_mass
from ..text import token_positions, tokenize
from .base import ErasureMethod


def attention_probs(attn, hidden_states: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """softmax(QK^T / sqrt(d)) of a diffusers cross-attention layer: (B * heads, pixels, tokens)."""
    query = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B, N, C) -> (B * heads, N, C / heads)
    key = attn.head_to_batch_dim(attn.to_k(context))  # (B, L, C) -> (B * heads, L, C / heads)
    return attn.get_attention_scores(query, key, None)


class ForgetMeNot(ErasureMethod):
    """Fine-tune the UNet so that, on noised images of the concept, no cross-attention layer attends to
    the concept's tokens of its prompt."""

    name = "fmn"
    paper = "Zhang et al. 2023, Forget-Me-Not: Learning to Forget in Text-to-Image Diffusion Models, arXiv 2303.17591"

    def __init__(self, prompt: str = "{concept}", use_pooler: bool = False, **kwargs):
        """
        Args:
            prompt: template of the concept's prompt, whose images are generated and noised.
            use_pooler: also re-steer attention away from the prompt's end-of-text token, which the
                causal text encoder makes a summary of the whole prompt (the authors' `use_pooler`).
            **kwargs: as for every method (`ErasureMethod`).
        """
        super().__init__(**kwargs)
        self.prompt, self.use_pooler = prompt, use_pooler

    def prepare(self) -> None:
        self.positions = [self._positions(self.erase_prompt(c), c) for c in self.concepts]
        self.cross_attention = [m for n, m in self.unet.named_modules() if n.endswith("attn2")]

    def _positions(self, prompt: str, concept: str) -> list[int]:
        """The concept's token positions in `prompt`, and with `use_pooler` its first end-of-text token's."""
        positions = token_positions(self.tokenizer, prompt, concept, f"model.prompt {self.prompt!r}")
        if self.use_pooler:
            ids = tokenize(self.tokenizer, [prompt])[0].tolist()
            positions.append(ids.index(self.tokenizer.eos_token_id))
        return positions

    def erase_prompt(self, concept: str) -> str:
        return self.prompt.format(concept=concept)

    @contextmanager
    def recorded_attention(self) -> Iterator[list[torch.Tensor]]:
        """While active, every attn2 call appends its attention probabilities to the yielded list.

        The probabilities are recomputed from the layer's own projections (a pre-hook), so whichever
        attention processor the UNet uses stays in charge of the forward pass."""
        probs: list[torch.Tensor] = []

        def record(attn, args, kwargs):
            probs.append(attention_probs(attn, args[0], kwargs["encoder_hidden_states"]))

        handles = [m.register_forward_pre_hook(record, with_kwargs=True) for m in self.cross_attention]
        try:
            yield probs
        finally:
            for handle in handles:
                handle.remove()

    def item_loss(self, z0: torch.Tensor, label: int) -> tuple[torch.Tensor, dict[str, float]]:
        zt, t, _ = self.noised(z0.unsqueeze(0).to(self.unet.device, self.unet.dtype))  # (1, C, h, w)
        with self.recorded_attention() as probs:
            self.unet(zt, t, self.encoded(self.erase_prompt(self.concepts[label])))
        loss = attention_mass(probs, self.positions[label])
        return loss, {"attention_mass": loss.item()}
