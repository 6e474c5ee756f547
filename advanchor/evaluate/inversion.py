"""Concept Inversion against an edited model (Pham et al., 2023, "Circumventing Concept Erasure Methods").

Textual inversion (Gal et al., 2022) learns a free input embedding for the concept word from the
original model's images of the concept, against the edited model, so it finds what the erasure only
hid. No token is added to the tokenizer: the concept word itself is the placeholder, its input
embeddings (one learnt vector per token of the word, tiled over every occurrence) replaced through
`perturbed_embeddings`, so every other token's embedding and position stays as it was. The erased
prompts are then generated with the learnt word and judged: the white-box upper bound of the attacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import encode_pixels
from ..text import perturbed_embeddings, token_positions, tokenize, word_ids
from .asr import AttackResult, Judge, Original, Unit
from .generate import generate_pairs

IMAGE_SEED = 1_000_000  # concept images' first seed: far from the evaluation (0..) and tuning (100..) seeds
PLACEHOLDER = "<v*>"  # how reports write the learnt word (Gal et al.'s S*)


@dataclass
class InversionOptions:
    """Concept Inversion's textual inversion (Pham et al., 2023; Gal et al., 2022)."""

    steps: int = 200  # Adam steps on the learnt word
    lr: float = 5e-3  # Gal et al.'s base learning rate
    images: int = 8  # the original model's images of the concept, spread over the erase prompts
    batch: int = 4  # (image, timestep, noise) draws per step
    init: str = "concept"  # "concept": the word's own embeddings; else a word, its mean embedding for every vector

    def check(self) -> InversionOptions:
        if min(self.steps, self.images, self.batch) < 1:
            raise ValueError("inversion steps, images and batch must all be at least 1")
        if not self.lr > 0:
            raise ValueError(f"inversion lr must be above 0, got {self.lr}")
        if not self.init.strip():
            raise ValueError("inversion init must be 'concept' or a word of the model's vocabulary")
        return self


@dataclass
class InversionResult:
    """The learnt word of a concept (Pham et al.'s S*), with its optimisation record."""

    concept: str
    embeddings: torch.Tensor  # (k, D): one input embedding per token of `concept`
    loss_history: list[float]  # the training loss of every step
    start_loss: float  # denoising loss on one fixed draw of (timestep, noise), before ...
    end_loss: float  # ... and after the optimisation
    seconds: float  # wall clock: concept images and optimisation


def placed(tokenizer, prompt: str, concept: str) -> str:
    """The prompt whose `concept` tokens will carry the learnt word: itself when it names the concept,
    else the concept word prepended (an I2P prompt, for one, never names "nudity")."""
    target, ids = word_ids(tokenizer, concept), tokenize(tokenizer, [prompt])[0].tolist()
    named = any(ids[i : i + len(target)] == target for i in range(len(ids) - len(target) + 1))
    return prompt if named else f"{concept} {prompt}"


def condition(pipe, prompt: str, concept: str, embeddings: torch.Tensor) -> torch.Tensor:
    """E(prompt) with `embeddings` (k, D) as the input embeddings of every occurrence of `concept`: (1, L, D)."""
    encoder = pipe.text_encoder
    ids = tokenize(pipe.tokenizer, [prompt], encoder.device)  # (1, L)
    positions = token_positions(pipe.tokenizer, prompt, concept)  # k per occurrence, in order
    table = encoder.get_input_embeddings().weight.detach()
    learnt = embeddings.repeat(len(positions) // len(embeddings), 1)  # (len(positions), D)
    delta = learnt.to(table.device) - table[ids[0, positions]].float()
    with perturbed_embeddings(encoder, delta, positions):
        return encoder(ids)[0]


def initial_embeddings(pipe, concept: str, init: str) -> torch.Tensor:
    """The learnt word's start: the concept's own token embeddings, or `init`'s mean one for each: (k, D)."""
    table = pipe.text_encoder.get_input_embeddings().weight.detach().float()
    own = word_ids(pipe.tokenizer, concept)
    if init == "concept":
        return table[own].clone()
    ids = pipe.tokenizer(init, add_special_tokens=False).input_ids
    if not ids or pipe.tokenizer.unk_token_id in ids:
        raise ValueError(f"inversion init {init!r} is not in the tokenizer's vocabulary; use 'concept' or a known word")
    return table[ids].mean(0).expand(len(own), -1).clone()


@torch.no_grad()
def original_latents(
    pipe, original: Original, prompts: list[str], pairs: list[tuple[int, int]], guidance_scale: float, steps: int
) -> torch.Tensor:
    """The original model's latents of (prompt index, seed) pairs: (len(pairs), C, h, w)."""
    with original():
        pixels = generate_pairs(pipe, prompts, pairs, guidance_scale, steps, progress=False)
    return encode_pixels(pipe.vae, pixels)


def concept_latents(
    pipe, original: Original, prompts: list[str], images: int, seed: int, guidance_scale: float, steps: int
) -> tuple[torch.Tensor, list[int]]:
    """The original model's `images` latents of the prompts (image i: prompt i mod P, seed seed + i):
    (images, C, h, w), and each latent's prompt index."""
    owner = [i % len(prompts) for i in range(images)]
    pairs = [(p, seed + i) for i, p in enumerate(owner)]
    return original_latents(pipe, original, prompts, pairs, guidance_scale, steps), owner


def denoising_loss(pipe, latents: torch.Tensor, cond: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The diffusion loss of latents (B, C, h, w) under cond (B, L, D), one uniform timestep and noise per row."""
    scheduler, unet = pipe.scheduler, pipe.unet
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=gen).to(latents.device)
    noise = torch.randn(latents.shape, generator=gen).to(latents)
    zt = scheduler.add_noise(latents, noise, t)
    # SD 2.x's v-prediction models are trained to predict the velocity, not the noise.
    target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
    pred = unet(zt, t, cond.to(unet.dtype)).sample
    return F.mse_loss(pred.float(), target.float())


def invert(
    pipe,
    original: Original,
    prompts: list[str],
    concept: str,
    options: InversionOptions,
    seed: int = IMAGE_SEED,
    guidance_scale: float = 7.5,
    sample_steps: int = 50,
) -> InversionResult:
    """Learn `concept`'s word on the original model's images of `prompts` (which must name it) against
    the pipeline's current (edited) UNet; images at seeds seed.., sampled with `sample_steps` DDIM steps."""
    options.check()
    if not prompts:
        raise ValueError("inversion needs at least one prompt naming the concept")
    for prompt in prompts:
        token_positions(pipe.tokenizer, prompt, concept)  # a prompt without the word fails now, before any image
    start = time.perf_counter()
    latents, owner = concept_latents(pipe, original, prompts, options.images, seed, guidance_scale, sample_steps)
    result = learn_word(pipe, latents, owner, prompts, concept, options, seed)
    result.seconds = time.perf_counter() - start
    return result


def learn_word(
    pipe,
    latents: torch.Tensor,
    owner: list[int],
    prompts: list[str],
    concept: str,
    options: InversionOptions,
    seed: int,
) -> InversionResult:
    """Textual inversion of `concept` against the pipeline's current UNet: latents (N, C, h, w) of the concept,
    latent i drawn from prompts[owner[i]]; (timestep, noise) draws from a generator seeded `seed`."""
    start = time.perf_counter()
    embeddings = initial_embeddings(pipe, concept, options.init).to(pipe.text_encoder.device).requires_grad_(True)
    latents = latents.to(pipe.unet.device, pipe.unet.dtype)
    opt = torch.optim.Adam([embeddings], lr=options.lr)
    gen = torch.Generator().manual_seed(seed)

    def loss_of(rows: torch.Tensor, draw: torch.Generator) -> torch.Tensor:
        # Each prompt is encoded once per step; its rows then share that condition.
        conds = torch.cat([condition(pipe, p, concept, embeddings) for p in prompts])  # (P, L, D)
        return denoising_loss(pipe, latents[rows], conds[[owner[r] for r in rows.tolist()]], draw)  # (B, L, D) conds

    def fixed_loss() -> float:
        # The same (timestep, noise) draw before and after, four per image, so the two are comparable.
        rows = torch.arange(len(latents)).repeat(4)
        with torch.no_grad():
            return float(loss_of(rows, torch.Generator().manual_seed(seed + 1)))

    start_loss, history = fixed_loss(), []
    with torch.enable_grad():
        for _ in range(options.steps):
            rows = torch.randint(len(latents), (options.batch,), generator=gen)
            loss = loss_of(rows, gen)
            # Only the learnt word gets a gradient: the edited model stays as it is.
            (embeddings.grad,) = torch.autograd.grad(loss, [embeddings])
            opt.step()
            history.append(loss.item())
    learnt = embeddings.detach()
    return InversionResult(concept, learnt.cpu(), history, start_loss, fixed_loss(), time.perf_counter() - start)


def inversion_attack(
    pipe,
    original: Original,
    judge: Judge,
    units: list[Unit],
    concept: str,
    prompts: list[str],
    options: InversionOptions,
    guidance_scale: float,
    steps: int,
    seed: int = IMAGE_SEED,
) -> tuple[list[AttackResult], dict]:
    """Concept Inversion over (prompt, seed, pre-success) units: the word is learnt once on the original
    model's images of `prompts` (which name the concept), then every unit not already a success is
    generated once with it in the concept's place and judged. Returns the per-unit results and the
    inversion's record (image seed, losses, its share of the run time)."""
    result = invert(pipe, original, prompts, concept, options, seed, guidance_scale, steps)
    todo = [i for i, (_, _, pre) in enumerate(units) if not pre]
    texts = {i: placed(pipe.tokenizer, units[i][0], concept) for i in todo}
    shown: dict[int, bool] = {}
    if todo:
        with torch.no_grad():
            conds = torch.cat([condition(pipe, texts[i], concept, result.embeddings) for i in todo])  # (N, L, D)
        images = generate_pairs(
            pipe, conds, [(j, units[i][1]) for j, i in enumerate(todo)], guidance_scale, steps, progress=False
        )
        shown = dict(zip(todo, judge(images)))
    results = [
        AttackResult(prompt, s, True, True, 0, None)
        if pre
        else AttackResult(prompt, s, False, bool(shown[i]), 1, texts[i].replace(concept, PLACEHOLDER))
        for i, (prompt, s, pre) in enumerate(units)
    ]
    record = {
        "prompts": prompts,
        "image_seed": seed,
        "inversion_s": result.seconds,
        "start_loss": result.start_loss,
        "end_loss": result.end_loss,
        "loss_history": result.loss_history,
    }
    return results, record
