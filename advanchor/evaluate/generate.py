"""Seeded image generation that does not depend on how prompts are batched."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm


@torch.no_grad()
def generate(
    pipe: StableDiffusionPipeline,
    prompts: list[str],
    seeds: list[int],
    guidance_scale: float,
    steps: int = 25,
    batch_size: int = 64,
    desc: str = "generating",
) -> torch.Tensor:
    """Images for every (prompt, seed) pair, prompt-major: (len(prompts) * len(seeds), 3, H, W) in [0, 1].

    Each image has its own generator seeded by its seed, so the same pair always gives the same
    image whatever else shares its batch.
    """
    jobs = [(p, s) for p in prompts for s in seeds]
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i in tqdm(range(0, len(jobs), batch_size), desc=desc, unit="batch"):
        chunk = jobs[i : i + batch_size]
        result = pipe(
            prompt=[p for p, _ in chunk],
            generator=[torch.Generator(device="cpu").manual_seed(s) for _, s in chunk],
            guidance_scale=guidance_scale,
            num_inference_steps=steps,
            output_type="pt",
        )
        out.append(result.images.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, 1, 1)
