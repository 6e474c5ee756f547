"""advanchor: concept erasure for text-to-image diffusion models with adversarial anchors."""

from .api import ErasureResult, erase

__all__ = ["erase", "ErasureResult"]
