"""Load an edited model (base + LoRA directory or UNet delta) with a view of its original."""

from __future__ import annotations

from pathlib import Path

from diffusers import StableDiffusionPipeline

from ..export import load_unet_delta, read_delta
from ..models import FrozenView, load_pipeline
from ..quiet import dropped


def load_edited(
    model: str, lora: str | None = None, unet_delta: str | None = None
) -> tuple[StableDiffusionPipeline, FrozenView]:
    """The edited pipeline, and a view that turns it back into the original for a `with` block."""
    pipe = load_pipeline(model)
    if lora and unet_delta:
        raise ValueError("give a LoRA directory or a UNet delta, not both")
    if lora:
        if not Path(lora).exists():
            raise FileNotFoundError(f"LoRA {lora!r} does not exist; pass the run's lora/ directory")
        # Our adapters train the UNet only; diffusers notes that the text encoder has no LoRA keys.
        with dropped("diffusers.loaders.lora_base", "No LoRA keys associated to"):
            pipe.load_lora_weights(lora)
        return pipe, FrozenView(pipe.unet, {}, lora=True)
    params = dict(pipe.unet.named_parameters())
    # The view keeps the touched parameters' original values, so it must exist before the delta lands.
    touched = {n: params[n] for n in read_delta(Path(unet_delta)) if n in params} if unet_delta else {}
    original = FrozenView(pipe.unet, touched, lora=False)
    if unet_delta:
        load_unet_delta(pipe, unet_delta)
    return pipe, original
