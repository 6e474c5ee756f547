"""Load an edited model (base + LoRA directory or UNet delta) with a view of its original."""

from __future__ import annotations

from pathlib import Path

from diffusers import StableDiffusionPipeline

from ..export import add_unet_delta, check_unet_delta, read_delta
from ..models import ADAPTER, FrozenView, load_pipeline
from ..stack import check_lora, load_lora


def load_edited(
    model: str, lora: str | None = None, unet_delta: str | None = None, allow_pickle: bool = False
) -> tuple[StableDiffusionPipeline, FrozenView]:
    """The edited pipeline, and a view that turns it back into the original for a `with` block."""
    if lora and unet_delta:
        raise ValueError("give a LoRA directory or a UNet delta, not both")
    weights = check_lora(lora, allow_pickle) if lora else None
    delta = read_delta(Path(unet_delta)) if unet_delta else {}
    pipe = load_pipeline(model, allow_pickle=allow_pickle)
    if weights is not None:
        # Under our adapter name: the original() view turns off that adapter only.
        load_lora(pipe, weights, ADAPTER, model)
        return pipe, FrozenView(pipe.unet, {}, lora=True)
    params = dict(pipe.unet.named_parameters())
    # The view keeps the touched parameters' original values, so it must exist before the delta lands.
    touched = {n: params[n] for n in delta if n in params}
    original = FrozenView(pipe.unet, touched, lora=False)
    if unet_delta:
        check_unet_delta(pipe.unet, delta, unet_delta)
        add_unet_delta(pipe.unet, delta)
    return pipe, original
