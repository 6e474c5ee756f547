import pytest
import torch

from advanchor.anchors import AnchorOptions, anchor_loss, optimise_delta
from advanchor.losses import (
    anchor_similarity,
    anchor_similarity_centered,
    attention_mass,
    denoising,
    esd_target,
    unlearning_loss,
)


def test_adv1_on_hand_computed_tensors():
    eps_a = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    attrs = torch.tensor([[3.0, 4.0], [1.0, -1.0]]).view(2, 1, 2, 1, 1)
    w = torch.tensor([1.0, 0.5])
    # k=0: mean(3, 8) = 5.5; k=1: mean(1, -2) = -0.5 -> 5.5 - 0.25 = 5.25; / (m+1) = 2
    assert anchor_similarity(eps_a, attrs, w, 2).item() == pytest.approx(2.625)
    assert anchor_loss("adv1", eps_a, attrs, torch.zeros_like(eps_a), w, use_concept=True).item() == pytest.approx(
        2.625
    )
    assert anchor_loss("adv1", eps_a, attrs, torch.zeros_like(eps_a), w, use_concept=False).item() == pytest.approx(
        5.25
    )


def test_adv2_centres_on_the_neutral_prediction():
    eps_a = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    eps_0 = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)
    attrs = torch.tensor([[3.0, 0.0]]).view(1, 1, 2, 1, 1)
    # (a - 0) = (0, 1); (k - 0) = (2, -1) -> mean(0, -1) = -0.5
    assert anchor_similarity_centered(eps_a, attrs, eps_0, torch.tensor([1.0]), 1).item() == pytest.approx(-0.5)


def test_unlearning_loss_is_alignment_plus_lambda_preservation():
    pred_e, target = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])  # mse = (1 + 4) / 2 = 2.5
    pred_0, target_0 = torch.tensor([2.0, 2.0]), torch.tensor([1.0, 2.0])  # mse = 0.5
    total, align, keep = unlearning_loss(pred_e, target, pred_0, target_0, lam=10.0)
    assert (align.item(), keep.item(), total.item()) == pytest.approx((2.5, 0.5, 7.5))


def test_unlearning_targets_carry_no_gradient():
    target = torch.ones(2, requires_grad=True)
    pred = torch.zeros(2, requires_grad=True)
    unlearning_loss(pred, target, pred, target, 1.0)[0].backward()
    assert target.grad is None and pred.grad is not None


def test_inner_loop_stops_when_the_loss_turns_negative():
    delta = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([delta], lr=0.4)

    def evaluate():
        return delta.sum() - 0.1, delta.detach().clone()

    result = optimise_delta(delta, opt, evaluate, max_steps=30)
    assert result.steps == 3 and result.loss < 0  # 1.0 -> 0.6 -> 0.2 -> -0.2
    assert torch.allclose(result.eps_anchor, delta.detach())
    capped = optimise_delta(
        torch.nn.Parameter(torch.tensor([5.0])), opt, lambda: (torch.tensor(1.0), torch.zeros(1)), 0
    )
    assert capped.steps == 0


def test_anchor_options_accept_the_papers_name_and_reject_unknown():
    assert AnchorOptions(strategy="alternating").strategy == "interleaved"
    with pytest.raises(ValueError, match="unknown anchor strategy 'zigzag'"):
        AnchorOptions(strategy="zigzag")


def test_esd_target_on_hand_computed_tensors():
    uncond, cond = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 1.0])
    # eps(x_t) - eta (eps(x_t, c) - eps(x_t)): (1, 2) - 2 (2, -1) = (-3, 4)
    assert torch.equal(esd_target(uncond, cond, 2.0), torch.tensor([-3.0, 4.0]))
    assert torch.equal(esd_target(uncond, cond, 0.0), uncond)


def test_attention_mass_on_hand_computed_tensors():
    # One layer, 1 head, 2 pixels, 3 tokens; the concept is token 1: mass (0.5 + 0.1) / 2 = 0.3.
    layer = torch.tensor([[[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]])
    other = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]])  # all on the concept: 1.0
    assert attention_mass([layer], [1]).item() == pytest.approx(0.3)
    assert attention_mass([layer, other], [1]).item() == pytest.approx(1.3)
    assert attention_mass([layer], [1, 2]).item() == pytest.approx(0.6)


def test_denoising_on_hand_computed_tensors():
    pred, noise = torch.tensor([1.0, 2.0, 0.0, -1.0]), torch.tensor([0.0, 2.0, 3.0, 1.0])
    # squared errors 1, 0, 9, 4 -> mean 3.5
    assert denoising(pred, noise).item() == pytest.approx(3.5)
