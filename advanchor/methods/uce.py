"""Unified Concept Editing (Gandikota et al. 2024, arXiv 2308.14761): a closed-form edit of every
cross-attention key and value projection, no training."""

from __future__ import annotations

import torch

from .. import export
from ..text import encode, tokenize
from .base import ErasureMethod


def uce_delta(
    w0: torch.Tensor,
    erase: torch.Tensor,
    targets: torch.Tensor,
    preserve: torch.Tensor,
    lamb: float = 0.5,
    erase_scale: float = 1.0,
    preserve_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """UCE's edit W - W0 as factors (B, A), W - W0 = B @ A, in float32 (Gandikota et al. 2024, Eq. 7).

    W = (lamb W0 + s_e sum_i v_i c_i^T + s_p sum_j W0 c_j c_j^T)(lamb I + s_e sum_i c_i c_i^T + s_p sum_j c_j c_j^T)^-1
    minus W0 is s_e (V - W0 C) C^T M^-1, with M the second factor: rank at most the number of erased
    embeddings. w0: (out, in); erase C: (k, in); targets V: (k, out); preserve P: (m, in).
    Returns B (out, k) and A (k, in).
    """
    w0, c, v, p = (x.detach().float() for x in (w0, erase, targets, preserve))
    m = lamb * torch.eye(w0.shape[1], device=w0.device)
    m = m + erase_scale * c.T @ c + preserve_scale * p.T @ p  # (in, in), symmetric positive definite
    a = torch.linalg.solve(m, c.T).T  # C^T M^-1, as (M^-1 C)^T since M is symmetric: (k, in)
    b = erase_scale * (v - c @ w0.T).T  # s_e (V - W0 C): (out, k)
    return b, a


def final_token_index(tokenizer, prompt: str) -> int:
    """Position of the prompt's last word token: the one before its first end-of-text token (BOS for "")."""
    ids = tokenize(tokenizer, [prompt])[0].tolist()
    return ids.index(tokenizer.eos_token_id) - 1


class UCE(ErasureMethod):
    """Edit every attn2 to_k / to_v so that the embeddings of each erased concept (its last word token
    and every position after it, as the authors' code) map to what the guide concept's map to, while
    the preserved concepts' embeddings keep their outputs."""

    name = "uce"
    paper = "Gandikota et al. 2024, Unified Concept Editing in Diffusion Models, arXiv 2308.14761"
    trains_on = "none"
    trains = False

    def __init__(
        self,
        guides: dict[str, str] | None = None,
        preserve: list[str] | None = None,
        lamb: float = 0.5,
        erase_scale: float = 1.0,
        preserve_scale: float = 1.0,
        prompt: str = "{concept}",
        trainable: str = "attn2-kv",
        **kwargs,
    ):
        """
        Args:
            guides: concept -> the concept its embeddings are mapped to (default "" for every concept).
            preserve: concepts whose outputs are held (their prompts use `prompt` too); default: on the toy
                model every other toy concept, elsewhere none.
            lamb: weight of staying at W0 (lambda).
            erase_scale, preserve_scale: weights of the erase and preserve terms (s_e, s_p).
            prompt: template that turns a concept (or guide, or preserved concept) into its text.
            trainable: the edited set, attn2-kv (the only one UCE edits).
            **kwargs: as for every method (`ErasureMethod`).
        """
        super().__init__(trainable=trainable, **kwargs)
        if self.trainable != "attn2-kv":
            raise ValueError(f"uce edits the attn2 to_k/to_v weights; set trainable to attn2-kv, not {self.trainable}")
        self.guides = dict(guides or {})
        unknown = set(self.guides) - set(self.concepts)
        if unknown:
            raise ValueError(f"uce guides name {sorted(unknown)}, which are not among concepts {self.concepts}")
        self.preserve = None if preserve is None else list(preserve)
        self.lamb, self.erase_scale, self.preserve_scale = lamb, erase_scale, preserve_scale
        self.prompt = prompt
        self.factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.lora_error = 0.0

    def erase_prompt(self, concept: str) -> str:
        return self.prompt.format(concept=concept)

    def preserved_prompts(self) -> list[str]:
        """`preserve` through the prompt template; by default, on the toy model, every other toy concept
        (`retained_prompts`), elsewhere none (UCE's single-concept erasure)."""
        if self.preserve is not None:
            return [self.erase_prompt(c) for c in self.preserve]
        from ..evaluate.run import is_toy_path

        return self.retained_prompts() if is_toy_path(self.pretrained) else []

    @torch.no_grad()
    def _pairs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Erased embeddings C, their guides' embeddings G (both (k, D)) and preserved embeddings P (m, D),
        each from the final word token to the end of the padded prompt, aligned as the authors' code."""
        erase, guide, keep = [], [], []
        length = self.tokenizer.model_max_length
        for concept in self.concepts:
            guide_word = self.guides.get(concept, "")
            text, target = self.erase_prompt(concept), self.prompt.format(concept=guide_word) if guide_word else ""
            i, j = final_token_index(self.tokenizer, text), final_token_index(self.tokenizer, target)
            far = max(i, j)
            e = encode(self.text_encoder, self.tokenizer, [text, target]).float()  # (2, L, D)
            erase.append(e[0, i : length - (far - i)])  # (L - far, D)
            guide.append(e[1, j : length - (far - j)])  # (L - far, D)
        for text in self.preserved_prompts():
            e = encode(self.text_encoder, self.tokenizer, [text]).float()
            keep.append(e[0, final_token_index(self.tokenizer, text) :])
        dim = self.text_encoder.config.hidden_size
        preserved = torch.cat(keep) if keep else torch.zeros(0, dim, device=self.text_encoder.device)
        return torch.cat(erase), torch.cat(guide), preserved

    @torch.no_grad()
    def edit(self) -> None:
        """Solve every to_k / to_v in fp32 and write W = W0 + B A into the UNet (in its dtype)."""
        erase, guide, preserved = self._pairs()
        originals = self.frozen.originals
        residual, total = 0.0, 0.0
        for name, param in self.trained.items():
            w0 = originals[name].float()
            b, a = uce_delta(w0, erase, guide @ w0.T, preserved, self.lamb, self.erase_scale, self.preserve_scale)
            self.factors[name] = (b, a)
            param.copy_((w0 + b @ a).to(param.dtype))
            # How far the LoRA (B A in fp32) is from the edit the UNet now holds (rounded to its dtype).
            residual += float(((param.float() - w0) - b @ a).square().sum())
            total += float((b @ a).square().sum())
        self.lora_error = (residual / total) ** 0.5 if total else 0.0

    def summary(self) -> dict:
        rank = next(iter(self.factors.values()))[1].shape[0]
        return {**super().summary(), "lora_rank": rank, "lora_relative_error": self.lora_error}

    def export(self, directory, kohya: bool = False) -> None:
        """`unet_delta.safetensors`, and the same edit factorised exactly as a diffusers LoRA `lora/`."""
        super().export(directory, kohya)
        export.save_factored_lora(self.factors, directory / "lora")
