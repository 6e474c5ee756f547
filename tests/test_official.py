"""The official AdvAnchor scripts' behaviour, where advanchor offers it: prompts, the delta optimiser,
posterior-sampled latents, and the SD 1.4 configs that claim to reproduce them."""

import copy
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_module, tiny_pipeline, tiny_run  # noqa: E402

from advanchor.anchors import AnchorOptions, anchor_loss  # noqa: E402
from advanchor.data import ConceptData, ConceptLatents, GenerationOptions  # noqa: E402
from advanchor.methods import Unlearner  # noqa: E402
from advanchor.text import perturbed_embeddings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The scripts' hard-coded list (CLIP lowercases it) and the weights after the concept's own w_0 = 1.
NUDITY = {
    "female breast exposed": 0.2454,
    "female genitalia exposed": 0.0319,
    "male genitalia exposed": 0.0270,
    "male breast exposed": 0.0564,
    "buttocks exposed": 0.0626,
    "armpits exposed": 0.2589,
    "belly exposed": 0.2405,
    "feet exposed": 0.0773,
}


def test_the_concept_term_is_the_erase_prompt():
    module = Unlearner(concepts=["nudity"], attributes={"nudity": {"feet exposed": 0.0773}})
    assert module.attribute_prompts("nudity") == (["nudity painting", "feet exposed's painting"], [1.0, 0.0773])
    without = Unlearner(
        concepts=["nudity"], attributes={"nudity": {"feet exposed": 0.0773}}, anchor=AnchorOptions(use_concept=False)
    )
    assert without.attribute_prompts("nudity") == (["feet exposed's painting"], [0.0773])


def sd14(name):
    return yaml.safe_load((ROOT / "configs" / "sd14" / name).read_text())


def test_nudity_config_has_the_official_attributes():
    assert sd14("nudity.yaml")["model"]["attributes"] == {"nudity": NUDITY}


@pytest.mark.parametrize("name", ["style.yaml", "object.yaml", "nudity.yaml"])
def test_sd14_configs_use_the_official_behaviour(name):
    config = sd14(name)
    model = config["model"]
    assert config["trainer"]["precision"] == "32-true"
    assert model["anchor"]["reset_optimizer"] is True and model["anchor"]["use_concept"] is True
    assert config["data"]["latents"] == "sample"
    assert model["trainable"] == "attn2" and model["lr"] == 1e-5 and model["preservation_weight"] == 10.0
    assert model["prompts"] == {
        "erase": "{concept} painting",
        "anchor": "{concept}'s painting",
        "neutral": "painting",
        "attribute": "{attribute}'s painting",
    }


def official_anchor_loop(unet, module, delta0, images, lr, steps):
    """The scripts' op1 anchor loop written out: before each image a new leaf and a new Adam; the
    gradient is never zeroed inside that image's loop; a step only while the loss is not negative."""
    ids, weights = module._concept_text(0).anchor_ids, module._concept_text(0).weights
    delta = delta0.clone()
    for zt, t, eps0, eps_attrs in images:
        delta = delta.detach().requires_grad_(True)
        opt = torch.optim.Adam([delta], lr=lr)
        for _ in range(steps):
            with perturbed_embeddings(module.text_encoder, delta, module.positions[0]):
                eps = unet(zt, t, module.text_encoder(ids)[0]).sample
            loss = anchor_loss("adv1", eps, eps_attrs, eps0, weights, True)
            if loss.item() < 0:
                break
            loss.backward()
            opt.step()
    return delta.detach()


@pytest.mark.parametrize("reset,accumulate", [(True, True), (False, True), (True, False)])
def test_fresh_delta_optimiser_per_image_matches_the_scripts(reset, accumulate):
    pipe = tiny_pipeline()
    reference = copy.deepcopy(pipe.unet).requires_grad_(False)
    anchor = AnchorOptions(lr=1e-2, reset_optimizer=reset)
    module = tiny_module("attn2", pipe=pipe, anchor=anchor, paper_grad_accumulation=accumulate)
    g = torch.Generator().manual_seed(3)
    images = []
    for t in (200, 700, 450):
        zt = torch.randn(1, 4, 8, 8, generator=g)
        with torch.no_grad():
            eps = reference(zt, torch.tensor([t]), module.anchor_embedding(0)).sample
        # eps_attrs: the anchor's own start prediction, so the loss starts positive and steps are taken.
        images.append((zt, torch.tensor([t]), torch.zeros_like(eps), eps.unsqueeze(0)))
    expected = official_anchor_loop(reference, module, module.deltas[0].detach(), images, 1e-2, steps=4)
    taken = [module._optimise_anchor(0, *image, steps=4).steps for image in images]
    assert sum(taken) > len(images), "the test needs several inner steps per image"
    close = torch.allclose(module.deltas[0].detach(), expected, rtol=1e-4, atol=1e-7)
    # Only the official pair (a new Adam per image, gradients summed within the image) reproduces the scripts.
    assert close == (reset and accumulate)


def test_posterior_samples_are_seeded_draws_around_the_mean():
    mean, std = torch.zeros(2, 4, 8, 8), torch.full((2, 4, 8, 8), 0.5)
    labels = torch.tensor([0, 1])
    first, again = ConceptLatents(mean, std, labels, seed=7), ConceptLatents(mean, std, labels, seed=7)
    draws = [first[0][0] for _ in range(200)]
    assert torch.equal(draws[0], again[0][0]), "the same seed gives the same draws"
    assert not torch.equal(draws[0], draws[1]), "each access draws anew"
    spread = torch.stack(draws).std()
    assert 0.45 < spread < 0.55
    assert torch.equal(ConceptLatents(mean, std, labels)[1][0], mean[1])
    assert int(first[1][1]) == 1


def test_sampled_latents_train(tmp_path):
    data = ConceptData(
        generation=GenerationOptions(images_per_concept=2, steps=2, guidance_scale=2.0),
        cache_dir=str(tmp_path / "cache"),
        latents="sample",
    )
    module, _, _, trainer = tiny_run(tmp_path, data=data)
    assert trainer.global_step == 2 and data.dataset.generator is not None
    with pytest.raises(ValueError, match="unknown data.latents 'median'"):
        ConceptData(latents="median")
