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
    # Stop delta's inner loop as soon as the anchor loss is below 0 (the official rule); off, every image
    # takes exactly `max_inner_steps` updates, a fixed cost (benchmarks/step_cost.py compares at fixed work).
    early_stop: bool = True

    def __post_init__(self) -> None:
        self.strategy = STRATEGY_ALIASES.get(self.strategy, self.strategy)
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown anchor strategy {self.strategy!r}; use one of: {', '.join(STRATEGIES)}, alternating"
            )
        if self.loss not in LOSSES:
            raise ValueError(f"unknown anchor loss {self.loss!r}; use one of: {', '.join(LOSSES)}")
        if not self.lr > 0:
            raise ValueError(f"model.anchor.lr must be above 0, got {self.lr}; the official value is 1e-4")
        if self.max_inner_steps < 0:
            raise ValueError(f"model.anchor.max_inner_steps must be 0 or more, got {self.max_inner_steps}")


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
    loss: float  # anchor loss at the last evaluation (the ranks' mean under data parallelism)
    eps_anchor: torch.Tensor | None  # eps*(z_t, E(c_a; delta)) for the final delta, when already computed


def data_parallel_world() -> int:
    """How many processes share the anchors: torch.distributed's world size once it is initialised, else 1."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def _rank_mean(value: torch.Tensor, world: int) -> float:
    total = value.detach().clone()
    torch.distributed.all_reduce(total)
    return total.item() / world


def share_from_rank_zero(params) -> None:
    """Copy rank 0's values of `params` to every rank (nothing with one process): the anchors are kept out
    of DDP, which would otherwise broadcast them when it wraps the model, so they start equal here."""
    if data_parallel_world() > 1:
        with torch.no_grad():
            for p in params:
                torch.distributed.broadcast(p.data, src=0)


def optimise_delta(
    delta: torch.nn.Parameter,
    optimizer: torch.optim.Optimizer,
    evaluate: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    max_steps: int,
    accumulate: bool = False,
    early_stop: bool = True,
) -> InnerResult:
    """Update `delta` on one concept image until the anchor loss drops below 0 (with `early_stop`) or
    `max_steps` updates were made.

    `evaluate()` returns (loss, eps_anchor) for the current delta. Gradients are taken with
    `torch.autograd.grad` so that nothing leaks into the UNet's `.grad`. Delta's gradient starts from
    zero on each image; `accumulate` keeps the official scripts' habit of never zeroing it between the
    steps of that image's inner loop.

    Under data parallelism (torch.distributed initialised with more than one process) every rank calls
    this at the same point with its own image (the samplers give every rank as many images), and the
    ranks optimise one shared delta on the union of their images: the anchor is a property of the
    concept, not of a rank's shard, and the UNet's averaged update is only meaningful if every rank's
    alignment target used the same anchor. So the gradient is averaged over the ranks (each rank then
    takes the same Adam step from the same state, and delta stays identical everywhere without a
    broadcast), and the stop decision is taken on the rank-averaged loss, which is also the loss
    returned: a per-rank decision would let one rank leave the loop while another waits in the next
    all-reduce for it, a deadlock. With one process nothing is communicated and the loop is the
    single-image one.
    """
    world = data_parallel_world()
    delta.grad = None
    steps = 0
    while True:
        loss, eps = evaluate()
        value = loss.item() if world == 1 else _rank_mean(loss, world)
        if (early_stop and value < 0) or steps >= max_steps:
            return InnerResult(steps, value, eps.detach())
        (grad,) = torch.autograd.grad(loss, [delta])
        if world > 1:
            torch.distributed.all_reduce(grad)
            grad /= world
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
