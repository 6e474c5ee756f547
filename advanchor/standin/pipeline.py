"""A stand-in for `CompVis/stable-diffusion-v1-4`: its architecture with random weights, written offline.

The components are built from the published configurations of SD 1.4's UNet, VAE and CLIP ViT-L/14
text encoder, with the real tokenizer (`tokenizer.py`), so that token positions, shapes, dtypes, time
and memory are those of the real model; only what it draws is noise.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from .tokenizer import VOCAB_SIZE, write_clip_tokenizer

# diffusers' unet/config.json of CompVis/stable-diffusion-v1-4.
UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
# vae/config.json.
VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
# text_encoder/config.json (CLIP ViT-L/14's text tower; the legacy special-token ids are the published ones).
TEXT_ENCODER = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 1.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}
# scheduler/scheduler_config.json.
SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def build_standin(unet: dict | None = None, vae: dict | None = None, text_encoder: dict | None = None, seed: int = 0):
    """The pipeline in memory: SD 1.4's configurations unless others are given (tests shrink them)."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = write_clip_tokenizer(tmp)
    return StableDiffusionPipeline(
        vae=AutoencoderKL(**(vae or VAE)),
        text_encoder=CLIPTextModel(CLIPTextConfig(**(text_encoder or TEXT_ENCODER))),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**(unet or UNET)),
        scheduler=PNDMScheduler(**SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def write_standin(out: str | Path, overwrite: bool = False, **configs) -> Path:
    """Save the stand-in in diffusers format at `out`, through a temporary folder renamed when complete."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it, or choose another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        build_standin(**configs).save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
