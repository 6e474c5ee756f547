"""FID between the original and the edited model's images (pytorch-fid's Inception, local weights only)."""

from __future__ import annotations

import os

import torch

from .weights import hub_with, require

FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid's port of the TF FID Inception


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of (N, F) features, in float64."""
    x = features.double()
    return x.mean(0), torch.cov(x.T)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Heusel et al. (2017), FID: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))."""
    vals, vecs = torch.linalg.eigh(sigma1.double())
    root1 = vecs @ vals.clamp(min=0).sqrt().diag() @ vecs.T
    # Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)); the latter is symmetric, so eigvalsh is stable.
    cross = torch.linalg.eigvalsh(root1 @ sigma2.double() @ root1).clamp(min=0).sqrt().sum()
    diff = mu1.double() - mu2.double()
    return float(diff @ diff + sigma1.double().trace() + sigma2.double().trace() - 2 * cross)


class InceptionFeatures:
    """2048-d pool features of pytorch-fid's Inception v3 for (N, 3, H, W) batches in [0, 1]."""

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "cpu"):
        with hub_with(FID_INCEPTION_FILE, "FID Inception", weights):
            inception = require("pytorch_fid.inception")
            block = inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]
            self.model = inception.InceptionV3([block]).eval().to(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        device = next(self.model.parameters()).device
        chunks = [
            self.model(images[i : i + batch_size].float().to(device))[0].flatten(1).cpu()  # (B,2048,1,1)->(B,2048)
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(chunks)


def fid(original: torch.Tensor, edited: torch.Tensor, features: InceptionFeatures) -> float:
    """FID between two image sets (each needs at least two images for a covariance)."""
    if min(len(original), len(edited)) < 2:
        raise ValueError("FID needs at least two images per set; use more prompts or seeds")
    return frechet_distance(*gaussian_stats(features(original)), *gaussian_stats(features(edited)))
