"""Exporting an edited UNet: diffusers LoRA directories, kohya LoRA files and full-fine-tuning deltas."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import safetensors
import safetensors.torch
import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from peft.utils import get_peft_model_state_dict

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
DELTA_FORMAT = "advanchor-unet-delta"
DELTA_FILE = "unet_delta.safetensors"  # its name in a run folder
DELTA_VERSION = "1"
MASK_FORMAT = "advanchor-mask"

Target = TypeVar("Target", StableDiffusionPipeline, UNet2DConditionModel)


@contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` that replaces `path` on success and is removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a whole file under a temporary name and rename it: a reader finds the old file or the new one."""
    path = Path(path)
    with staged_file(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@contextmanager
def staged_dir(directory: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling of `directory` that replaces it on success and is removed on failure."""
    tmp = directory.with_name(directory.name + ".tmp")
    old = directory.with_name(directory.name + ".old")
    # Fixed sibling names: what a killed export left behind is cleared here instead of piling up.
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        # rename() cannot replace a non-empty directory, so the previous export steps aside first.
        if directory.exists():
            directory.rename(old)
        try:
            tmp.rename(directory)
        except BaseException:
            if old.exists():
                old.rename(directory)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _check_replaceable(directory: Path) -> None:
    """Refuse to replace anything but an earlier LoRA export, so a mistyped path cannot wipe unrelated files."""
    if directory.is_file():
        raise ValueError(f"{directory} is a file; pass a directory for the LoRA export")
    if directory.is_dir():
        others = sorted(p.name for p in directory.iterdir() if p.name != LORA_WEIGHT_NAME)
        if others:
            raise ValueError(
                f"{directory} holds files other than a LoRA export (e.g. {others[0]!r}); pass a new or empty directory"
            )


def _lora_config(unet: torch.nn.Module, adapter_name: str) -> LoraConfig:
    """The peft config of `adapter_name` on `unet`, or an error naming the adapters it has."""
    configs = getattr(unet, "peft_config", {})
    if adapter_name not in configs:
        raise ValueError(
            f"the UNet has no LoRA adapter {adapter_name!r} (it has: {sorted(configs) or 'none'}); "
            "pass adapter_name= one of those, or add one with unet.add_adapter(LoraConfig(...))"
        )
    return configs[adapter_name]


def _write_lora(state: dict[str, torch.Tensor], config: LoraConfig, directory: Path) -> Path:
    directory = Path(directory)
    _check_replaceable(directory)
    with staged_dir(directory) as tmp:
        StableDiffusionPipeline.save_lora_weights(
            tmp,
            unet_lora_layers=state,
            # Without the config diffusers sets lora_alpha to the rank on load, rescaling the edit by r / alpha.
            unet_lora_adapter_metadata=config.to_dict(),
        )
    return directory


def save_lora(unet: UNet2DConditionModel, directory: str | os.PathLike, adapter_name: str = "default") -> Path:
    """Write the UNet's LoRA adapter as a diffusers LoRA directory that `pipe.load_lora_weights` reads; returns it."""
    config = _lora_config(unet, adapter_name)
    return _write_lora(get_peft_model_state_dict(unet, adapter_name=adapter_name), config, Path(directory))


def save_factored_lora(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], directory: str | os.PathLike) -> Path:
    """Write weight edits given as factors (parameter name -> (B (out, r), A (r, in)), W - W0 = B A, one r for
    all) as a diffusers LoRA directory with alpha = r, so that `load_lora_weights` adds exactly B A."""
    if not factors:
        raise ValueError("no factors to write; the edit is empty")
    ranks = {a.shape[0] for _, a in factors.values()}
    if len(ranks) != 1:
        raise ValueError(f"every factor pair needs the same rank, got {sorted(ranks)}")
    rank = ranks.pop()
    state = {}
    for name, (b, a) in factors.items():
        module = name.removesuffix(".weight")
        state[f"{module}.lora_A.weight"] = a.detach().float().cpu().contiguous()
        state[f"{module}.lora_B.weight"] = b.detach().float().cpu().contiguous()
    modules = [name.removesuffix(".weight") for name in factors]
    return _write_lora(state, LoraConfig(r=rank, lora_alpha=rank, target_modules=modules), Path(directory))


def _kohya_tensors(unet: torch.nn.Module, adapter_name: str) -> dict[str, torch.Tensor]:
    """The adapter's weights under kohya keys: the diffusers module path with `_` for `.`, as kohya's SD1.x trainer."""
    tensors = {}
    for name, module in unet.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if (
            adapter_name in module.lora_embedding_A
            or adapter_name in module.lora_variant
            or module.lora_bias.get(adapter_name)
        ):
            raise ValueError(
                f"{name} uses an embedding LoRA, DoRA or a LoRA bias, which the kohya format cannot hold; "
                "export it with save_lora instead"
            )
        if adapter_name not in module.lora_A:
            continue
        key = "lora_unet_" + name.replace(".", "_")
        down = module.lora_A[adapter_name].weight.detach()
        tensors[f"{key}.lora_down.weight"] = down.cpu().contiguous()
        tensors[f"{key}.lora_up.weight"] = module.lora_B[adapter_name].weight.detach().cpu().contiguous()
        # kohya scales by alpha / rank; taking alpha from peft's scaling keeps rank_pattern, alpha_pattern and rsLoRA.
        tensors[f"{key}.alpha"] = torch.tensor(module.scaling[adapter_name] * down.shape[0], dtype=torch.float32)
    return tensors


def save_kohya_lora(unet: UNet2DConditionModel, path: str | os.PathLike, adapter_name: str = "default") -> Path:
    """Write the UNet's LoRA adapter as one kohya-format safetensors file (A1111, ComfyUI, diffusers); returns it."""
    _lora_config(unet, adapter_name)
    tensors = _kohya_tensors(unet, adapter_name)
    path = Path(path)
    with staged_file(path) as tmp:
        safetensors.torch.save_file(tensors, tmp, metadata={"format": "pt"})
    return path


def _check_names(names: Iterable[str], params: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise if `names` holds a parameter name the UNet does not have."""
    unknown = sorted(set(names) - params.keys())
    if unknown:
        raise ValueError(
            f"{source} names {len(unknown)} parameter(s) the UNet does not have (e.g. {unknown[0]!r}); "
            "use names from unet.named_parameters() of a UNet with the same architecture and no adapters"
        )


def _check_shapes(shapes: Mapping[str, torch.Size], params: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise if a tensor in `source` does not have the shape of the UNet parameter of the same name."""
    for name, shape in shapes.items():
        if tuple(shape) != tuple(params[name].shape):
            raise ValueError(
                f"{source} has shape {tuple(shape)} for {name!r} but the UNet has {tuple(params[name].shape)}; "
                "use a UNet with the same architecture"
            )


def save_unet_delta(unet: torch.nn.Module, originals: Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write `param - original` for the parameters named in `originals`: a full fine-tune minus its base."""
    if not originals:
        raise ValueError("originals is empty; pass {name: tensor} copies of the parameters taken before fine-tuning")
    params = dict(unet.named_parameters())
    _check_names(originals, params, "originals")
    _check_shapes({name: t.shape for name, t in originals.items()}, params, "originals")
    # float32 so that a half-precision base plus the delta gives back the fine-tuned values exactly.
    deltas = {
        name: (params[name].detach().float().cpu() - original.detach().float().cpu()).contiguous()
        for name, original in originals.items()
    }
    path = Path(path)
    with staged_file(path) as tmp:
        safetensors.torch.save_file(deltas, tmp, metadata={"format": DELTA_FORMAT, "version": DELTA_VERSION})
    return path


def save_sparse_delta(
    unet: torch.nn.Module, originals: Mapping[str, torch.Tensor], path: str | os.PathLike
) -> tuple[Path, int]:
    """Write `param - original` keeping only its nonzero entries (flat indices and values), for edits that
    touch few weights (ConceptPrune); `load_unet_delta` reads it like a dense delta. Returns the path
    and the number of entries stored."""
    params = dict(unet.named_parameters())
    _check_names(originals, params, "originals")
    tensors, shapes = {}, {}
    for name, original in originals.items():
        delta = (params[name].detach().float().cpu() - original.detach().float().cpu()).flatten()
        index = delta.nonzero().flatten()
        tensors[f"{name}.indices"] = index.contiguous()
        tensors[f"{name}.values"] = delta[index].contiguous()
        shapes[name] = list(original.shape)
    path = Path(path)
    metadata = {"format": DELTA_FORMAT, "version": DELTA_VERSION, "layout": "sparse", "shapes": json.dumps(shapes)}
    with staged_file(path) as tmp:
        safetensors.torch.save_file(tensors, tmp, metadata=metadata)
    return path, sum(t.numel() for n, t in tensors.items() if n.endswith(".indices"))


def _dense(tensors: dict[str, torch.Tensor], shapes: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    """The dense deltas of a sparse file's (indices, values) pairs."""
    deltas = {}
    for name, shape in shapes.items():
        delta = torch.zeros(shape).flatten()
        delta[tensors[f"{name}.indices"]] = tensors[f"{name}.values"]
        deltas[name] = delta.view(shape)
    return deltas


def save_mask(masks: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write a weight-saliency mask (name -> bool tensor, True = updated) as safetensors; `load_mask` reads it."""
    path = Path(path)
    tensors = {name: m.detach().bool().cpu().contiguous() for name, m in masks.items()}
    with staged_file(path) as tmp:
        safetensors.torch.save_file(tensors, tmp, metadata={"format": MASK_FORMAT, **metadata})
    return path


def load_mask(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The masks and metadata of a file written by `save_mask`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no mask at {path}; pass the mask.safetensors of a run with model.mask set")
    with safetensors.safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
        masks = {name: f.get_tensor(name) for name in f.keys()}
    if metadata.get("format") != MASK_FORMAT:
        raise ValueError(f"{path} is not an advanchor mask (format {metadata.get('format')!r})")
    return masks, metadata


def read_delta(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a file written by `save_unet_delta`, after checking that it is one."""
    if not path.is_file():
        raise FileNotFoundError(f"no UNet delta at {path}; pass the file that save_unet_delta wrote")
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except safetensors.SafetensorError as err:
        raise ValueError(f"{path} is not a safetensors file ({err}); pass the file that save_unet_delta wrote") from err
    if metadata.get("format") != DELTA_FORMAT:
        raise ValueError(
            f"{path} is not an advanchor UNet delta (format {metadata.get('format')!r}); "
            "pass a file written by save_unet_delta (LoRA files load with pipe.load_lora_weights)"
        )
    if metadata.get("version") != DELTA_VERSION:
        raise ValueError(
            f"{path} is UNet delta version {metadata.get('version')!r}, this code reads {DELTA_VERSION!r}; "
            "load it with the advanchor version that wrote it"
        )
    if metadata.get("layout") == "sparse":
        return _dense(tensors, json.loads(metadata["shapes"]))
    return tensors


def base_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The UNet's own parameters under their names without adapters: peft moves a layer's weight to
    `<layer>.base_layer.weight` when a LoRA is loaded, and a delta names it `<layer>.weight`."""
    return {n.replace(".base_layer.", "."): p for n, p in unet.named_parameters() if ".lora_" not in n}


def check_unet_delta(unet: torch.nn.Module, deltas: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise if `deltas` (read from `source`) name a parameter `unet` lacks or have another shape."""
    params = base_parameters(unet)
    _check_names(deltas, params, source)
    _check_shapes({name: t.shape for name, t in deltas.items()}, params, source)


def load_unet_delta(target: Target, path: str | os.PathLike) -> Target:
    """Add the deltas of a `save_unet_delta` file in place to the UNet of `target` (a pipeline or a UNet)."""
    unet = getattr(target, "unet", target)
    if not isinstance(unet, torch.nn.Module):
        raise TypeError(
            f"target is a {type(target).__name__}; pass a StableDiffusionPipeline or a UNet2DConditionModel"
        )
    deltas = read_delta(Path(path))
    # Every check runs before the first write, so a bad file leaves the UNet untouched.
    check_unet_delta(unet, deltas, str(path))
    add_unet_delta(unet, deltas)
    return target


def add_unet_delta(unet: torch.nn.Module, deltas: Mapping[str, torch.Tensor], scale: float = 1.0) -> None:
    """Add checked `deltas` (see `check_unet_delta`), times `scale`, to `unet`'s parameters in place."""
    params = base_parameters(unet)
    with torch.no_grad():
        for name, delta in deltas.items():
            param = params[name]
            # Summed in float32 so that half-precision weights land on the fine-tuned values, not one rounding off.
            param.copy_(param.float() + scale * delta.to(param.device).float())
