"""LPIPS between the original and the edited model's images at the same prompt and seed (local weights only)."""

from __future__ import annotations

import os

import torch

from .weights import hub_with, require

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet, LPIPS's default backbone


class LPIPS:
    """LPIPS (Zhang et al., 2018) with the AlexNet backbone; its linear heads ship in the `lpips` wheel."""

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu"):
        with hub_with(ALEXNET_FILE, "LPIPS AlexNet backbone", weights):
            lpips = require("lpips")
            self.model = lpips.LPIPS(net="alex", verbose=False).eval().to(device)

    @torch.no_grad()
    def __call__(self, original: torch.Tensor, edited: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Per-pair distances (N,) of paired (N, 3, H, W) batches in [0, 1]."""
        device = next(self.model.parameters()).device
        out = [
            self.model(a.to(device) * 2 - 1, b.to(device) * 2 - 1).flatten().cpu()  # (B,1,1,1)->(B,)
            for a, b in zip(original.split(batch_size), edited.split(batch_size))
        ]
        return torch.cat(out)
