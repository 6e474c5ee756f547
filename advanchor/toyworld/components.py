"""Configs of the toy pipeline's components: Stable Diffusion 1.x architecture, scaled down."""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .render import SIZE
from .tokenizer import MAX_LENGTH

LATENT_CHANNELS = 4
LATENT_SIZE = SIZE // 2
TEXT_DIM = 64


def build_vae() -> AutoencoderKL:
    """KL autoencoder that maps 32x32 RGB to 4x16x16 latents (one downsampling stage)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 32),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=16,
        sample_size=SIZE,
        # Self-attention at 16x16 triples the CPU cost of a step and buys nothing on these scenes.
        mid_block_add_attention=False,
    )


def build_text_encoder(vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> CLIPTextModel:
    """A 2-layer CLIP text transformer over the toy vocabulary."""
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_DIM,
        intermediate_size=4 * TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        projection_dim=TEXT_DIM,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
    )
    return CLIPTextModel(config)


def build_unet() -> UNet2DConditionModel:
    """Cross-attention UNet on 16x16 latents, with `attn2` blocks at 8x8 and 4x4 and in the middle.

    Attention at 16x16 would cost 3-4x the CPU time per step, so the first level is convolutional.
    """
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 96),
        layers_per_block=1,
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=16,
    )


def build_scheduler() -> DDIMScheduler:
    """Stable Diffusion 1.x noise schedule (scaled linear, 1000 steps, epsilon prediction)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
