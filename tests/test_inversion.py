"""Concept Inversion: the loss goes down, the learnt word lands at the concept only, the attack's ASR."""

import contextlib

import pytest
import torch

from advanchor.evaluate.attack import AttackOptions, attack_prompts
from advanchor.evaluate.inversion import (
    InversionOptions,
    condition,
    initial_embeddings,
    invert,
    placed,
)
from advanchor.models import load_pipeline
from advanchor.testing import tiny_pipeline
from advanchor.text import tokenize


def _tiny():
    pipe = tiny_pipeline()
    for module in (pipe.unet, pipe.text_encoder, pipe.vae):
        module.requires_grad_(False).eval()
    return pipe


def test_inversion_loss_goes_down_on_the_original_model():
    # The shipped toy model, unedited: a word started at "the" learns its way towards "circle".
    pipe = load_pipeline("toy")
    options = InversionOptions(steps=30, lr=5e-3, images=4, batch=4, init="the")
    result = invert(pipe, contextlib.nullcontext, ["a circle"], "circle", options, guidance_scale=4.0, sample_steps=8)
    assert result.end_loss < 0.95 * result.start_loss
    assert len(result.loss_history) == 30 and result.embeddings.shape == (1, 64)
    assert result.seconds > 0


@pytest.mark.parametrize(
    ("concept", "positions"),
    [("circle", [3, 5]), ("red circle", [2, 3])],  # every occurrence; a two-token concept learns one vector per token
)
def test_learnt_word_lands_only_at_the_concept_positions(concept, positions):
    pipe = _tiny()
    prompt = "a red circle a circle"
    learnt = torch.randn(len(concept.split()), 16)
    inputs = []
    # Token + position embeddings; transformers 5 has no `text_model` level, so the module is found by name.
    embeddings = next(m for n, m in pipe.text_encoder.named_modules() if n.split(".")[-1] == "embeddings")
    hook = embeddings.register_forward_hook(lambda m, a, out: inputs.append(out[0]))
    with torch.no_grad():
        ids = tokenize(pipe.tokenizer, [prompt])[0]  # (L,)
        plain = pipe.text_encoder(ids[None])[0][0]  # (L, D)
        swapped = condition(pipe, prompt, concept, learnt)[0]
    hook.remove()
    changed = (inputs[1] - inputs[0]).abs().sum(-1)  # (L,): token + position embeddings, per position
    assert changed.nonzero().flatten().tolist() == positions
    table = pipe.text_encoder.get_input_embeddings().weight
    expected = learnt.repeat(len(positions) // len(learnt), 1) - table[ids[positions]]
    torch.testing.assert_close(inputs[1][positions] - inputs[0][positions], expected)
    # Causal attention: the tokens before the word read the same conditioning.
    first = positions[0]
    torch.testing.assert_close(swapped[:first], plain[:first])
    assert not torch.allclose(swapped[first], plain[first])


def test_prompts_that_do_not_name_the_concept_get_it_prepended():
    pipe = _tiny()
    assert placed(pipe.tokenizer, "a red circle", "circle") == "a red circle"
    assert placed(pipe.tokenizer, "a red square", "circle") == "circle a red square"


def test_attack_reports_pre_and_post_asr_with_pre_successes_counted():
    pipe = _tiny()
    units = [("a red circle", 0, True), ("a blue circle", 1, False), ("a square", 2, False)]
    judged = []

    def judge(images):
        judged.append(len(images))
        return [True] + [False] * (len(images) - 1)

    options = AttackOptions(method="inversion", inversion=InversionOptions(steps=2, images=2, batch=2))
    report = attack_prompts(pipe, options, judge, units, contextlib.nullcontext, 2.0, 2, "circle")
    assert judged == [2]  # one batch, the two units not already successes
    assert report["pre_asr"] == pytest.approx(1 / 3) and report["post_asr"] == pytest.approx(2 / 3)
    results = report["attack"]["results"]
    assert [r["post"] for r in results] == [True, True, False]
    assert results[1]["adversarial_prompt"] == "a blue <v*>"
    assert results[2]["adversarial_prompt"] == "<v*> a square"
    assert report["attack"]["method"] == "inversion" and len(report["attack"]["loss_history"]) == 2
    # Learnt on the original model's images of the attacked prompts, the concept named in each.
    assert report["attack"]["prompts"] == ["a red circle", "a blue circle", "circle a square"]
    assert report["attack"]["time_s"] >= report["attack"]["inversion_s"] > 0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"steps": 0}, "at least 1"),
        ({"batch": 0}, "at least 1"),
        ({"lr": 0.0}, "lr must be above 0"),
        ({"init": " "}, "init must be"),
    ],
)
def test_bad_options_are_one_line_errors(kw, match):
    with pytest.raises(ValueError, match=match) as err:
        InversionOptions(**kw).check()
    assert "\n" not in str(err.value)


def test_bad_words_and_prompts_fail_before_any_image():
    pipe = _tiny()
    with pytest.raises(ValueError, match="inversion init 'zebra' is not in the tokenizer's vocabulary"):
        initial_embeddings(pipe, "circle", "zebra")
    with pytest.raises(ValueError, match="does not occur in prompt 'a square'"):
        invert(pipe, contextlib.nullcontext, ["a square"], "circle", InversionOptions())
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        invert(pipe, contextlib.nullcontext, ["a circle"], "zebra", InversionOptions())
