"""Train the toy classifier on fresh renders, half of them passed through the VAE."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from .classifier import HEADS, ToyClassifier
from .render import Scene, render_dataset
from .train_vae import to_model_range


def labels(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([names.index(getattr(s, k)) for s in scenes]) for k, names in HEADS.items()}


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: np.ndarray) -> torch.Tensor:
    """VAE round trip, as [0, 1] floats: teaches the classifier the look of decoded images."""
    return ((vae.decode(vae.encode(to_model_range(images)).latent_dist.mean).sample + 1) / 2).clamp(0, 1)


def train_classifier(
    vae: AutoencoderKL, steps: int, pool: int = 12000, batch_size: int = 128, lr: float = 2e-3, seed: int = 0
) -> ToyClassifier:
    torch.manual_seed(seed)
    images, scenes = render_dataset(pool, seed=10_000_000 + seed)
    half = pool // 2
    recon = torch.cat([reconstruct(vae, images[i : i + 500]) for i in range(0, half, 500)])
    data = torch.cat([recon, to_model_range(images[half:]) / 2 + 0.5])  # (pool, 3, 32, 32) in [0, 1]
    targets = labels(scenes)
    model = ToyClassifier().train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=max(0.1, 2 / steps))
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="classifier", mininterval=5)
    for _ in bar:
        idx = torch.randint(pool, (batch_size,), generator=gen)
        x = data[idx]
        x = (x + 0.03 * torch.rand((), generator=gen) * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        target = {k: v[idx] for k, v in targets.items()}
        logits = model(x)
        loss = sum(torch.nn.functional.cross_entropy(logits[k], target[k]) for k in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval()


@torch.no_grad()
def accuracy(model: ToyClassifier, n: int, seed: int) -> dict[str, float]:
    """Per-head accuracy on `n` fresh renders."""
    images, scenes = render_dataset(n, seed)
    logits = model.eval()(to_model_range(images) / 2 + 0.5)
    target = labels(scenes)
    return {k: float((logits[k].argmax(-1) == target[k]).float().mean()) for k in HEADS}
