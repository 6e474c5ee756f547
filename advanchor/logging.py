"""Experiment tracking: W&B that falls back to offline mode, and image grids for it."""

from __future__ import annotations

import os
import re

import torch
from PIL import Image
from pytorch_lightning.loggers import WandbLogger


def wandb_has_credentials() -> bool:
    """An API key in the environment or a netrc entry written by `wandb login`."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.isfile(netrc) and "api.wandb.ai" in open(netrc).read()


SECRET_KEY = re.compile(r"(^|_)(api_?key|token|secret|password)$", re.IGNORECASE)


def redact(config):
    """`config` (nested dicts and lists) with the value of every key that names a secret replaced: the run's
    config.yaml and its W&B config are shared, an API key must never reach them."""
    if isinstance(config, dict):
        return {k: "<redacted>" if SECRET_KEY.search(str(k)) else redact(v) for k, v in config.items()}
    if isinstance(config, list):
        return [redact(v) for v in config]
    return config


class AutoWandbLogger(WandbLogger):
    """WandbLogger that runs offline when no credentials are found (sync later with `wandb sync`)."""

    def __init__(self, project: str = "advanchor", offline: bool | None = None, **kwargs):
        if offline is None:
            offline = os.environ.get("WANDB_MODE") == "offline" or not wandb_has_credentials()
        super().__init__(project=project, offline=offline, **kwargs)
        if "anonymous" in self._wandb_init and self._wandb_init["anonymous"] is None:
            # Lightning passes anonymous=None, which wandb warns is deprecated even unset: leave it to wandb.
            del self._wandb_init["anonymous"]


def image_grid(images: torch.Tensor, rows: int) -> Image.Image:
    """(N, 3, H, W) floats in [0, 1] -> one PIL image with `rows` rows."""
    n, c, h, w = images.shape
    cols = -(-n // rows)
    padded = torch.ones(rows * cols, c, h, w)
    padded[:n] = images.clamp(0, 1)
    grid = padded.view(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)  # (rows*h, cols*w, 3)
    return Image.fromarray((grid * 255).round().byte().numpy())
