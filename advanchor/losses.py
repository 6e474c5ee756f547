"""Unlearning and anchor losses: pure functions of tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def anchor_similarity(
    eps_anchor: torch.Tensor, eps_attrs: torch.Tensor, weights: torch.Tensor, normaliser: int
) -> torch.Tensor:
    """L_adv1 of AdvAnchor (Zhao et al. 2024; DESIGN.md 1): 1/(m+1) sum_k w_k mean(eps*(c_a; delta) * eps*(c_k)).

    eps_anchor: (B, C, H, W); eps_attrs: (K, B, C, H, W); weights: (K,).
    """
    per_k = (eps_anchor.unsqueeze(0) * eps_attrs).flatten(1).mean(1)  # (K,)
    return (weights * per_k).sum() / normaliser


def anchor_similarity_centered(
    eps_anchor: torch.Tensor, eps_attrs: torch.Tensor, eps_neutral: torch.Tensor, weights: torch.Tensor, normaliser: int
) -> torch.Tensor:
    """L_adv2 of AdvAnchor (Zhao et al. 2024; DESIGN.md 1): L_adv1 on predictions centred at eps*(c_0)."""
    return anchor_similarity(eps_anchor - eps_neutral, eps_attrs - eps_neutral.unsqueeze(0), weights, normaliser)


def denoising(pred: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """||eps_theta(z_t, c) - eps||^2 averaged over elements: the simplified diffusion loss (Ho et al. 2020, Eq. 14)."""
    return F.mse_loss(pred, noise)


def alignment(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||eps_theta(z_t, c_e) - target||^2 averaged over elements (model-based AC, Kumari et al. 2023)."""
    return F.mse_loss(pred, target.detach())


def unlearning_loss(
    eps_erase: torch.Tensor,
    anchor_target: torch.Tensor,
    eps_neutral: torch.Tensor,
    neutral_target: torch.Tensor,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AdvAnchor's unlearning loss (DESIGN.md 1): alignment to eps*(c_a; delta) + lambda x preservation of c_0.

    Returns (total, alignment, preservation).
    """
    align = alignment(eps_erase, anchor_target)
    keep = alignment(eps_neutral, neutral_target)
    return align + lam * keep, align, keep


def esd_target(eps_uncond: torch.Tensor, eps_concept: torch.Tensor, eta: float) -> torch.Tensor:
    """ESD's negatively guided target eps*(x_t) - eta (eps*(x_t, c) - eps*(x_t)) (Gandikota et al. 2023, Sec. 3)."""
    return eps_uncond - eta * (eps_concept - eps_uncond)


def attention_mass(probs: list[torch.Tensor], positions: list[int]) -> torch.Tensor:
    """FMN's attention re-steering loss (Zhang et al. 2023, Sec. 3.1): the attention on the concept's tokens.

    probs: per cross-attention layer, softmax(QK^T / sqrt(d)) of shape (B * heads, pixels, tokens); the
    mass on `positions` is averaged over heads and pixels, and summed over layers.
    """
    return sum(p[..., positions].sum(-1).mean() for p in probs)
