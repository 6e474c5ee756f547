"""Load an edited model (base + LoRA directory or UNet delta) with a view of its original."""

from __future__ import annotations

from pathlib import Path

import safetensors
from diffusers import StableDiffusionPipeline

from ..export import load_unet_delta, read_delta
from ..models import ADAPTER, FrozenView, load_pipeline
from ..quiet import dropped


def check_lora(lora: str, allow_pickle: bool = False) -> Path:
    """The weights file of a LoRA (a directory holding one, or the file), after checking that it exists
    and, for safetensors, that its header and tensors are whole."""
    path = Path(lora)
    if not path.exists():
        raise FileNotFoundError(f"LoRA {lora!r} does not exist; pass the run's lora/ directory")
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"LoRA directory {lora!r} holds no .safetensors file; pass the run's lora/ directory")
    weights = files[0]
    if weights.suffix != ".safetensors":
        if not allow_pickle:
            raise ValueError(
                f"LoRA {weights} is a pickle file, which can run code when loaded; convert it to safetensors, or "
                "pass --allow-pickle if you trust its source"
            )
        return weights
    try:
        with safetensors.safe_open(weights, framework="pt") as f:
            for name in f.keys():
                f.get_slice(name)[:]  # reads every tensor: a truncated file fails here, not halfway into the UNet
    except (safetensors.SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(
            f"LoRA file {weights} is corrupt or truncated ({' '.join(str(err).split())}); export it again"
        ) from err
    return weights


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
        try:
            # Our adapters train the UNet only; diffusers notes that the text encoder has no LoRA keys. A LoRA
            # that does not fit is logged in full before it raises; the raise below says it in one line.
            with (
                dropped("diffusers.loaders.lora_base", "No LoRA keys associated to"),
                dropped("diffusers.loaders.peft", "was unsuccessful with the following error"),
            ):
                # Under our adapter name: the original() view turns off that adapter only.
                pipe.load_lora_weights(str(weights.parent), weight_name=weights.name, adapter_name=ADAPTER)
        except (RuntimeError, ValueError, KeyError) as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = next((line for line in lines if "size mismatch" in line), lines[0] if lines else "")
            raise ValueError(
                f"LoRA {lora!r} does not fit the model {model!r} ({reason}); it was made for another base model: "
                "pass the one it was trained from (model.pretrained in its config.yaml)"
            ) from err
        return pipe, FrozenView(pipe.unet, {}, lora=True)
    params = dict(pipe.unet.named_parameters())
    # The view keeps the touched parameters' original values, so it must exist before the delta lands.
    touched = {n: params[n] for n in delta if n in params}
    original = FrozenView(pipe.unet, touched, lora=False)
    if unet_delta:
        load_unet_delta(pipe, unet_delta)
    return pipe, original
