"""`ErasureMethod`: what every erasure method shares, and the registry that names them.

A method subclasses `ErasureMethod`, sets `name` and `paper`, and overrides only what is its own:
`prepare()` (state built once the pipeline is attached), `erase_prompt()`, `item_loss()` (or a whole
`training_step()`) and `summary()`. Loading, the trained set or LoRA, the frozen view, the timestep
draw, the optimiser and export live here; data, evaluation, logging and the run folder live outside.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytorch_lightning as pl
import torch

from .. import export
from ..models import ADAPTER, TRAINABLE_SETS, FrozenView, LoraOptions, add_lora, load_pipeline, trainable_parameters
from ..text import encode, word_ids

METHODS: dict[str, type[ErasureMethod]] = {}


def ddim_bin_timestep(num_train_timesteps: int, bins: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A DDIM bin i ~ U{0..n-1}, then t ~ U[T i/n, T (i+1)/n): the AdvAnchor and ESD scripts' draw, shape (1,)."""
    i = int(torch.randint(bins, ()))
    lo = num_train_timesteps * i // bins
    hi = max(num_train_timesteps * (i + 1) // bins, lo + 1)
    return torch.randint(lo, hi, (1,), device=device)


class ErasureMethod(pl.LightningModule):
    """Fine-tune (or edit) a Stable Diffusion UNet so that it stops drawing `concepts`."""

    name: ClassVar[str] = ""  # the registry key: `--method`, `erase(..., method=...)`
    paper: ClassVar[str] = ""  # citation shown in the methods table
    uses_images: ClassVar[bool] = True  # whether the data module makes concept images (ESD samples its own)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not name:
            return
        if name in METHODS:
            raise TypeError(f"method name {name!r} is taken by {METHODS[name].__qualname__}; pick another `name`")
        METHODS[name] = cls

    def __init__(
        self,
        concepts: list[str] | None = None,
        pretrained: str = "toy",
        trainable: str = "attn2",
        lora: LoraOptions | None = None,
        lr: float = 1e-5,
        ddim_steps: int = 50,
    ):
        """
        Args:
            concepts: words to erase (e.g. ["van gogh"], ["circle"]).
            pretrained: "toy" (the shipped toy model), a local diffusers directory or a cached hub id.
            trainable: attn2 (= ESD-x), attn2-kv, non-attn2 (= ESD-u), all, or lora.
            lora: adapter settings when trainable is "lora".
            lr: learning rate of the UNet parameters.
            ddim_steps: timesteps are drawn from one of this many equal bins, as in the official code.
        """
        super().__init__()
        self.automatic_optimization = False
        self.concepts = list(concepts or ["circle"])
        if trainable not in TRAINABLE_SETS:
            raise ValueError(f"unknown trainable set {trainable!r}; use one of: {', '.join(TRAINABLE_SETS)}")
        self.pretrained, self.trainable = pretrained, trainable
        self.lora_options = lora or LoraOptions()
        self.lr, self.ddim_steps = lr, ddim_steps
        self._pipe = None
        self._encoded: dict[tuple[str, ...], torch.Tensor] = {}

    # --- model assembly -------------------------------------------------------------------------

    @property
    def pipe(self):
        """The pipeline being edited; loaded on first use unless one was attached."""
        if self._pipe is None:
            self.attach(load_pipeline(self.pretrained))
        return self._pipe

    @property
    def uses_lora(self) -> bool:
        return self.trainable == "lora"

    def attach(self, pipe) -> ErasureMethod:
        """Edit `pipe` in place: add adapters or unfreeze the chosen set, then the method's own `prepare()`."""
        if self._pipe is not None:
            raise RuntimeError(f"a pipeline is already attached to this {type(self).__name__}")
        self._pipe = pipe
        self.unet, self.text_encoder, self.tokenizer = pipe.unet, pipe.text_encoder, pipe.tokenizer
        self.noise_scheduler = pipe.scheduler
        self.unet.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        if self.uses_lora:
            self.trained = add_lora(self.unet, self.lora_options)
        else:
            self.trained = trainable_parameters(self.unet, self.trainable)
            for p in self.trained.values():
                p.requires_grad_(True)
        self.frozen = FrozenView(self.unet, self.trained, lora=self.uses_lora)
        for concept in self.concepts:
            word_ids(self.tokenizer, concept)
        self.prepare()
        return self

    def prepare(self) -> None:
        """The method's own state, built once the pipeline is attached (anchors, prompts, masks)."""

    def erase_prompt(self, concept: str) -> str:
        """The prompt whose images show `concept`: the concept images are generated from it."""
        raise NotImplementedError(f"{type(self).__name__} does not define erase_prompt()")

    def summary(self) -> dict:
        """Method-specific figures for metrics.json, read after training."""
        return {}

    # --- shared pieces of a training step -----------------------------------------------------------

    @torch.no_grad()
    def encoded(self, *prompts: str) -> torch.Tensor:
        """E(p) of `prompts` on the UNet's device and in its dtype, encoded once (again after a move): (B, L, D)."""
        cached = self._encoded.get(prompts)
        if cached is None or cached.device != self.unet.device or cached.dtype != self.unet.dtype:
            cached = encode(self.text_encoder, self.tokenizer, list(prompts)).to(self.unet.device, self.unet.dtype)
            self._encoded[prompts] = cached
        return cached

    def sample_timestep(self) -> torch.Tensor:
        return ddim_bin_timestep(self.noise_scheduler.config.num_train_timesteps, self.ddim_steps, self.unet.device)

    def noised(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_t = q_sample(z_0, t) at a drawn t, and t."""
        t = self.sample_timestep()
        return self.noise_scheduler.add_noise(z0, torch.randn_like(z0), t), t

    def item_loss(self, z0: torch.Tensor | None, label: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one concept image (None for methods without images) and the figures to log."""
        raise NotImplementedError(f"{type(self).__name__} defines neither item_loss() nor training_step()")

    def training_step(self, batch, batch_idx):
        """One optimiser step on the mean of `item_loss` over the batch; logs each figure as train/<name>."""
        *images, labels = batch  # (latents, labels), or (labels,) for methods without images
        items = images[0] if images else [None] * len(labels)
        opt = self.optimizers()
        logs: dict[str, float] = {}
        for z0, label in zip(items, labels.tolist()):
            loss, figures = self.item_loss(z0, label)
            self.manual_backward(loss / len(labels))
            for key, value in figures.items():
                logs[key] = logs.get(key, 0.0) + value / len(labels)
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, batch_size=len(labels))

    def configure_optimizers(self):
        return torch.optim.Adam(self.trained.values(), lr=self.lr)

    # --- export --------------------------------------------------------------------------------------

    def export(self, directory: Path, kohya: bool = False) -> None:
        """The edit as a diffusers LoRA directory `lora/` (and a kohya file) or `unet_delta.safetensors`."""
        if self.uses_lora:
            export.save_lora(self.unet, directory / "lora", adapter_name=ADAPTER)
            if kohya:
                export.save_kohya_lora(self.unet, directory / "kohya_lora.safetensors", adapter_name=ADAPTER)
        else:
            export.save_unet_delta(self.unet, self.frozen.originals, directory / "unet_delta.safetensors")
