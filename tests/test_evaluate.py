"""Toy-world evaluation: metrics agree with an independent generation, attacks, fidelity, determinism."""

import json
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_pipeline  # noqa: E402

from advanchor.evaluate.__main__ import main  # noqa: E402
from advanchor.evaluate.attack import AttackOptions, AttackResult, PromptAttack, success_rates  # noqa: E402
from advanchor.evaluate.fidelity import pixel_distance  # noqa: E402
from advanchor.evaluate.toy import split_probes  # noqa: E402
from advanchor.toyworld import load_classifier, pipeline_path  # noqa: E402


def test_success_rates_count_pre_successes_in_post():
    results = [
        AttackResult("a", 0, pre=True, post=True, rounds=0, adversarial_prompt=None),
        AttackResult("b", 0, pre=False, post=True, rounds=2, adversarial_prompt="x b"),
        AttackResult("c", 0, pre=False, post=False, rounds=4, adversarial_prompt="y c"),
        AttackResult("d", 0, pre=False, post=False, rounds=4, adversarial_prompt="z d"),
    ]
    assert success_rates(results) == {"pre_asr": 0.25, "post_asr": 0.5}


def test_pixel_distance():
    a = torch.zeros(2, 3, 4, 4)
    assert pixel_distance(a, a) == 0.0
    assert pixel_distance(a, torch.ones_like(a)) == 1.0
    assert pixel_distance(a, torch.full_like(a, 0.25)) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="paired"):
        pixel_distance(a, a[:1])


def test_bad_attack_options_are_clear_errors():
    with pytest.raises(ValueError, match="unknown attack 'gcg'"):
        AttackOptions(method="gcg").check()
    with pytest.raises(ValueError, match="at least 1"):
        AttackOptions(method="soft", rounds=0).check()


def _attack(method: str, judge, **kw) -> tuple[PromptAttack, torch.nn.Module]:
    pipe = tiny_pipeline()
    return PromptAttack(pipe, AttackOptions(method=method, **kw), judge, guidance_scale=2.0, steps=2), pipe


def test_projection_maps_a_token_embedding_to_itself():
    attack, _ = _attack("soft", lambda x: [False] * len(x))
    ids = attack.vocab[:5]
    assert torch.equal(attack._project(attack.table[ids]), ids)


def test_adversarial_tokens_are_inserted_after_bos():
    attack, pipe = _attack("random", lambda x: [False] * len(x), tokens=2)
    ids = attack._ids("a red circle", attack.vocab[:2])[0].tolist()
    plain = pipe.tokenizer("a red circle").input_ids
    assert ids[:3] == [plain[0], *attack.vocab[:2].tolist()]
    assert ids[3 : 3 + len(plain) - 1] == plain[1:]


@pytest.mark.parametrize("method", ["random", "soft"])
def test_attack_stops_at_the_first_success_and_runs_every_round_otherwise(method):
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(1, 4, 8, 8)
    calls = []

    def never(images):
        calls.append(len(images))
        return [False] * len(images)

    attack, _ = _attack(method, never, rounds=3, steps=2)
    result = attack.run("a red circle", 0, pre=False, target=target, gen=gen)
    assert (result.post, result.rounds, len(calls)) == (False, 3, 3)
    assert result.adversarial_prompt.endswith("a red circle")
    attack, _ = _attack(method, lambda images: [True] * len(images), rounds=3, steps=2)
    result = attack.run("a red circle", 0, pre=False, target=target, gen=gen)
    assert (result.post, result.rounds) == (True, 1)
    # A prompt the edited model already shows needs no attack.
    result = attack.run("a red circle", 0, pre=True, target=target, gen=gen)
    assert (result.pre, result.post, result.rounds) == (True, True, 0)


def test_soft_attack_lowers_the_denoising_loss():
    attack, pipe = _attack("soft", lambda x: [False] * len(x), timestep_blocks=2)
    target = torch.randn(1, 4, 8, 8)
    prompt = "a red circle"
    soft = attack.table[attack.vocab[:5]].clone().requires_grad_(True)
    opt = torch.optim.Adam([soft], lr=0.05)

    def loss_at(seed: int) -> torch.Tensor:
        adv = attack._project(soft)
        projected = soft + (attack.table[adv] - soft).detach()
        return attack._denoising_loss(
            target, attack._condition(attack._ids(prompt, adv), projected), torch.Generator().manual_seed(seed)
        )

    with torch.no_grad():
        start = sum(loss_at(s) for s in range(4))
    for step in range(30):
        (grad,) = torch.autograd.grad(loss_at(step % 4), soft)
        soft.grad = grad
        opt.step()
    with torch.no_grad():
        end = sum(loss_at(s) for s in range(4))
    assert end < start


def test_toy_metrics_agree_with_an_independent_generation(tmp_path):
    report = main(["--concept", "circle", "--seeds", "2", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["erased_accuracy"] == report["erased_accuracy"]
    # Independently: plain StableDiffusionPipeline calls, one seeded generator per image, PIL output.
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_path())
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier()
    erased, _, _ = split_probes("circle")
    shows = []
    for probe in erased:
        for seed in range(2):
            image = pipe(
                probe.prompt, generator=torch.Generator().manual_seed(seed), guidance_scale=4.0, num_inference_steps=25
            ).images[0]
            shows.append(classifier.predict([image])[0]["shape"] == "circle")
    independent = sum(shows) / len(shows)
    # PIL output rounds pixels to 8 bits, which may flip at most one borderline reading.
    assert abs(report["erased_accuracy"] - independent) <= 1 / len(shows)
    assert report["erased_accuracy"] >= 0.85
    # The unedited model is its own original: fidelity 0, and nothing to attack.
    assert report["fidelity"] < 1e-3
    assert report["post_asr"] == report["pre_asr"]


def test_random_attack_report_is_deterministic_and_post_covers_pre():
    args = ["--concept", "square", "--seeds", "1", "--attack", "random", "--attack-rounds", "2"]
    first, second = main(args), main(args)
    assert first["post_asr"] >= first["pre_asr"]
    assert first == second


def test_evaluate_cli_errors_are_one_line(capsys):
    with pytest.raises(SystemExit, match="unknown toy-world concept 'dragon'"):
        main(["--concept", "dragon"])
    with pytest.raises(SystemExit, match="LoRA 'nowhere' does not exist"):
        main(["--concept", "circle", "--lora", "nowhere"])


def test_first_seed_moves_the_evaluation_to_other_seeds():
    from advanchor.evaluate.run import EvalOptions
    from advanchor.toyworld.quality import probe_images, probes

    pipe, items = tiny_pipeline(), probes()[:2]
    both = probe_images(pipe, items, 2, 2.0, 2)  # seeds 0, 1 per probe: (4, 3, H, W)
    shifted = probe_images(pipe, items, 1, 2.0, 2, first_seed=1)  # seed 1 per probe
    assert torch.allclose(shifted, both[1::2], atol=1e-6)
    assert not torch.allclose(shifted, both[0::2])
    with pytest.raises(ValueError, match="first_seed must be 0 or more"):
        EvalOptions(first_seed=-1).check()
