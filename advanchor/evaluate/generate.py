"""Seeded image generation that does not depend on how prompts are batched."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm


def generate(
    pipe: StableDiffusionPipeline, prompts: list[str] | torch.Tensor, seeds: list[int], *args, **kwargs
) -> torch.Tensor:
    """Images for every (prompt, seed) pair, prompt-major: (len(prompts) * len(seeds), 3, H, W) in [0, 1].

    The other arguments are `generate_pairs`'s.
    """
    pairs = [(p, s) for p in range(len(prompts)) for s in seeds]
    return generate_pairs(pipe, prompts, pairs, *args, **kwargs)


@torch.no_grad()
def generate_pairs(
    pipe: StableDiffusionPipeline,
    prompts: list[str] | torch.Tensor,
    pairs: list[tuple[int, int]],
    guidance_scale: float,
    steps: int = 25,
    batch_size: int = 64,
    desc: str = "generating",
    progress: bool = True,
) -> torch.Tensor:
    """One image per (prompt index, seed) pair, in order: (len(pairs), 3, H, W) in [0, 1].

    `prompts` are strings or ready prompt embeddings (P, L, D), e.g. adversarial ones.

    Each image has its own generator seeded by its seed, so the same pair always gives the same
    image whatever else shares its batch.
    """
    embedded = isinstance(prompts, torch.Tensor)
    if embedded:
        uncond = pipe.encode_prompt([""], prompts.device, 1, False)[0]  # (1, L, D)
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i in tqdm(range(0, len(pairs), batch_size), desc=desc, unit="batch", disable=not progress):
        chunk = pairs[i : i + batch_size]
        index = [p for p, _ in chunk]
        text = (
            {"prompt_embeds": prompts[index], "negative_prompt_embeds": uncond.expand(len(chunk), -1, -1)}
            if embedded
            else {"prompt": [prompts[p] for p in index]}
        )
        result = pipe(
            **text,
            generator=[torch.Generator(device="cpu").manual_seed(s) for _, s in chunk],
            guidance_scale=guidance_scale,
            num_inference_steps=steps,
            output_type="pt",
        )
        out.append(result.images.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, 1, 1)
