"""Adversarial prompts against an edited model (UnlearnDiffAtk-style) and attack success rates.

An attack prepends k tokens to an erased prompt. The tokens come from the vocabulary less the banned
ones (the concept's words, their paraphrases and every token whose input embedding is close to one of
them), so that no attack wins by naming the concept. The methods:

- random: k allowed tokens drawn uniformly per round (the baseline);
- soft: UnlearnDiffAtk (Zhang et al., 2024, "To Generate or Not?"): k embeddings optimised so that the
  edited model predicts what the original model did (by default along its sampling of the attacked seed;
  UnlearnDiffAtk's own target, the noise added to its image, is `target="image"`), projected onto the
  nearest allowed tokens in every forward pass (PEZ, Wen et al., 2023, "Hard Prompts Made Easy");
- gcg: greedy coordinate gradient (Zou et al., 2023, "Universal and Transferable Adversarial Attacks on
  Aligned Language Models") on the same objective: the one-hot gradient proposes the top-k
  substitutions per position, a batch of single-token swaps is evaluated and the best kept;
- inversion: Concept Inversion (Pham et al., 2023), a learnt input embedding for the concept word
  (`inversion.py`): the white-box upper bound, which bans nothing.

soft and gcg run `restarts` chains from random tokens, each round one of them.

After every round the discrete prompt is generated at the attacked seed and judged; the first success
stops it. `adversarial_tokens` runs the same searches without a judge (for training against them).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import count, islice

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..text import perturbed_embeddings, tokenize, word_ids
from ..toyworld.vocab import PARAPHRASES
from .asr import AttackResult, Judge, Original, Unit, success_rates
from .generate import generate, generate_pairs
from .inversion import InversionOptions, inversion_attack, original_latents, placed

ATTACKS = ("none", "random", "soft", "gcg", "inversion")
TARGETED = ("soft", "gcg")  # searches on the denoising objective: they need the original model's latents
SCHEDULES = ("stratified", "uniform", "low", "high", "early")

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # timesteps (B,), targets and noisy latents (B, C, h, w)
TARGETS = ("trajectory", "image")
CHUNK = 64  # units whose trajectories are recorded in one sampling batch


@dataclass
class Trajectory:
    """The original model's sampling of one (prompt, seed), in timestep order: what it predicted where."""

    timesteps: torch.Tensor  # (S,)
    latents: torch.Tensor  # (S, C, h, w): the latent each step was given
    predictions: torch.Tensor  # (S, C, h, w): the model's conditional prediction there (noise, or v)


Target = torch.Tensor | Trajectory  # a latent z0 (1, C, h, w), or a trajectory
Pool = dict[tuple[int, ...], float]  # adversarial tokens -> their loss on the search's noisy latents


@dataclass
class AttackOptions:
    """Adversarial prompt search against the edited model (UnlearnDiffAtk-style; see the module docstring)."""

    method: str = "none"  # none | random | soft | gcg | inversion
    tokens: int = 5  # k tokens prepended to the erased prompt (UnlearnDiffAtk's default)
    rounds: int = 4  # generate and judge after each round; stop at the first success
    # The search defaults were chosen on README's weakly erased circle adapter at seeds 0-7, 8-23 and 24-39
    # (`benchmarks/attack_control.py`); seeds 40-71 were held out (README, "Measured on the toy world").
    steps: int = 4  # soft, gcg: optimisation steps per round
    lr: float = 0.01  # soft: Adam learning rate of the k token embeddings
    restarts: int = 4  # soft, gcg: independent chains from random tokens, judged in turn (one per round)
    timestep_blocks: int = 5  # soft, gcg: noisy latents per loss evaluation, one from each block of the schedule
    # soft, gcg: where the timesteps lie: stratified over [0, T), uniform over [0, T) (i.i.d.), low: stratified
    # over [0, T/2), the last half of sampling, high: over [T/2, T), the noisy first half, or early: over
    # [4T/5, T), the first fifth, where a shape is laid out. On the control's tuning seeds the loss there
    # ranks the tokens that bring circle back above those that do not (AUC 0.58), while over the last half
    # it ranks them the wrong way round (0.34; `benchmarks/attack_signal.py`). A texture is decided later:
    # on ESD's striped adapter early falls below random tokens (README).
    schedule: str = "early"
    # soft, gcg: what the edited model is held to. image: UnlearnDiffAtk's, the noise added to the original
    # model's image of the prompt; trajectory: the original model's own predictions along its sampling at
    # the attacked seed, so the search aims at the one image the judge will see.
    target: str = "trajectory"
    screen: int = 16  # soft, gcg: each chain starts from the lowest-loss of this many random draws
    top_k: int = 8  # gcg: substitutions per position, by the one-hot gradient (Zou et al. use 256 of 32k)
    candidates: int = 4  # gcg: single-token swaps evaluated per step (Zou et al.: 512; more overfit here)
    # Tokens whose input embedding has cosine similarity above this with a concept token are banned. On the
    # toy model a shape and its paraphrase lie at 0.89-0.97, a look-alike neighbour (circle, oval) at 0.29-0.32
    # and 99% of all token pairs below 0.45: 0.5 bans synonyms and keeps the neighbours an attack may use.
    ban_similarity: float = 0.5
    seeds: int = 1  # the first this many evaluation seeds of every erased prompt are attacked
    inversion: InversionOptions = field(default_factory=InversionOptions)  # inversion's own settings

    def check(self) -> AttackOptions:
        if self.method not in ATTACKS:
            raise ValueError(f"unknown attack {self.method!r}; use one of: {', '.join(ATTACKS)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown attack target {self.target!r}; use one of: {', '.join(TARGETS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown attack schedule {self.schedule!r}; use one of: {', '.join(SCHEDULES)}")
        counts = ("tokens", "rounds", "steps", "restarts", "timestep_blocks", "screen", "top_k", "candidates", "seeds")
        if min(getattr(self, name) for name in counts) < 1:
            raise ValueError(f"attack {', '.join(counts)} must all be at least 1")
        if not self.lr > 0:
            raise ValueError(f"attack lr must be positive, got {self.lr}")
        if not -1 < self.ban_similarity <= 1:
            raise ValueError(f"attack ban_similarity is a cosine similarity in (-1, 1], got {self.ban_similarity}")
        self.inversion.check()
        return self


def schedule_span(schedule: str, total: int) -> tuple[int, int]:
    """The indices [low, high) of [0, total) (timesteps, or trajectory steps in timestep order) that a
    stratified `schedule` draws from; uniform draws from all of them."""
    half, fifth = max(total // 2, 1), max(total // 5, 1)
    return {
        "stratified": (0, total),
        "uniform": (0, total),
        "low": (0, half),
        "high": (total // 2, total),
        "early": (total - fifth, total),
    }[schedule]


def banned_tokens(tokenizer, table: torch.Tensor, concept: str | None, similarity: float) -> list[int]:
    """Token ids an attack may not use: the tokens of `concept` and of its toy-world paraphrase (every
    token of a multi-token concept), and every token whose row of the input embedding `table` (V, D)
    has cosine similarity above `similarity` with one of theirs. None without a concept."""
    if concept is None:
        return []
    words = [concept, *([PARAPHRASES[concept]] if concept in PARAPHRASES else [])]
    own = sorted({i for word in words for i in word_ids(tokenizer, word)})
    unit = F.normalize(table.float(), dim=-1)  # (V, D)
    near = (unit @ unit[own].T).amax(-1) > similarity  # (V,): close to any of the concept's tokens
    return sorted(set(own) | set(near.nonzero()[:, 0].tolist()))


def adversarial_ids(tokenizer, prompt: str, adv: torch.Tensor) -> torch.Tensor:
    """[BOS] + adversarial tokens + the prompt's tokens, cut to the tokenizer's length: adv (N, k) -> (N, L)."""
    ids = tokenize(tokenizer, [prompt])[0]  # (L,)
    n = adv.shape[0]
    return torch.cat([ids[:1].expand(n, 1), adv.to(ids), ids[1:].expand(n, -1)], 1)[:, : ids.shape[0]]


def adversarial_text(tokenizer, prompt: str, adv: torch.Tensor) -> str:
    """The adversarial prompt as text: the decoded tokens (k,) before `prompt`."""
    return f"{tokenizer.decode(adv.tolist())} {prompt}"


class TokenSearch:
    """Judge-free search for k adversarial tokens against the pipeline's current UNet, over allowed tokens."""

    def __init__(self, pipe, options: AttackOptions, concept: str | None = None):
        self.pipe, self.options = pipe, options.check()
        self.tokenizer, self.text_encoder = pipe.tokenizer, pipe.text_encoder
        self.table = self.text_encoder.get_input_embeddings().weight.detach()  # (V, D)
        self.banned = banned_tokens(self.tokenizer, self.table, concept, options.ban_similarity)
        excluded = set(self.tokenizer.all_special_ids) | set(self.banned)
        self.vocab = torch.tensor([i for i in range(self.table.shape[0]) if i not in excluded], dtype=torch.long)
        if len(self.vocab) == 0:
            raise ValueError(f"the attack's ban leaves no tokens; raise ban_similarity above {options.ban_similarity}")
        self.vocab_table = self.embed(self.vocab).float()  # (V', D): the only tokens a search may pick
        self.positions = list(range(1, options.tokens + 1))  # right after BOS

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of token ids: (...) -> (..., D)."""
        return self.table[ids.to(self.table.device)]

    def ids(self, prompt: str, adv: torch.Tensor) -> torch.Tensor:
        """`adversarial_ids` on the text encoder's device: adv (N, k) -> (N, L)."""
        return adversarial_ids(self.tokenizer, prompt, adv).to(self.text_encoder.device)

    def condition(self, ids: torch.Tensor, embeds: torch.Tensor | None = None) -> torch.Tensor:
        """E(ids) (N, L, D); with `embeds` (N, k, D), these replace the adversarial tokens' input embeddings."""
        if embeds is None:
            return self.text_encoder(ids)[0]
        delta = embeds - self.embed(ids[:, self.positions])  # (N, k, D)
        with perturbed_embeddings(self.text_encoder, delta, self.positions):
            return self.text_encoder(ids)[0]

    def project(self, soft: torch.Tensor) -> torch.Tensor:
        """The allowed token nearest to each soft embedding: (..., D) -> (...) ids."""
        flat = soft.detach().reshape(-1, soft.shape[-1]).float()  # (N * k, D)
        return self.vocab[torch.cdist(flat, self.vocab_table).argmin(-1).cpu()].view(soft.shape[:-1])

    def random_tokens(self, gen: torch.Generator, n: int = 1) -> torch.Tensor:
        """n x k allowed tokens drawn uniformly: (n, k) ids."""
        return self.vocab[torch.randint(len(self.vocab), (n, self.options.tokens), generator=gen)]

    def draw(self, total: int, gen: torch.Generator) -> torch.Tensor:
        """`timestep_blocks` indices into [0, total) (timesteps, or trajectory steps in timestep order) as
        the schedule places them, at most one per index of its span: (B,)."""
        n = self.options.timestep_blocks
        if self.options.schedule == "uniform":
            return torch.randint(total, (n,), generator=gen)
        low, high = schedule_span(self.options.schedule, total)
        # A short sampling (few trajectory steps) has fewer steps than blocks: each is then used once.
        n = min(n, high - low)
        edges = [low + (high - low) * b // n for b in range(n + 1)]
        return torch.stack([torch.randint(edges[b], edges[b + 1], (), generator=gen) for b in range(n)])

    def batch(self, target: Target, gen: torch.Generator) -> Batch:
        """What the edited model's prediction is held to. A latent z0 (1, C, h, w): UnlearnDiffAtk's
        noise-prediction targets at drawn timesteps; a trajectory: the original model's own predictions at
        drawn steps of its sampling. (B,), (B, C, h, w) x 2."""
        if isinstance(target, Trajectory):
            rows = self.draw(len(target.timesteps), gen).to(target.latents.device)
            return target.timesteps[rows], target.predictions[rows], target.latents[rows]
        t = self.draw(self.pipe.scheduler.config.num_train_timesteps, gen).to(target.device)
        noise = torch.randn((len(t), *target.shape[1:]), generator=gen).to(target)
        return t, noise, self.pipe.scheduler.add_noise(target.expand(len(t), -1, -1, -1), noise, t)

    def losses(self, conds: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The prediction error of each condition (N, L, D) on the same noisy latents (`batch`'s): (N,)."""
        t, noise, zt = batch
        n, b = conds.shape[0], t.shape[0]
        unet = self.pipe.unet
        # Condition c meets every noisy latent j at row c * B + j.
        pred = unet(zt.repeat(n, 1, 1, 1), t.repeat(n), conds.repeat_interleave(b, 0).to(unet.dtype)).sample
        err = (pred.float() - noise.float().repeat(n, 1, 1, 1)).pow(2).mean((1, 2, 3))  # (N * B,)
        return err.view(n, b).mean(1)

    def rounds(
        self, prompt: str, target: Target | None, gen: torch.Generator, pool: Pool | None = None
    ) -> Iterator[torch.Tensor]:
        """One candidate (k,) ids per round, without end. `target` (see `batch`) is what soft and gcg hold
        the edited model to under the adversarial prompt: the original model's image of `prompt`, or its
        sampling trajectory. They run `restarts` independent chains in turn, one round each: a round runs `steps`
        steps of its chain and yields the chain's lowest-loss candidate not yielded before, so that every
        judgement sees a new prompt. `pool` collects the loss of every candidate they evaluated."""
        method = self.options.method
        if method == "random":
            while True:
                yield self.random_tokens(gen)[0]
        if method not in TARGETED:
            raise ValueError(f"attack {method!r} searches no tokens")
        if target is None:
            raise ValueError(f"the {method} attack needs the original model's image or trajectory of the prompt")
        # One batch of noisy latents for the whole search: every loss in the pools is comparable.
        batch = self.batch(target, gen)
        pools: list[Pool] = [{} for _ in range(self.options.restarts)]
        chains = [(self._soft if method == "soft" else self._gcg)(prompt, batch, gen, own) for own in pools]
        yielded: set[tuple[int, ...]] = set()
        for round_ in count():
            # Chains, not one long search, are judged in turn: on the toy model one chain's best candidates
            # share one basin (all circles or none), so independent starts are independent chances.
            own = pools[round_ % len(chains)]
            next(chains[round_ % len(chains)])
            fresh = [c for c in own if c not in yielded] or list(own)
            best = min(fresh, key=own.__getitem__)
            yielded.add(best)
            if pool is not None:
                pool.update(own)
            yield torch.tensor(best)

    def start(self, prompt: str, batch: Batch, gen: torch.Generator, pool: Pool) -> torch.Tensor:
        """A chain's first tokens: the lowest-loss of `screen` random draws, all of them pooled: (k,) ids."""
        draws = self.random_tokens(gen, self.options.screen)  # (screen, k)
        if self.options.screen == 1:
            return draws[0]
        with torch.no_grad():
            losses = self.losses(self.condition(self.ids(prompt, draws)), batch)
        pool.update(zip(map(tuple, draws.tolist()), losses.tolist()))
        return draws[losses.argmin().item()]

    def _soft(self, prompt: str, batch: Batch, gen: torch.Generator, pool: Pool) -> Iterator[None]:
        """PEZ-projected embedding descent from random tokens; yields after every round."""
        adv = self.start(prompt, batch, gen, pool)[None]  # (1, k)
        soft = self.embed(adv).float().clone().requires_grad_(True)  # (1, k, D)
        opt = torch.optim.Adam([soft], lr=self.options.lr)
        while True:
            for _ in range(self.options.steps):
                adv = self.project(soft)
                # Straight-through: the forward pass sees the projected tokens, the gradient lands on `soft`.
                projected = soft + (self.embed(adv).float() - soft).detach()
                with torch.enable_grad():
                    loss = self.losses(self.condition(self.ids(prompt, adv), projected), batch)
                    (soft.grad,) = torch.autograd.grad(loss.sum(), soft)
                pool[tuple(adv[0].tolist())] = loss.item()
                opt.step()
            yield

    def _gcg(self, prompt: str, batch: Batch, gen: torch.Generator, pool: Pool) -> Iterator[None]:
        """Greedy coordinate gradient from random tokens; yields after every round."""
        k, swaps = self.options.tokens, self.options.candidates
        top_k = min(self.options.top_k, len(self.vocab))
        adv = self.start(prompt, batch, gen, pool)  # (k,)
        while True:
            for _ in range(self.options.steps):
                embeds = self.embed(adv[None]).float().requires_grad_(True)  # (1, k, D)
                with torch.enable_grad():
                    loss = self.losses(self.condition(self.ids(prompt, adv[None]), embeds), batch)
                    (grad,) = torch.autograd.grad(loss.sum(), embeds)
                pool[tuple(adv.tolist())] = loss.item()
                # The gradient w.r.t. the one-hot token choice is grad . e_v for every allowed token v.
                scores = grad[0] @ self.vocab_table.T  # (k, V')
                top = (-scores).topk(top_k, -1).indices.cpu()  # (k, top_k) indices into the allowed tokens
                where = torch.randint(k, (swaps,), generator=gen)
                candidates = adv.repeat(swaps, 1)  # (swaps, k), one position changed in each
                candidates[torch.arange(swaps), where] = self.vocab[
                    top[where, torch.randint(top_k, (swaps,), generator=gen)]
                ]
                with torch.no_grad():
                    losses = self.losses(self.condition(self.ids(prompt, candidates)), batch)
                pool.update(zip(map(tuple, candidates.tolist()), losses.tolist()))
                # Zou et al. move to the best swap even when it is worse, which escapes local minima;
                # the pool keeps the best tokens seen.
                adv = candidates[losses.argmin().item()]
            yield


def adversarial_tokens(
    pipe,
    prompt: str,
    z0: torch.Tensor,
    options: AttackOptions,
    generator: torch.Generator,
    concept: str | None = None,
) -> torch.Tensor:
    """Judge-free adversarial tokens for training against the attack: (k,) token ids.

    Runs `options.rounds` rounds of `options.steps` steps of `options.method`'s search (soft or gcg)
    against the pipeline's current UNet and text encoder, in their current mode, on the denoising
    objective of `z0` (1, C, h, w), a latent the model should denoise well under the adversarial prompt
    (e.g. the original model's image of `prompt`), and returns the lowest-loss tokens it found. Every id
    is allowed: none is special or banned for `concept` (see `banned_tokens`). Randomness comes from
    `generator` (CPU) only; no parameter's `.grad` is touched. `adversarial_ids` / `adversarial_text`
    prepend the tokens to a prompt.
    """
    if options.method not in TARGETED:
        raise ValueError(f"adversarial_tokens runs a search: use one of {', '.join(TARGETED)}, not {options.method!r}")
    pool: Pool = {}
    deque(islice(TokenSearch(pipe, options, concept).rounds(prompt, z0, generator, pool), options.rounds), 0)
    return torch.tensor(min(pool, key=pool.__getitem__))


class PromptAttack:
    """Runs one attack method against the pipeline's current (edited) UNet, judging after every round."""

    def __init__(
        self, pipe, options: AttackOptions, judge: Judge, guidance_scale: float, steps: int, concept: str | None = None
    ):
        self.pipe, self.options, self.judge = pipe, options.check(), judge
        self.guidance_scale, self.sample_steps = guidance_scale, steps
        self.search = TokenSearch(pipe, options, concept)

    def _judge(self, cond: torch.Tensor, seed: int) -> bool:
        images = generate(self.pipe, cond, [seed], self.guidance_scale, self.sample_steps, progress=False)
        return bool(self.judge(images)[0])

    def run(self, prompt: str, seed: int, pre: bool, target: Target | None, gen: torch.Generator) -> AttackResult:
        """Attack one erased prompt at one seed; `target` is the original model's image or trajectory of it."""
        if pre or self.options.method == "none":
            return AttackResult(prompt, seed, pre, pre, 0, None)
        start = time.perf_counter()
        for round_, adv in enumerate(self.search.rounds(prompt, target, gen), 1):
            with torch.no_grad():
                success = self._judge(self.search.condition(self.search.ids(prompt, adv[None])), seed)
            if success or round_ == self.options.rounds:
                text = adversarial_text(self.pipe.tokenizer, prompt, adv)
                return AttackResult(prompt, seed, False, success, round_, text, time.perf_counter() - start)
        raise AssertionError("unreachable: rounds() does not end")


@torch.no_grad()
def original_targets(
    pipe, original: Original, units: list[Unit], guidance_scale: float, steps: int, kind: str
) -> dict[int, Target]:
    """What soft and gcg hold the edited model to, for each unit still to attack (pre False), by unit
    index: the original model's latent of the unit's image (kind "image", (1, C, h, w)), or its sampling
    trajectory at the unit's seed (kind "trajectory")."""
    todo = [i for i, (_, _, pre) in enumerate(units) if not pre]
    if not todo:
        return {}
    prompts = list(dict.fromkeys(units[i][0] for i in todo))
    pairs = [(prompts.index(units[i][0]), units[i][1]) for i in todo]
    if kind == "image":
        latents = original_latents(pipe, original, prompts, pairs, guidance_scale, steps)
        latents = latents.to(pipe.unet.device, pipe.unet.dtype)
        return {i: latents[j : j + 1] for j, i in enumerate(todo)}
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def record(module, args, kwargs, output) -> None:
        sample = args[0] if args else kwargs["sample"]
        t = torch.as_tensor(args[1] if len(args) > 1 else kwargs["timestep"], device=sample.device)
        calls.append((sample, t.reshape(-1)[:1].expand(len(sample)), output[0]))

    targets: dict[int, Target] = {}
    hook = pipe.unet.register_forward_hook(record, with_kwargs=True)
    try:
        for start in range(0, len(todo), CHUNK):
            chunk, calls[:] = pairs[start : start + CHUNK], []
            with original():
                generate_pairs(pipe, prompts, chunk, guidance_scale, steps, batch_size=len(chunk), progress=False)
            # With guidance the UNet sees [unconditional; conditional] halves: the conditional rows are the last.
            n = len(chunk)
            sample, t, pred = (torch.stack([c[k][-n:] for c in calls], 1) for k in range(3))  # (n, S, ...)
            order = t[0].argsort()
            for j, i in enumerate(todo[start : start + n]):
                targets[i] = Trajectory(t[j, order], sample[j, order], pred[j, order])
    finally:
        hook.remove()
    return targets


def attack_prompts(
    pipe,
    options: AttackOptions,
    judge: Judge,
    units: list[Unit],
    original: Original,
    guidance_scale: float,
    steps: int,
    concept: str | None = None,
) -> dict:
    """Attack every (prompt, seed, pre-success) unit against the pipeline's current (edited) UNet.

    `original()` makes the pipeline the original model: the source of soft's and gcg's targets (its image
    of each unit) and of inversion's images of the concept. `concept`'s tokens and their neighbours are
    banned from the token attacks; inversion relearns the concept's own word. Returns pre/post ASR and,
    under "attack", the settings, the banned tokens (decoded), the run time (time_s) and per-unit results.
    """
    options.check()
    start = time.perf_counter()
    record: dict = {}
    if options.method == "inversion":
        if concept is None:
            raise ValueError("the inversion attack relearns the concept's word: name the concept")
        prompts = list(dict.fromkeys(placed(pipe.tokenizer, prompt, concept) for prompt, _, _ in units))
        results, record = inversion_attack(
            pipe, original, judge, units, concept, prompts, options.inversion, guidance_scale, steps
        )
        banned = []
    else:
        attack = PromptAttack(pipe, options, judge, guidance_scale, steps, concept)
        targets = {}
        if options.method in TARGETED:
            targets = original_targets(pipe, original, units, guidance_scale, steps, options.target)
        results = []
        for i, (prompt, seed, pre) in enumerate(tqdm(units, desc=f"attack ({options.method})", unit="prompt")):
            gen = torch.Generator().manual_seed(10_007 * seed + i)
            results.append(attack.run(prompt, seed, pre, targets.get(i), gen))
        banned = [pipe.tokenizer.decode([i]) for i in attack.search.banned]
    return {
        **success_rates(results),
        "attack": {
            **asdict(options),
            "banned": banned,
            "time_s": time.perf_counter() - start,
            **record,
            "results": [asdict(r) for r in results],
        },
    }
