"""Everything the Unlearner keeps follows the model to another dtype (the CPU stand-in for a GPU),
and the anchor's gradient through the frozen view is the frozen model's."""

import copy
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import TRAINABLE, perturb, tiny_module, tiny_pipeline, tiny_run  # noqa: E402

from advanchor.anchors import anchor_loss  # noqa: E402


def unet_out(unet, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g).to(dtype)
    cond = torch.randn(2, 16, 16, generator=g).to(dtype)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 500]), cond).sample


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_frozen_pass_after_the_pipeline_moves_to_float64(trainable):
    pipe = tiny_pipeline()
    reference = copy.deepcopy(pipe.unet).to(torch.float64)
    module = tiny_module(trainable, pipe=pipe)
    perturb(module.trained)
    pipe.to(torch.float64)
    edited = unet_out(pipe.unet, torch.float64)
    with module.frozen():
        frozen = unet_out(pipe.unet, torch.float64)
    assert frozen.dtype == torch.float64
    assert torch.allclose(frozen, unet_out(reference, torch.float64), atol=1e-10)
    assert not torch.allclose(frozen, edited)
    assert torch.equal(unet_out(pipe.unet, torch.float64), edited), "the trained values must come back"


@pytest.mark.parametrize("trainable", TRAINABLE)
@pytest.mark.parametrize("move", ["pipeline", "trainer"])
def test_two_step_run_after_a_move_to_float64(tmp_path, trainable, move):
    """`pipeline`: pipe.to(float64) after attaching; `trainer`: Lightning's 64-true moves the module itself."""
    module, before, delta0, trainer = tiny_run(
        tmp_path,
        trainable=trainable,
        dtype=torch.float64 if move == "pipeline" else None,
        precision="64-true" if move == "trainer" else "32-true",
    )
    assert trainer.global_step == 2
    assert all(p.dtype == torch.float64 for p in module.trained.values())
    assert any(not torch.equal(p.detach(), before[n].to(p)) for n, p in module.trained.items())
    for n, original in module.frozen.originals.items():
        assert original.dtype == torch.float64 and torch.equal(original, before[n].to(original))
    assert all(text.erase.dtype == torch.float64 for text in module._text.values())
    if move == "trainer":
        assert module.deltas[0].dtype == torch.float64
    assert not torch.equal(module.deltas[0].detach(), delta0.to(module.deltas[0]))


@pytest.mark.parametrize("trainable", TRAINABLE)
def test_anchor_gradient_through_the_frozen_view_is_the_frozen_models(trainable):
    pipe = tiny_pipeline()
    reference = copy.deepcopy(pipe.unet).requires_grad_(False)
    module = tiny_module(trainable, pipe=pipe)
    perturb(module.trained)
    g = torch.Generator().manual_seed(1)
    zt, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([300])
    delta, weights = module.deltas[0], module._concept_text(0).weights

    def gradient(unet):
        eps = unet(zt, t, module.anchor_embedding(0)).sample
        # eps_attrs = the reference's own prediction makes L_adv1 a positive square, so a step is taken.
        loss = anchor_loss("adv1", eps, eps_attrs, eps0, weights, True)
        return torch.autograd.grad(loss, [delta])[0]

    with torch.no_grad():
        eps_attrs = reference(zt, t, module.anchor_embedding(0)).sample.unsqueeze(0)  # (K=1, 1, C, h, w)
    eps0 = torch.zeros_like(eps_attrs[0])
    expected, trained = gradient(reference), gradient(module.unet)
    assert (trained - expected).norm() / expected.norm() > 1e-3, "the trained UNet must give another gradient"
    inner = module._optimise_anchor(0, zt, t, eps0, eps_attrs, steps=1)
    assert inner.steps == 1
    assert (delta.grad - expected).norm() / expected.norm() < 1e-5
