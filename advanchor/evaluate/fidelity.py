"""Fidelity: how far the edited model's images moved from the original's at the same prompt and seed."""

from __future__ import annotations

import torch


def pixel_distance(original: torch.Tensor, edited: torch.Tensor) -> float:
    """Mean absolute pixel difference of paired (N, 3, H, W) batches in [0, 1]: 0 = unchanged, 1 = inverted."""
    if original.shape != edited.shape:
        raise ValueError(f"fidelity needs paired images; got shapes {tuple(original.shape)} and {tuple(edited.shape)}")
    return float((original.float() - edited.float()).abs().mean())
