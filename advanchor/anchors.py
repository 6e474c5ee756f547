"""Adversarial anchors: the perturbation `delta`, its losses and the three optimisation strategies."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .losses import anchor_similarity, anchor_similarity_centered

STRATEGIES = ("interleaved", "sequential", "cyclical")
# The paper calls the interleaved strategy "alternating".
STRATEGY_ALIASES = {"alternating": "interleaved", "op1": "interleaved", "op2": "sequential", "op3": "cyclical"}
LOSSES = ("adv1", "adv2")


@dataclass
class AnchorOptions:
    """How the adversarial anchor of each concept is found (defaults: the official scripts)."""

    loss: str = "adv1"  # adv1: similarity of predictions; adv2: similarity of their offsets from c_0
    strategy: str = "interleaved"  # or "alternating", "sequential", "cyclical"
    lr: float = 1e-4  # `lr2` of the official scripts
    max_inner_steps: int = 30  # `w_iter_break`: delta steps per sample (interleaved/sequential) or passes (cyclical)
    init_scale: float = 1e-7
    use_concept: bool = True  # `ori_flag`: the concept's erase prompt is an attribute with weight 1
    # The official scripts make a new Adam for delta before each concept image (delta's value carries
    # over, its optimiser state restarts); off keeps one Adam per anchor for the whole run.
    reset_optimizer: bool = False

    def __post_init__(self) -> None:
        self.strategy = STRATEGY_ALIASES.get(self.strategy, self.strategy)
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown anchor strategy {self.strategy!r}; use one of: {', '.join(STRATEGIES)}, alternating"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"unknown anchor loss {self.loss!r}; use one of: {', '.join(LOSSES)}")


def anchor_loss(
    kind: str,
    eps_anchor: torch.Tensor,
    eps_attrs: torch.Tensor,
    eps_neutral: torch.Tensor,
    weights: torch.Tensor,
    use_concept: bool,
) -> torch.Tensor:
    """L_adv1 or L_adv2 with the official normalisation 1/(m+1), m = 1 when the concept is an attribute."""
    normaliser = 2 if use_concept else 1
    if kind == "adv1":
        return anchor_similarity(eps_anchor, eps_attrs, weights, normaliser)
    return anchor_similarity_centered(eps_anchor, eps_attrs, eps_neutral, weights, normaliser)


@dataclass
class InnerResult:
    steps: int  # delta updates taken
    loss: float  # anchor loss at the last evaluation
    eps_anchor: torch.Tensor | None  # eps*(z_t, E(c_a; delta)) for the final delta, when already computed


def optimise_delta(
    delta: torch.nn.Parameter,
    optimizer: torch.optim.Optimizer,
    evaluate: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    max_steps: int,
    accumulate: bool = False,
) -> InnerResult:
    """Update `delta` on one concept image until the anchor loss drops below 0 or `max_steps` updates were made.

    `evaluate()` returns (loss, eps_anchor) for the current delta. Gradients are taken with
    `torch.autograd.grad` so that nothing leaks into the UNet's `.grad`. Delta's gradient starts from
    zero on each image; `accumulate` keeps the official scripts' habit of never zeroing it between the
    steps of that image's inner loop.
    """
    delta.grad = None
    steps = 0
    while True:
        loss, eps = evaluate()
        if loss.item() < 0 or steps >= max_steps:
            return InnerResult(steps, loss.item(), eps.detach())
        (grad,) = torch.autograd.grad(loss, [delta])
        delta.grad = grad if (not accumulate or delta.grad is None) else delta.grad + grad
        optimizer.step()
        steps += 1


def follow(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> torch.optim.Optimizer:
    """Move `optimizer`'s state to `param`'s device and dtype, as Lightning does for the optimisers it owns.

    `step` stays where it is: Adam keeps it on the CPU unless it is capturable.
    """
    for state in optimizer.state.values():
        for key, value in state.items():
            if key != "step" and torch.is_tensor(value):
                state[key] = value.to(param)
    return optimizer
