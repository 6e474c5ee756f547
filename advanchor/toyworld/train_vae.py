"""Train the toy autoencoder on renders (reconstruction + a light KL term, as SD's VAE)."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from .components import build_vae

KL_WEIGHT = 1e-6


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """(N, 32, 32, 3) uint8 -> (N, 3, 32, 32) float in [-1, 1], the VAE's input range."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(images: np.ndarray, steps: int, batch_size: int = 32, lr: float = 1e-3, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    vae = build_vae().train()
    data = to_model_range(images)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=max(0.05, 2 / steps))
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(steps), desc="vae", mininterval=5)
    for _ in bar:
        x = data[torch.randint(len(data), (batch_size,), generator=gen)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        rec = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        loss = rec + KL_WEIGHT * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(rec=f"{rec.item():.4f}", refresh=False)
    return vae.eval()


@torch.no_grad()
def encode(vae: AutoencoderKL, images: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """Posterior means of `images`, unscaled: (N, 4, 16, 16)."""
    chunks = [
        vae.encode(to_model_range(images[i : i + batch_size])).latent_dist.mean
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)
