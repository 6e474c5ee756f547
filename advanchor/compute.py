"""How the models run (`compute:` in a config): gradient checkpointing, torch.compile, the attention kernel.

None of these changes what a method computes beyond float rounding (tests/test_compute.py measures how
far), so they are one section shared by every method rather than method arguments. Mixed precision is the
Trainer's own `trainer.precision` (bf16-mixed); docs/gpu.md says when to use each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

ATTENTION = ("sdpa", "eager")


@dataclass
class ComputeOptions:
    """Memory and speed settings of the pipeline being edited; results change by float rounding only."""

    gradient_checkpointing: bool = False  # the UNet recomputes its blocks' activations in backward: less memory
    compile: bool = False  # torch.compile the UNet in place (parameter names, state_dict and export unchanged)
    attention: str = "sdpa"  # sdpa: torch's fused scaled_dot_product_attention; eager: plain matmul and softmax

    def check(self) -> ComputeOptions:
        if self.attention not in ATTENTION:
            raise ValueError(f"unknown compute.attention {self.attention!r}; use one of: {', '.join(ATTENTION)}")
        return self

    def apply(self, pipe: StableDiffusionPipeline) -> None:
        """Set the options on `pipe`'s UNet (and the text encoder's attention) in place."""
        self.check()
        unet = pipe.unet
        unet.set_attn_processor(AttnProcessor2_0() if self.attention == "sdpa" else AttnProcessor())
        pipe.text_encoder.set_attn_implementation(self.attention)
        # The UNet checkpoints whenever grad is enabled, in eval mode too (diffusers tests
        # torch.is_grad_enabled(), not self.training), and not in the frozen passes under no_grad. The text
        # encoder is left alone: transformers checkpoints in training mode only, which the frozen modules
        # never enter, and its activations are small beside the UNet's.
        if self.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        else:
            unet.disable_gradient_checkpointing()
        if self.compile:
            unet.compile()


def check_precision(precision: str, device: torch.device) -> None:
    """bf16 on a GPU without bfloat16 would fail in torch's autocast at the first step; fail before any work."""
    if "bf16" in str(precision) and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"trainer.precision {precision} needs bfloat16, which this GPU lacks; use --trainer.precision=16-mixed "
            "or 32-true"
        )
