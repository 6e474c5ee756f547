"""advanchor: concept erasure for text-to-image diffusion models with adversarial anchors."""

from .quiet import silence_import_notices

silence_import_notices()

from .api import ErasureResult, erase  # noqa: E402  (after the filters: diffusers' import emits a notice)
from .stack import load_erasers  # noqa: E402

__all__ = ["erase", "ErasureResult", "load_erasers"]
