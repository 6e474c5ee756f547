"""Adversarial prompt attacks: the ban, the searches (random, soft, gcg), their reports and the CLI flags."""

from contextlib import nullcontext
from itertools import islice

import pytest
import torch
from transformers import AutoTokenizer, CLIPTextModel

from advanchor.evaluate.__main__ import main
from advanchor.evaluate.attack import (
    AttackOptions,
    AttackResult,
    PromptAttack,
    TokenSearch,
    adversarial_ids,
    adversarial_text,
    adversarial_tokens,
    attack_prompts,
    banned_tokens,
    original_targets,
    success_rates,
)
from advanchor.testing import tiny_pipeline
from advanchor.toyworld import pipeline_path

PROMPT = "a red circle"


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


def never(images: torch.Tensor) -> list[bool]:
    return [False] * len(images)


def search(pipe, method: str, concept: str | None = None, **kw) -> TokenSearch:
    return TokenSearch(pipe, AttackOptions(**{"method": method, "steps": 2, "timestep_blocks": 2, **kw}), concept)


def found(pipe, method: str, concept: str | None, rounds: int = 2) -> list[int]:
    """Every token the attack's first `rounds` rounds yield, at a fixed seed, with a wide ban."""
    attack = search(pipe, method, concept, ban_similarity=0.3)
    candidates = attack.rounds(PROMPT, torch.randn(1, 4, 8, 8), torch.Generator().manual_seed(0))
    return [i for adv in islice(candidates, rounds) for i in adv.tolist()]


def test_success_rates_count_pre_successes_in_post():
    results = [
        AttackResult("a", 0, pre=True, post=True, rounds=0, adversarial_prompt=None),
        AttackResult("b", 0, pre=False, post=True, rounds=2, adversarial_prompt="x b"),
        AttackResult("c", 0, pre=False, post=False, rounds=4, adversarial_prompt="y c"),
        AttackResult("d", 0, pre=False, post=False, rounds=4, adversarial_prompt="z d"),
    ]
    assert success_rates(results) == {"pre_asr": 0.25, "post_asr": 0.5}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "pgd"}, "unknown attack 'pgd'; use one of: none, random, soft, gcg"),
        ({"schedule": "late"}, "unknown attack schedule 'late'"),
        ({"rounds": 0}, "must all be at least 1"),
        ({"restarts": 0}, "must all be at least 1"),
        ({"top_k": 0}, "must all be at least 1"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"ban_similarity": 1.5}, r"cosine similarity in \(-1, 1\]"),
    ],
)
def test_bad_attack_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        AttackOptions(**options).check()


def test_the_toy_ban_takes_the_word_and_its_paraphrase_not_its_neighbour():
    tokenizer = AutoTokenizer.from_pretrained(pipeline_path(), subfolder="tokenizer")
    table = CLIPTextModel.from_pretrained(pipeline_path(), subfolder="text_encoder").get_input_embeddings().weight
    words = lambda ids: {tokenizer.decode([i]) for i in ids}  # noqa: E731
    assert words(banned_tokens(tokenizer, table, "circle", 0.5)) == {"circle", "disc"}
    # A concept of several tokens bans each of them; a threshold of 1 bans the words alone.
    assert words(banned_tokens(tokenizer, table, "red square", 1.0)) == {"red", "square"}
    assert banned_tokens(tokenizer, table, None, 0.5) == []


@pytest.mark.parametrize("method", ["random", "soft", "gcg"])
def test_banned_tokens_never_appear(pipe, method):
    # Ban the word the unbanned search picks first: the ban changes what the search finds.
    free = found(pipe, method, None)
    concept = pipe.tokenizer.decode([free[0]])
    banned = set(search(pipe, method, concept, ban_similarity=0.3).banned)
    assert free[0] in banned and len(banned) > 1
    assert not banned & set(found(pipe, method, concept))
    # And through attack_prompts: the report lists them, no adversarial prompt holds one.
    options = AttackOptions(method=method, rounds=2, steps=2, timestep_blocks=2, ban_similarity=0.3)
    units = [(PROMPT, 0, False), ("a blue square", 1, False)]
    report = attack_prompts(pipe, options, never, units, nullcontext, 2.0, 2, concept)
    words = set(report["attack"]["banned"])
    assert words == {pipe.tokenizer.decode([i]) for i in banned}
    for result in report["attack"]["results"]:
        prefix = result["adversarial_prompt"].removesuffix(result["prompt"]).split()
        assert len(prefix) == options.tokens and not words & set(prefix)


def test_projection_maps_an_allowed_token_embedding_to_itself(pipe):
    attack = search(pipe, "soft", "circle")
    ids = attack.vocab[:5]
    assert torch.equal(attack.project(attack.embed(ids)), ids)
    # A banned token's own embedding goes to an allowed one.
    assert attack.project(attack.embed(torch.tensor(attack.banned))).tolist()[0] in attack.vocab.tolist()


def test_adversarial_tokens_are_inserted_after_bos(pipe):
    adv = torch.tensor([[9, 10], [11, 12]])
    ids = adversarial_ids(pipe.tokenizer, PROMPT, adv)
    plain = pipe.tokenizer(PROMPT).input_ids
    assert ids.shape == (2, pipe.tokenizer.model_max_length)
    assert ids[1, :3].tolist() == [plain[0], 11, 12]
    assert ids[1, 3 : 3 + len(plain) - 1].tolist() == plain[1:]
    assert adversarial_text(pipe.tokenizer, PROMPT, adv[0]) == f"{pipe.tokenizer.decode([9, 10])} {PROMPT}"


@pytest.mark.parametrize("method", ["random", "soft", "gcg"])
def test_attack_stops_at_the_first_success_and_runs_every_round_otherwise(pipe, method):
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(1, 4, 8, 8)
    calls = []

    def counted(images):
        calls.append(len(images))
        return [False] * len(images)

    options = AttackOptions(method=method, rounds=3, steps=2, timestep_blocks=2, restarts=2)
    result = PromptAttack(pipe, options, counted, 2.0, 2).run(PROMPT, 0, pre=False, target=target, gen=gen)
    assert (result.post, result.rounds, len(calls)) == (False, 3, 3)
    assert result.adversarial_prompt.endswith(PROMPT) and result.seconds > 0
    attack = PromptAttack(pipe, options, lambda images: [True] * len(images), 2.0, 2)
    result = attack.run(PROMPT, 0, pre=False, target=target, gen=gen)
    assert (result.post, result.rounds) == (True, 1)
    # A prompt the edited model already shows needs no attack.
    result = attack.run(PROMPT, 0, pre=True, target=target, gen=gen)
    assert (result.pre, result.post, result.rounds) == (True, True, 0)


@pytest.mark.parametrize("method", ["soft", "gcg"])
def test_the_search_lowers_the_denoising_objective(pipe, method):
    # One random start (no screening): the descent from it is what is measured.
    attack = TokenSearch(pipe, AttackOptions(method=method, steps=8, timestep_blocks=4, screen=1))
    z0, pool = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3)), {}
    start = next(attack.rounds(PROMPT, z0, torch.Generator().manual_seed(0), pool))
    first = next(iter(pool))  # the chain's random start
    best = min(pool, key=pool.__getitem__)
    assert pool[best] < pool[first] and tuple(start.tolist()) == best
    # On noisy latents the search never saw, too.
    held_out = attack.batch(z0, torch.Generator().manual_seed(1))
    with torch.no_grad():
        losses = attack.losses(attack.condition(attack.ids(PROMPT, torch.tensor([first, best]))), held_out)
    assert losses[1] < losses[0]


def test_restarts_are_independent_chains_judged_in_turn(pipe):
    attack = search(pipe, "soft", restarts=3)
    pool = {}
    yielded = [
        tuple(a.tolist())
        for a in islice(attack.rounds(PROMPT, torch.randn(1, 4, 8, 8), torch.Generator().manual_seed(0), pool), 4)
    ]
    assert len(set(yielded)) == 4  # never the same prompt judged twice
    assert len(pool) >= 4


@pytest.mark.parametrize(
    ("schedule", "low", "high"),
    [("stratified", 0, 1000), ("uniform", 0, 1000), ("low", 0, 500), ("high", 500, 1000), ("early", 800, 1000)],
)
def test_timestep_schedules(pipe, schedule, low, high):
    attack = search(pipe, "soft", schedule=schedule, timestep_blocks=10)
    t, noise, zt = attack.batch(torch.randn(1, 4, 8, 8), torch.Generator().manual_seed(0))
    assert t.shape == (10,) and noise.shape == zt.shape == (10, 4, 8, 8)
    assert t.min() >= low and t.max() < high
    if schedule != "uniform":
        width = (high - low) // 10
        assert ((t - low) // width).tolist() == list(range(10))  # one timestep per block


def test_trajectory_targets_are_the_original_models_own_predictions(pipe):
    units = [(PROMPT, 3, False), ("a blue square", 4, True), ("a green star", 5, False)]
    targets = original_targets(pipe, nullcontext, units, 2.0, 6, "trajectory")
    assert sorted(targets) == [0, 2]  # only the units still to attack
    trajectory = targets[0]
    assert trajectory.latents.shape == trajectory.predictions.shape == (6, 4, 8, 8)
    assert trajectory.timesteps.tolist() == sorted(trajectory.timesteps.tolist())
    # The plain prompt on the unedited model reproduces them exactly: the objective is 0 there, and above
    # 0 for another prompt.
    attack = search(pipe, "gcg", schedule="stratified", timestep_blocks=6)
    batch = attack.batch(trajectory, torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = pipe.text_encoder(attack.ids(PROMPT, torch.zeros(1, 0, dtype=torch.long)))[0]
        other = pipe.text_encoder(attack.ids("a green star", torch.zeros(1, 0, dtype=torch.long)))[0]
        losses = attack.losses(torch.cat([plain, other]), batch)
    assert losses[0] < 1e-10 < losses[1]
    # The image target is the original model's latent of the unit's image.
    images = original_targets(pipe, nullcontext, units, 2.0, 6, "image")
    assert sorted(images) == [0, 2] and images[0].shape == (1, 4, 8, 8)
    # A sampling shorter than the blocks uses each of its steps once.
    short = original_targets(pipe, nullcontext, units[:1], 2.0, 2, "trajectory")[0]
    assert sorted(attack.batch(short, torch.Generator()).__getitem__(0).tolist()) == short.timesteps.tolist()


def test_adversarial_tokens_returns_k_allowed_ids(pipe):
    options = AttackOptions(method="gcg", tokens=3, rounds=2, steps=2, timestep_blocks=2)
    adv = adversarial_tokens(pipe, PROMPT, torch.randn(1, 4, 8, 8), options, torch.Generator().manual_seed(0), "red")
    assert adv.shape == (3,) and adv.dtype == torch.long
    allowed = set(search(pipe, "gcg", "red").vocab.tolist())
    assert set(adv.tolist()) <= allowed
    with pytest.raises(ValueError, match="use one of soft, gcg"):
        adversarial_tokens(pipe, PROMPT, torch.randn(1, 4, 8, 8), AttackOptions(method="random"), torch.Generator())


def test_a_search_without_a_target_or_tokens_is_a_clear_error(pipe):
    with pytest.raises(ValueError, match="needs the original model's image"):
        next(search(pipe, "gcg").rounds(PROMPT, None, torch.Generator()))
    with pytest.raises(ValueError, match="ban leaves no tokens"):
        search(pipe, "random", "circle", ban_similarity=-0.99)
    with pytest.raises(ValueError, match="unknown attack target 'pixels'; use one of: trajectory, image"):
        AttackOptions(method="soft", target="pixels").check()


def test_cli_attack_flags_reach_the_options_and_bad_values_are_one_line():
    with pytest.raises(SystemExit, match="attack tokens, rounds, steps, restarts"):
        main(["--concept", "circle", "--attack", "gcg", "--attack-top-k", "0"])
    with pytest.raises(SystemExit, match="ban_similarity is a cosine similarity"):
        main(["--concept", "circle", "--attack", "soft", "--attack-ban-similarity", "2"])


@pytest.mark.parametrize("method", ["gcg", "inversion"])
def test_every_attack_runs_through_the_toy_evaluation(method):
    from advanchor.evaluate.inversion import InversionOptions
    from advanchor.evaluate.toy import robustness, split_probes
    from advanchor.models import load_pipeline
    from advanchor.toyworld import load_classifier

    # Readings that say the erasure worked: both prompts are attacked, with the concept's ban for gcg.
    erased = [(probe, [{"shape": "oval"}]) for probe in split_probes("circle")[0][:2]]
    inversion = InversionOptions(steps=2, images=2, batch=2)
    options = AttackOptions(method=method, rounds=1, steps=1, timestep_blocks=2, inversion=inversion)
    report = robustness(load_pipeline("toy"), load_classifier(), "circle", erased, nullcontext, options, 4.0, 3)
    results = report["attack"]["results"]
    assert report["pre_asr"] == 0.0 and [r["rounds"] for r in results] == [1, 1]
    assert report["attack"]["time_s"] > 0 and report["attack"]["method"] == method
    assert ("circle" in report["attack"]["banned"]) == (method == "gcg")


def test_a_chain_starts_from_the_lowest_loss_of_its_screened_draws(pipe):
    attack = search(pipe, "gcg", screen=6)
    batch = attack.batch(torch.randn(1, 4, 8, 8), torch.Generator().manual_seed(0))
    pool = {}
    start = attack.start(PROMPT, batch, torch.Generator().manual_seed(1), pool)
    draws = attack.random_tokens(torch.Generator().manual_seed(1), 6)
    assert set(pool) == set(map(tuple, draws.tolist()))
    assert tuple(start.tolist()) == min(pool, key=pool.__getitem__)
    assert len(set(pool.values())) > 1  # the draws differ: the choice is not vacuous
