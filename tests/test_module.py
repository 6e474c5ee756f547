"""The frozen view, the Unlearner on tiny random components, and config parsing."""

import copy
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TOY_PROMPTS, tiny_module, tiny_pipeline, tiny_run  # noqa: E402

from advanchor.methods import Unlearner  # noqa: E402
from advanchor.methods.advanchor import PromptOptions  # noqa: E402
from advanchor.models import FrozenView, LoraOptions, add_lora, trainable_parameters  # noqa: E402
from advanchor.text import token_positions  # noqa: E402


def unet_out(unet, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 8, generator=g)
    cond = torch.randn(2, 16, 16, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), cond).sample


@pytest.mark.parametrize("trainable", ["attn2", "attn2-kv", "non-attn2", "all"])
def test_frozen_view_equals_a_real_frozen_copy(trainable):
    unet = tiny_pipeline().unet
    reference = copy.deepcopy(unet)
    params = trainable_parameters(unet, trainable)
    view = FrozenView(unet, params, lora=False)
    with torch.no_grad():
        for p in params.values():
            p.add_(0.05 * torch.randn_like(p))
    edited = unet_out(unet)
    assert not torch.allclose(edited, unet_out(reference))
    with view():
        assert torch.equal(unet_out(unet), unet_out(reference))
    assert torch.equal(unet_out(unet), edited), "trained values must come back after the frozen pass"


def test_trainable_sets_partition_the_unet():
    unet = tiny_pipeline().unet
    names = lambda s: set(trainable_parameters(unet, s))  # noqa: E731
    assert names("attn2") | names("non-attn2") == names("all")
    assert not names("attn2") & names("non-attn2")
    assert names("attn2-kv") < names("attn2")
    assert all(".attn2.to_k." in n or ".attn2.to_v." in n for n in names("attn2-kv"))
    with pytest.raises(ValueError, match="unknown trainable set 'attn3'"):
        trainable_parameters(unet, "attn3")


def test_lora_frozen_view_is_the_base_model():
    unet = tiny_pipeline().unet
    base = unet_out(unet)
    params = add_lora(unet, LoraOptions(rank=2, alpha=6.0))
    with torch.no_grad():
        for p in params.values():
            p.add_(0.1 * torch.randn_like(p))  # B starts at zero; make the adapter matter
    assert not torch.allclose(unet_out(unet), base)
    with FrozenView(unet, params, lora=True)():
        assert torch.allclose(unet_out(unet), base, atol=1e-6)
    with pytest.raises(ValueError, match="matched no UNet module"):
        add_lora(tiny_pipeline().unet, LoraOptions(target_modules=r".*nothing_here"))


@pytest.mark.parametrize("strategy", ["interleaved", "sequential", "cyclical"])
def test_two_step_trainer_run_on_tiny_components(tmp_path, strategy):
    module, before, delta0, trainer = tiny_run(tmp_path, strategy)
    assert trainer.global_step == 2
    changed = [n for n, p in module.trained.items() if not torch.equal(p.detach(), before[n])]
    assert changed, "no trained parameter moved"
    assert all(".attn2." in n for n in module.trained)
    assert not torch.equal(module.deltas[0].detach(), delta0), "the anchor never moved"
    for key in ("train/alignment", "train/preservation", "train/anchor_loss", "train/delta_norm", "train/inner_steps"):
        assert key in trainer.callback_metrics
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 2


def test_two_concepts_in_one_run_each_get_their_own_anchor(tmp_path):
    module, before, deltas0, trainer = tiny_run(tmp_path, steps=4, concepts=("circle", "star"))
    assert trainer.global_step == 4 and len(module.deltas) == 2
    # Each concept's anchor moves only on its own images: one epoch of 2 + 2 images reaches both.
    for delta, start in zip(module.deltas, deltas0):
        assert not torch.equal(delta.detach(), start)
    assert module.positions == [
        token_positions(module.tokenizer, "a circle", "circle"),
        token_positions(module.tokenizer, "a star", "star"),
    ]
    prompts = sorted(p.read_text() for p in (tmp_path / "cache").rglob("prompt.txt"))
    assert prompts == ["a circle", "a star"]
    assert len(list((tmp_path / "cache").rglob("*.png"))) == 4


def test_concept_images_are_cached(tmp_path):
    tiny_run(tmp_path, steps=1)
    files = sorted((tmp_path / "cache").rglob("*.png"))
    stamps = [f.stat().st_mtime_ns for f in files]
    tiny_run(tmp_path, steps=1)
    assert [f.stat().st_mtime_ns for f in sorted((tmp_path / "cache").rglob("*.png"))] == stamps


def test_lora_run_trains_only_the_adapter(tmp_path):
    module, before, _, _ = tiny_run(tmp_path, trainable="lora", lora=LoraOptions(rank=2, alpha=4.0))
    assert all("lora_" in n for n in module.trained)
    assert any(not torch.equal(p.detach(), before[n]) for n, p in module.trained.items())


def test_bad_concepts_are_clear_errors():
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        Unlearner(concepts=["dragon"], prompts=TOY_PROMPTS).attach(tiny_pipeline())
    with pytest.raises(ValueError, match="not among concepts"):
        Unlearner(concepts=["circle"], attributes={"star": {"red": 0.5}})


def test_lora_keeps_the_users_adapter_on_and_frozen():
    from peft import LoraConfig

    unet = tiny_pipeline().unet
    base = unet_out(unet)
    user = LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_v"], init_lora_weights=False)
    unet.add_adapter(user, adapter_name="user")
    given = unet_out(unet)
    assert not torch.allclose(given, base)
    params = add_lora(unet, LoraOptions(rank=2, alpha=6.0))
    assert params and all(".advanchor." in n for n in params)
    assert all(not p.requires_grad for n, p in unet.named_parameters() if n not in params)
    assert torch.allclose(unet_out(unet), given, atol=1e-6), "a fresh adapter (B = 0) must not change the model"
    with torch.no_grad():
        for p in params.values():
            p.add_(0.1 * torch.randn_like(p))
    edited = unet_out(unet)
    assert not torch.allclose(edited, given)
    with FrozenView(unet, params, lora=True)():
        assert torch.allclose(unet_out(unet), given, atol=1e-6), "the frozen view is the model as given"
    assert torch.equal(unet_out(unet), edited)


def _retained_drift(module, prompt: str) -> float:
    """How far the trained UNet's prediction for `prompt` moved from the frozen one, at fixed z_t and t."""
    g = torch.Generator().manual_seed(3)
    zt = torch.randn(4, module.unet.config.in_channels, 8, 8, generator=g)
    t = torch.tensor([100, 300, 500, 700])
    cond = module.encoded(prompt).expand(4, -1, -1)
    with torch.no_grad():
        edited = module.unet(zt, t, cond).sample
        with module.frozen():
            original = module.unet(zt, t, cond).sample
    return float((edited - original).pow(2).mean())


def test_retain_term_holds_the_retained_prompts(tmp_path):
    """AdvAnchor's retain set (DESIGN.md 3): the held prompt drifts less than without the term, same seed."""
    drift = {}
    for weight in (0.0, 50.0):
        module, *_ = tiny_run(tmp_path, steps=6, retain=["a square"], retain_weight=weight)
        drift[weight] = _retained_drift(module, "a square")
    assert drift[50.0] < 0.5 * drift[0.0]


def test_retain_term_needs_retained_prompts_and_a_valid_weight(tmp_path):
    with pytest.raises(ValueError, match="retain_weight must be 0 or more"):
        tiny_module(retain_weight=-1.0)
    module = tiny_module(retain_weight=1.0, pretrained=str(tmp_path))  # not the toy model: no default retain set
    assert module.uses_retained()
    with pytest.raises(ValueError, match="set model.retain"):
        module.retained_prompts()


def test_contexts_give_one_image_set_per_prompt_and_one_shared_anchor(tmp_path):
    """`prompts.contexts`: a texture erased on several shapes, each prompt with its own images and
    token positions, every prompt's anchor moving the concept's single delta."""
    contexts = PromptOptions(
        erase="a {concept} {context}", anchor="a {concept} {context}", neutral="", contexts=["circle", "square"]
    )
    module, _, delta0, trainer = tiny_run(tmp_path, steps=4, concepts=("striped",), prompts=contexts)
    assert module.erase_items() == [(0, "a striped circle"), (0, "a striped square")]
    assert len(module.deltas) == 1 and not torch.equal(module.deltas[0].detach(), delta0)
    assert module.positions == [[2], [2]]
    assert sorted(trainer.datamodule.dataset.labels.tolist()) == [0, 0, 1, 1]
    prompts = sorted(p.read_text() for p in (tmp_path / "cache").rglob("prompt.txt"))
    assert prompts == ["a striped circle", "a striped square"]


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        (dict(erase="a {concept} {context}"), "prompts.erase holds {context} but model.prompts.contexts is empty"),
        (dict(anchor="a {concept}", contexts=["circle"]), "prompts.anchor has no {context}"),
    ],
)
def test_contexts_and_templates_must_agree(prompts, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        PromptOptions(**{"erase": "a {concept} {context}", "anchor": "a {concept} {context}", **prompts})


def test_a_context_that_repeats_the_concept_is_refused():
    both = PromptOptions(erase="a {concept} {context}", anchor="a {concept} {context}", contexts=["circle", "striped"])
    with pytest.raises(ValueError, match="a context must not repeat the concept word"):
        tiny_module(concepts=("striped",), prompts=both)
