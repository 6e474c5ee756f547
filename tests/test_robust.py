"""Robust AdvAnchor: adversarial prompts searched on the current model during training are erased too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_run  # noqa: E402

from advanchor.evaluate.attack import AttackOptions, banned_tokens  # noqa: E402
from advanchor.evaluate.inversion import InversionOptions  # noqa: E402
from advanchor.methods.advanchor import RobustOptions  # noqa: E402

SEARCH = AttackOptions(method="gcg", rounds=1, steps=2, tokens=2, top_k=4, candidates=4)


def test_robust_training_searches_every_k_steps_and_aligns_the_found_prompt(tmp_path):
    module, _, _, trainer = tiny_run(tmp_path, trainable="lora", steps=3, robust=RobustOptions(every=2, attack=SEARCH))
    assert module._searched == {0: 2}  # searched at steps 0 and 2, the last one kept
    assert float(trainer.callback_metrics["train/robust"]) > 0
    (tokens,) = module.adversarial.values()
    assert tokens.shape == (2,)
    banned = banned_tokens(module.tokenizer, module.text_encoder.get_input_embeddings().weight, "circle", 0.5)
    assert not set(tokens.tolist()) & set(banned)
    (prompt,) = module.summary()["adversarial_prompts"].values()
    assert prompt.endswith("a circle") and len(prompt) > len("a circle")


def test_every_erase_prompt_gets_its_adversarial_prompt_when_first_met(tmp_path):
    robust = RobustOptions(every=3, attack=SEARCH)
    module, _, _, _ = tiny_run(tmp_path, trainable="lora", steps=4, concepts=("circle", "square"), robust=robust)
    assert sorted(module.adversarial) == [0, 1]
    assert set(module.summary()["adversarial_prompts"]) == {"a circle", "a square"}


def test_robust_training_against_inversion_learns_the_concept_word(tmp_path):
    inversion = AttackOptions(method="inversion", inversion=InversionOptions(steps=2, batch=1))
    module, _, _, trainer = tiny_run(
        tmp_path, trainable="lora", steps=2, robust=RobustOptions(every=1, attack=inversion)
    )
    assert module._searched == {0: 1} and float(trainer.callback_metrics["train/robust"]) > 0
    (word,) = module.adversarial.values()
    own = module.text_encoder.get_input_embeddings().weight[module.tokenizer("circle").input_ids[1:-1]]
    assert word.shape == own.shape and not torch.allclose(word, own.detach().cpu())  # moved by its Adam steps
    assert module.summary()["adversarial_prompts"] == {"a circle": "a <v*>"}


def test_robust_training_off_is_plain_advanchor(tmp_path):
    plain, _, _, plain_trainer = tiny_run(tmp_path / "a", trainable="lora", steps=2)
    off, _, _, off_trainer = tiny_run(tmp_path / "b", trainable="lora", steps=2, robust=RobustOptions(every=0))
    assert "train/robust" not in off_trainer.callback_metrics and not off.adversarial
    for name, p in plain.trained.items():
        assert (p == off.trained[name]).all(), name


@pytest.mark.parametrize("kwargs", [{"every": -1}, {"weight": -1.0}, {"every": 2, "attack": AttackOptions("none")}])
def test_bad_robust_options_are_one_line_errors(kwargs):
    with pytest.raises(ValueError, match="model.robust"):
        RobustOptions(**kwargs)
