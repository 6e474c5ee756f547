"""Loading erasure artifacts onto a pipeline: one or several LoRAs as diffusers adapters, UNet deltas summed."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import safetensors
from diffusers import StableDiffusionPipeline
from peft.tuners.lora import LoraLayer

from .export import DELTA_FILE, DELTA_FORMAT, add_unet_delta, check_unet_delta, read_delta
from .quiet import dropped

LORA_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")  # the last four: pickles, refused by check_lora
SOURCE_HINT = "pass a run folder, its lora/ directory or a unet_delta.safetensors file"


def check_lora(lora: str | os.PathLike, allow_pickle: bool = False) -> Path:
    """The weights file of a LoRA (a directory holding one, or the file), after checking that it exists
    and, for safetensors, that its header and tensors are whole."""
    path = Path(lora)
    if not path.exists():
        raise FileNotFoundError(f"LoRA {str(lora)!r} does not exist; pass the run's lora/ directory")
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        raise FileNotFoundError(
            f"LoRA directory {str(lora)!r} holds no .safetensors file; pass the run's lora/ directory"
        )
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


def quiet_deletions() -> None:
    """Inside `warnings.catch_warnings()`: drop peft's note, as adapters are taken off, of the adapter it falls
    back to; they are being taken off because loading failed, and that error is what the user sees."""
    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")


def load_lora(pipe: StableDiffusionPipeline, weights: Path, adapter_name: str, model: str) -> None:
    """Load a checked LoRA weights file into `pipe` under `adapter_name`; a LoRA made for another base
    model raises one line that says so."""
    try:
        # Our adapters train the UNet only; diffusers notes that the text encoder has no LoRA keys. A LoRA
        # that does not fit is logged in full before it raises; the raise below says it in one line.
        with (
            dropped("diffusers.loaders.lora_base", "No LoRA keys associated to"),
            dropped("diffusers.loaders.peft", "was unsuccessful with the following error"),
            warnings.catch_warnings(),
        ):
            # peft warns at every adapter after the first that there are several: stacking them is the point.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            # A LoRA that does not fit is taken off again by diffusers: the one-line error below says it.
            quiet_deletions()
            pipe.load_lora_weights(str(weights.parent), weight_name=weights.name, adapter_name=adapter_name)
    except (RuntimeError, ValueError, KeyError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "size mismatch" in line), lines[0] if lines else "")
        raise ValueError(
            f"LoRA {str(weights)!r} does not fit the model {model!r} ({reason}); it was made for another base "
            "model: pass the one it was trained from (model.pretrained in its config.yaml)"
        ) from err


@dataclass(frozen=True)
class Eraser:
    """One erasure artifact: a LoRA weights file or a UNet delta file."""

    path: Path
    kind: str  # "lora" or "delta"


def _is_delta(path: Path) -> bool:
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            return (f.metadata() or {}).get("format") == DELTA_FORMAT
    except (safetensors.SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file ({err}); {SOURCE_HINT}") from err


def resolve(source: str | os.PathLike) -> Eraser:
    """What `source` holds: a run folder (its lora/, else its UNet delta), a LoRA directory, or one file."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"eraser {str(source)!r} does not exist; {SOURCE_HINT}")
    if path.is_file():
        if path.suffix not in LORA_SUFFIXES:
            raise ValueError(f"eraser {str(source)!r} is not a .safetensors file; {SOURCE_HINT}")
        if path.suffix == ".safetensors" and _is_delta(path):
            return Eraser(path, "delta")
        return Eraser(check_lora(path), "lora")
    # A run folder of UCE holds both: its LoRA is the same edit, and it stacks as an adapter.
    if (path / "lora").is_dir():
        return Eraser(check_lora(path / "lora"), "lora")
    if (path / DELTA_FILE).is_file():
        return Eraser(path / DELTA_FILE, "delta")
    if any(path.glob("*.safetensors")):
        return Eraser(check_lora(path), "lora")
    raise FileNotFoundError(f"eraser {str(source)!r} holds no lora/, {DELTA_FILE} nor LoRA file; {SOURCE_HINT}")


def _active_weights(pipe: StableDiffusionPipeline) -> dict[str, float]:
    """The adapters active on the UNet now, with the weight each was set to (its scaling over alpha/r)."""
    layer = next((m for m in pipe.unet.modules() if isinstance(m, LoraLayer)), None)
    if layer is None:
        return {}
    weights = {}
    for name in layer.active_adapters:
        base = layer.lora_alpha[name] / (layer.r[name] ** 0.5 if layer.use_rslora[name] else layer.r[name])
        weights[name] = layer.scaling[name] / base
    return weights


def load_erasers(
    pipe: StableDiffusionPipeline,
    sources: list[str | os.PathLike],
    weights: list[float] | None = None,
    prefix: str = "eraser",
) -> list[str]:
    """Load several erasure artifacts onto `pipe` together and return the new adapters' names.

    LoRAs become diffusers adapters `<prefix>0`, `<prefix>1`, ... and are activated beside the adapters
    already active (which keep their weights), each at its weight (default 1); `pipe.set_adapters` or
    `pipe.disable_lora()` changes that later. UNet deltas are added to the weights in place, each times its
    weight, and cannot be taken off again: load the pipeline anew for the original. Every file is read and
    checked before the first is loaded, so a bad one leaves `pipe` as it was.
    """
    weights = [1.0] * len(sources) if weights is None else list(weights)
    if len(weights) != len(sources):
        raise ValueError(f"{len(weights)} weights for {len(sources)} erasers; give one weight per eraser")
    erasers = [resolve(s) for s in sources]
    deltas = {e.path: read_delta(e.path) for e in erasers if e.kind == "delta"}
    for path, delta in deltas.items():
        check_unet_delta(pipe.unet, delta, str(path))
    model = pipe.name_or_path or "the pipeline"
    active = _active_weights(pipe)
    taken = set(pipe.get_list_adapters().get("unet", []))
    loras = [(e.path, w) for e, w in zip(erasers, weights) if e.kind == "lora"]
    names, index = [], 0
    for _ in loras:
        while f"{prefix}{index}" in taken:
            index += 1
        names.append(f"{prefix}{index}")
        index += 1
    # LoRAs first: one that does not fit the model fails while loading, and those loaded before it are taken
    # off again; the deltas, checked above, cannot fail.
    for done, (name, (path, _)) in enumerate(zip(names, loras)):
        try:
            load_lora(pipe, path, name, model)
        except ValueError:
            loaded = set(pipe.get_list_adapters().get("unet", []))
            stale = [n for n in names[: done + 1] if n in loaded]
            if stale:
                with warnings.catch_warnings():
                    quiet_deletions()
                    pipe.delete_adapters(stale)
            if active:
                pipe.set_adapters(list(active), list(active.values()))
            raise
    for eraser, weight in zip(erasers, weights):
        if eraser.kind == "delta":
            add_unet_delta(pipe.unet, deltas[eraser.path], weight)
    if names:
        pipe.set_adapters([*active, *names], [*active.values(), *(w for _, w in loras)])
    return names
