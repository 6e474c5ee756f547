"""Loading a diffusers pipeline, choosing what trains, LoRA adapters and the frozen view."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from .quiet import dropped

TRAINABLE_SETS = ("attn2", "attn2-kv", "non-attn2", "ff-out", "all", "lora")
ADAPTER = "advanchor"


@dataclass
class LoraOptions:
    """LoRA adapters on the UNet; `target_modules` is a regex over module names (peft semantics)."""

    rank: int = 4
    alpha: float = 4.0
    target_modules: str = r".*attn2\.(to_q|to_k|to_v|to_out\.0)"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"model.lora.rank must be at least 1, got {self.rank}; a typical rank is 4")
        if not self.alpha > 0:
            raise ValueError(f"model.lora.alpha must be above 0, got {self.alpha}; alpha = rank keeps the scale at 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.lora.dropout must be in [0, 1), got {self.dropout}")
        try:
            re.compile(self.target_modules)
        except re.error as err:
            raise ValueError(f"model.lora.target_modules {self.target_modules!r} is not a regex ({err})") from None


def resolve_path(path: str) -> str:
    if path == "toy":
        from .toyworld import pipeline_path

        return pipeline_path()
    return path


def _looks_like_hub_id(path: str) -> bool:
    """`owner/name`, as the hub spells a repository, rather than a filesystem path."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", path) is not None


def model_source(path: str) -> tuple[str, Path]:
    """The resolved name of a model and its local path, after the checks that need no loading: a local
    path must exist and hold a diffusers pipeline, anything else must be spelled as a hub id."""
    resolved = resolve_path(path)
    local = Path(resolved).expanduser()
    if local.exists():
        if not (local / "model_index.json").is_file():
            raise FileNotFoundError(
                f"{resolved} is not a diffusers pipeline (no model_index.json); point model.pretrained (or --model) "
                "at one"
            )
    elif not _looks_like_hub_id(resolved):
        raise FileNotFoundError(f"model path {resolved} does not exist; fix model.pretrained (or --model)")
    return resolved, local


def _from_pretrained(path: str, dtype: str, local_only: bool, allow_pickle: bool) -> StableDiffusionPipeline:
    return StableDiffusionPipeline.from_pretrained(
        path,
        dtype=getattr(torch, dtype),
        safety_checker=None,
        requires_safety_checker=False,
        local_files_only=local_only,
        # None lets diffusers fall back to pickle (.bin) weights where a folder has no safetensors.
        use_safetensors=None if allow_pickle else True,
    )


def load_pipeline(path: str, dtype: str = "float32", allow_pickle: bool = False) -> StableDiffusionPipeline:
    """A Stable Diffusion pipeline from a local diffusers directory or a hub id (from the cache first, then
    downloaded unless HF_HUB_OFFLINE=1). Weights load from safetensors only unless `allow_pickle`: a pickle
    file can run code when it is loaded."""
    resolved, local = model_source(path)
    try:
        try:
            pipe = _from_pretrained(str(local) if local.exists() else resolved, dtype, True, allow_pickle)
        except OSError:
            if local.exists() or os.environ.get("HF_HUB_OFFLINE") == "1":
                raise
            # The download's own failure is reported below, as one line.
            with dropped("diffusers.pipelines.pipeline_utils", "Couldn't connect to the Hub"):
                pipe = _from_pretrained(resolved, dtype, False, allow_pickle)
    except (OSError, ValueError) as err:
        if local.exists():
            reason = " ".join(str(err).split())
            raise ValueError(
                f"cannot load the pipeline in {resolved}: {reason[:300]}; it must be a Stable Diffusion pipeline in "
                "diffusers format with safetensors weights (pickle .bin weights: only with --allow_pickle, from a "
                "source you trust)"
            ) from err
        raise FileNotFoundError(
            f"{resolved!r} is neither a local directory nor a hub id in the local Hugging Face cache, and it "
            "could not be downloaded (offline?); download it where there is network (hf download "
            f"{resolved}) or pass a local diffusers directory"
        ) from err
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    return pipe


def _is_attn2(name: str) -> bool:
    return ".attn2." in f".{name}"


def trainable_parameters(unet: UNet2DConditionModel, trainable: str) -> dict[str, torch.nn.Parameter]:
    """The parameters of a named set: attn2 (ESD-x), attn2-kv (ESD-x-strict), non-attn2 (ESD-u), ff-out (the
    feed-forward output projections' weights, ConceptPrune's), all."""
    rules = {
        "attn2": _is_attn2,
        "attn2-kv": lambda n: _is_attn2(n) and re.search(r"attn2\.(to_k|to_v)\.", n) is not None,
        "non-attn2": lambda n: not _is_attn2(n),
        "ff-out": lambda n: n.endswith(".ff.net.2.weight"),
        "all": lambda n: True,
    }
    if trainable not in rules:
        raise ValueError(f"unknown trainable set {trainable!r}; use one of: {', '.join(TRAINABLE_SETS)}")
    chosen = {n: p for n, p in unet.named_parameters() if rules[trainable](n)}
    if not chosen:
        raise ValueError(f"the UNet has no parameters in set {trainable!r}")
    return chosen


def _lora_layers(unet: torch.nn.Module) -> list:
    """The UNet's peft LoRA layers (none before any adapter is added)."""
    from peft.tuners.lora import LoraLayer

    return [m for m in unet.modules() if isinstance(m, LoraLayer)]


def add_lora(unet: UNet2DConditionModel, options: LoraOptions) -> dict[str, torch.nn.Parameter]:
    """Attach a LoRA adapter named `advanchor` beside any adapter the user has active; returns its
    parameters (the only trainable ones)."""
    from peft import LoraConfig

    layers = _lora_layers(unet)
    previous = list(dict.fromkeys(a for layer in layers for a in layer.active_adapters))
    config = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=options.target_modules,
        init_lora_weights=True,
    )
    try:
        with warnings.catch_warnings():
            # peft warns whenever a second adapter joins a model; keeping the user's adapter is intended here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            unet.add_adapter(config, adapter_name=ADAPTER)
    except ValueError as err:
        if "not found" not in str(err):
            raise
        raise ValueError(
            f"LoRA target_modules {options.target_modules!r} matched no UNet module; fix the regex"
        ) from err
    if previous:
        # diffusers' add_adapter leaves only the new adapter active: the user's model is the pipeline with
        # their adapters on, so they stay on (and frozen) beside ours.
        for layer in _lora_layers(unet):
            layer.set_adapter([*previous, ADAPTER])
        unet.requires_grad_(False)
    params = {n: p for n, p in unet.named_parameters() if f".{ADAPTER}." in n}
    for p in params.values():
        p.requires_grad_(True)
    return params


class FrozenView:
    """The original model's predictions from the UNet being trained, without a second copy.

    LoRA: our adapter's scaling is set to zero (exactly the pipeline as it came, the user's own adapters
    still on). Other sets: the trained parameters' original values are kept once, and swapped in by
    pointer for the duration of a frozen pass.
    """

    def __init__(self, unet: UNet2DConditionModel, trained: dict[str, torch.nn.Parameter], lora: bool):
        self.unet, self.trained, self.lora = unet, trained, lora
        self._originals = {} if lora else {n: p.detach().clone() for n, p in trained.items()}

    @property
    def originals(self) -> dict[str, torch.Tensor]:
        """The trained parameters' original values, on each parameter's current device and dtype.

        The pipeline or the LightningModule may move after the view was made (to the GPU, to float64), so
        the copies follow their parameters on use. They move in place, as the parameters do: a round trip
        through a lower precision leaves both at that precision's values.
        """
        for n, p in self.trained.items():
            original = self._originals.get(n)
            if original is not None and (original.device != p.device or original.dtype != p.dtype):
                self._originals[n] = original.to(device=p.device, dtype=p.dtype)
        return self._originals

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self.lora:
            layers = [layer for layer in _lora_layers(self.unet) if ADAPTER in layer.scaling]
            scales = [layer.scaling[ADAPTER] for layer in layers]
            for layer in layers:
                layer.scaling[ADAPTER] = 0.0
            try:
                yield
            finally:
                for layer, scale in zip(layers, scales):
                    layer.scaling[ADAPTER] = scale
            return
        originals = self.originals
        live = {n: p.data for n, p in self.trained.items()}
        for n, p in self.trained.items():
            p.data = originals[n]
        try:
            yield
        finally:
            for n, p in self.trained.items():
                p.data = live[n]
