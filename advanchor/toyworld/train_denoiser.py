"""Joint training of the toy text encoder and UNet on cached latents (Lightning)."""

from __future__ import annotations

import copy

import numpy as np
import pytorch_lightning as pl
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from torch.utils.data import DataLoader, IterableDataset
from transformers import CLIPTextModel, PreTrainedTokenizerFast

from .captions import caption
from .render import Scene


class CaptionedLatents(IterableDataset):
    """Endless seeded batches of (scaled latents, freshly sampled captions)."""

    def __init__(self, latents: torch.Tensor, scenes: list[Scene], batch_size: int, seed: int):
        self.latents, self.scenes, self.batch_size, self.seed = latents, scenes, batch_size, seed

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        while True:
            idx = rng.integers(len(self.scenes), size=self.batch_size)
            yield self.latents[torch.from_numpy(idx)], [caption(self.scenes[i], rng) for i in idx]


class DenoiserModule(pl.LightningModule):
    """Epsilon-prediction loss with min-SNR weighting (Hang et al. 2023) and EMA weights."""

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: PreTrainedTokenizerFast,
        scheduler: DDIMScheduler,
        lr: float = 1e-3,
        warmup_steps: int = 200,
        ema_decay: float = 0.999,
        snr_gamma: float = 5.0,
    ):
        super().__init__()
        self.unet, self.text_encoder, self.tokenizer, self.scheduler = unet, text_encoder, tokenizer, scheduler
        self.lr, self.warmup_steps, self.ema_decay, self.snr_gamma = lr, warmup_steps, ema_decay, snr_gamma
        self.ema = [copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)]
        self.register_buffer("alphas_cumprod", scheduler.alphas_cumprod.clone().float(), persistent=False)

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.device)
        return self.text_encoder(ids)[0]  # (B, L, D)

    def training_step(self, batch, batch_idx):
        latents, captions = batch
        noise = torch.randn_like(latents)
        t = torch.randint(0, len(self.alphas_cumprod), (latents.shape[0],), device=self.device)
        noisy = self.scheduler.add_noise(latents, noise, t)
        pred = self.unet(noisy, t, self.encode_text(captions)).sample
        abar = self.alphas_cumprod[t]
        snr = abar / (1 - abar)
        weight = snr.clamp(max=self.snr_gamma) / snr
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        decay = min(self.ema_decay, (1 + self.global_step) / (10 + self.global_step))
        with torch.no_grad():
            for ema, live in zip(self.ema, (self.unet, self.text_encoder)):
                for e, p in zip(ema.parameters(), live.parameters()):
                    e.lerp_(p, 1 - decay)

    def configure_optimizers(self):
        params = list(self.unet.parameters()) + list(self.text_encoder.parameters())
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.01)
        total = self.trainer.max_steps
        warm = self.warmup_steps

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(1, total - warm)
            return 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))

        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule), "interval": "step"},
        }


def train_denoiser(
    unet,
    text_encoder,
    tokenizer,
    scheduler,
    latents: torch.Tensor,
    scenes: list[Scene],
    steps: int,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = 1e-3,
) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """Returns the EMA weights of the UNet and text encoder."""
    pl.seed_everything(seed, workers=True, verbose=False)
    module = DenoiserModule(unet, text_encoder, tokenizer, scheduler, lr=lr)
    loader = DataLoader(CaptionedLatents(latents, scenes, batch_size, seed), batch_size=None)
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=50,
    )
    trainer.fit(module, loader)
    unet_ema, text_ema = module.ema
    return unet_ema, text_ema
