"""Prompt encoding, locating a word's tokens, and the token-embedding perturbation hook."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def tokenize(tokenizer, prompts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
    """Token ids padded to the tokenizer's full length, as the Stable Diffusion pipeline pads them: (B, L)."""
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)


def encode(text_encoder: nn.Module, tokenizer, prompts: list[str]) -> torch.Tensor:
    """`E(p)`: the text encoder's last hidden state for each prompt: (B, L, D)."""
    ids = tokenize(tokenizer, prompts, text_encoder.device)
    return text_encoder(ids)[0]


def word_ids(tokenizer, word: str) -> list[int]:
    """The token ids of `word` on its own; a clear error if any of them is the unknown token."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"concept word {word!r} has no tokens; give a non-empty word")
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        raise ValueError(
            f"concept word {word!r} is not in the tokenizer's vocabulary (it maps to {tokenizer.unk_token!r}); "
            "pick a word the model knows"
        )
    return ids


def token_positions(tokenizer, prompt: str, word: str, template: str | None = None) -> list[int]:
    """Positions of `word`'s tokens in the tokenized `prompt` (BOS included), every occurrence.

    A BPE tokenizer splits a word glued to other letters differently ("van goghs" is not "van gogh" +
    "s"), so the word's own tokens are looked for; the error names `template` (the config key and value
    the prompt was made from), the place to fix."""
    target = word_ids(tokenizer, word)
    ids = tokenize(tokenizer, [prompt])[0].tolist()
    n = len(target)
    positions = [i + k for i in range(len(ids) - n + 1) if ids[i : i + n] == target for k in range(n)]
    if not positions:
        split = tokenizer.convert_ids_to_tokens(tokenizer(prompt, add_special_tokens=False).input_ids)
        raise ValueError(
            f"concept word {word!r} (tokens {tokenizer.convert_ids_to_tokens(target)}) does not occur in prompt "
            f"{prompt!r} (tokens {split}); fix {template or 'the prompt template'} so that it holds the word "
            "apart from other letters"
        )
    return positions


@contextmanager
def perturbed_embeddings(
    text_encoder: nn.Module, delta: torch.Tensor, positions: list[int], rows: slice | None = None
) -> Iterator[None]:
    """While active, add `delta` (len(positions), D) to the input token embeddings at `positions`.

    `rows` limits the perturbation to some prompts of the batch (all by default), so perturbed and
    clean prompts can share one text-encoder call. The hook sits on `get_input_embeddings()`,
    before the position embeddings and the transformer, as in AdvAnchor.
    """
    index = torch.tensor(positions)

    def hook(module, args, output):
        # output: (B, L, D); only the chosen rows and positions change
        sel = slice(None) if rows is None else rows
        added = torch.zeros_like(output)
        added[sel, index] = delta.to(device=output.device, dtype=output.dtype)
        return output + added

    handle = text_encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
