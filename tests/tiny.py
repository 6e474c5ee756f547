"""Test helpers: AdvAnchor on the tiny pipeline, and a short Trainer run of it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from advanchor.anchors import AnchorOptions
from advanchor.data import ConceptData, GenerationOptions
from advanchor.methods import AdvAnchor
from advanchor.models import TRAINABLE_SETS, LoraOptions
from advanchor.testing import TOY_PROMPTS, tiny_pipeline

__all__ = [
    "TOY_PROMPTS",
    "TRAINABLE",
    "load_benchmark",
    "perturb",
    "run_train_py",
    "tiny_data",
    "tiny_module",
    "tiny_pipeline",
    "tiny_run",
    "tiny_trainer",
    "unet_output",
]

TRAINABLE = list(TRAINABLE_SETS)


def tiny_module(trainable="attn2", concepts=("circle",), pipe=None, anchor=None, **kw) -> AdvAnchor:
    """An AdvAnchor attached to a tiny pipeline (LoRA rank 2 when `trainable` is lora)."""
    if trainable == "lora":
        kw.setdefault("lora", LoraOptions(rank=2, alpha=4.0))
    kw.setdefault("prompts", TOY_PROMPTS)
    return AdvAnchor(
        concepts=list(concepts),
        trainable=trainable,
        lr=1e-3,
        anchor=anchor or AnchorOptions(lr=1e-2, max_inner_steps=3),
        **kw,
    ).attach(pipe or tiny_pipeline())


def perturb(params: dict[str, torch.nn.Parameter], scale: float = 0.05, seed: int = 0) -> None:
    """Move trained parameters away from their start (LoRA's B starts at zero), so the frozen view matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.add_(scale * torch.randn(p.shape, generator=g).to(p))


def tiny_data(tmp_path, images: int = 2) -> ConceptData:
    """`images` concept images per concept, made in 2 steps and cached under `tmp_path`."""
    return ConceptData(
        generation=GenerationOptions(images_per_concept=images, steps=2, guidance_scale=2.0),
        cache_dir=str(tmp_path / "cache"),
    )


def tiny_trainer(steps: int, **kw) -> pl.Trainer:
    """A quiet CPU Trainer of `steps` steps, without logger or checkpoints; `kw` are more Trainer arguments."""
    return pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def tiny_run(
    tmp_path,
    strategy="interleaved",
    trainable="attn2",
    steps=2,
    concepts=("circle",),
    dtype=None,
    precision="32-true",
    data=None,
    callbacks=None,
    compute=None,
    **kw,
):
    """A `steps`-step Trainer run on the tiny pipeline; `dtype` moves the pipeline after attaching, and
    `compute` (ComputeOptions) is applied to it.

    Returns the module, its trained values and deltas before training, and the trainer."""
    pl.seed_everything(0, verbose=False)
    module = tiny_module(trainable, concepts, anchor=AnchorOptions(strategy=strategy, lr=1e-2, max_inner_steps=3), **kw)
    if dtype is not None:
        module.pipe.to(dtype)
    if compute is not None:
        compute.apply(module.pipe)
    data = data or tiny_data(tmp_path)
    trainer = tiny_trainer(steps, precision=precision, callbacks=callbacks)
    before = {n: p.detach().clone() for n, p in module.trained.items()}
    deltas0 = [d.detach().clone() for d in module.deltas]
    trainer.fit(module, datamodule=data)
    return module, before, deltas0[0] if len(deltas0) == 1 else deltas0, trainer


def load_benchmark(name: str):
    """The module of benchmarks/<name>.py: benchmarks/ is a folder of scripts, not a package."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_train_py(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python train.py args` in a subprocess run from `tmp_path`, its image cache there, W&B offline, and
    `env` added to the environment."""
    root = Path(__file__).resolve().parent.parent
    environment = {**os.environ, "ADVANCHOR_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline", **env}
    environment.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, str(root / "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=600,
    )


def unet_output(unet: torch.nn.Module) -> torch.Tensor:
    """The tiny UNet's prediction for one fixed random latent, timestep and context."""
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 5, 16, generator=generator)
    with torch.no_grad():
        return unet(sample, 10, encoder_hidden_states=context).sample
