"""`ErasureMethod`: what every erasure method shares, and the registry that names them.

A method subclasses `ErasureMethod`, sets `name`, `paper` and `trains_on`, and overrides only what is
its own: `prepare()` (state built once the pipeline is attached), `erase_prompt()` (and `erase_prompts()`
where a concept has several, whose labels its step then reads as `erase_items()` indices), `item_loss()`
(or a whole `training_step()`; or, with `trains = False`, a training-free `edit()`) and `summary()`.
Loading, the trained set or LoRA, the frozen view, the timestep draw, the weight-saliency masks, the
optimiser and export live here; data, evaluation, logging and the run folder live outside.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import ClassVar

import pytorch_lightning as pl
import torch
from torch.utils.hooks import RemovableHandle

from .. import export
from ..checkpoints import restore_rng, rng_state
from ..losses import denoising
from ..masks import check_mask, layer_sparsity, mask_sparsity, rbm_mask, salun_mask
from ..models import ADAPTER, TRAINABLE_SETS, FrozenView, LoraOptions, add_lora, load_pipeline, trainable_parameters
from ..text import encode, word_ids

METHODS: dict[str, type[ErasureMethod]] = {}


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; raised before the step that would have written it."""


TRAINS_ON = ("concept", "retained", "none")


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
    # The images a step sees: the concept's ("concept"), the other concepts' ("retained"), or none (ESD
    # samples its own latents).
    trains_on: ClassVar[str] = "concept"
    # Training-free editors (UCE) set this False and override `edit()` instead of a training step.
    trains: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not name:
            return
        if cls.trains_on not in TRAINS_ON:
            raise TypeError(f"{cls.__qualname__}.trains_on is {cls.trains_on!r}; use one of: {', '.join(TRAINS_ON)}")
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
        mask: str = "none",
        mask_ratio: float = 0.5,
        retain: list[str] | None = None,
    ):
        """
        Args:
            concepts: words to erase (e.g. ["van gogh"], ["circle"]).
            pretrained: "toy" (the shipped toy model), a local diffusers directory or a cached hub id.
            trainable: attn2 (= ESD-x), attn2-kv, non-attn2 (= ESD-u), all, or lora.
            lora: adapter settings when trainable is "lora".
            lr: learning rate of the UNet parameters.
            ddim_steps: timesteps are drawn from one of this many equal bins, as in the official code.
            mask: weight-saliency mask computed once before training: none, salun (from the concept's
                images) or rbm (from the retained images); see `advanchor.masks`.
            mask_ratio: the mask's sparsity, the share of the trained weights held out of the update.
            retain: prompts of the retained data (FT's training data, RBM's saliency); default on the toy
                model: the erase prompt of every other toy-world concept.
        """
        super().__init__()
        self.automatic_optimization = False
        self.concepts = list(concepts or ["circle"])
        if trainable not in TRAINABLE_SETS:
            raise ValueError(f"unknown trainable set {trainable!r}; use one of: {', '.join(TRAINABLE_SETS)}")
        self.pretrained, self.trainable = pretrained, trainable
        self.lora_options = lora or LoraOptions()
        if not lr > 0:
            raise ValueError(f"model.lr must be above 0, got {lr}; a typical value is 1e-5 (SD 1.4) or 1e-3 (toy)")
        if ddim_steps < 1:
            raise ValueError(f"model.ddim_steps must be at least 1 (the timestep bins), got {ddim_steps}")
        self.lr, self.ddim_steps = lr, ddim_steps
        check_mask(mask, mask_ratio)
        if mask != "none" and trainable == "lora":
            raise ValueError(f"mask {mask!r} ranks UNet weights; choose a trainable set of them (attn2, ...), not lora")
        self.mask, self.mask_ratio = mask, mask_ratio
        self.retain = None if retain is None else list(retain)
        self.masks: dict[str, torch.Tensor] = {}
        self._mask_hooks: list[RemovableHandle] = []
        self._resumed: dict | None = None  # the checkpoint being resumed, until training starts
        self._pipe = None
        # Checkpoints hold only what trains (`on_save_checkpoint`), not the frozen model.
        self.strict_loading = False
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

    def erase_prompts(self, concept: str) -> list[str]:
        """Every prompt whose images show `concept`, one image set each; one, `erase_prompt`, unless a
        method erases the concept in several contexts (AdvAnchor's `prompts.contexts`)."""
        return [self.erase_prompt(concept)]

    def erase_items(self) -> list[tuple[int, str]]:
        """(concept index, erase prompt) of every concept image set, in the order of the data's labels:
        a label is a concept index wherever each concept has one prompt."""
        return [(i, prompt) for i, concept in enumerate(self.concepts) for prompt in self.erase_prompts(concept)]

    def retained_prompts(self) -> list[str]:
        """The retained data's prompts: `retain`, less any prompt that names an erased concept (one list
        then serves every concept of a kind), or on the toy model the erase prompt of every other shape,
        colour and style, so that every word the model knows but the erased ones is trained."""
        if self.retain is not None:
            names = re.compile("|".join(rf"\b{re.escape(c)}\b" for c in self.concepts))
            kept = [p for p in self.retain if not names.search(p)]
            if not kept:
                raise ValueError(f"every model.retain prompt names an erased concept {self.concepts}; add others")
            return kept
        from ..evaluate.run import is_toy_path
        from ..toyworld.vocab import COLORS, SHAPES, STYLES

        words = SHAPES + COLORS + STYLES
        if not is_toy_path(self.pretrained) or not set(self.concepts) <= set(words):
            raise ValueError(
                f"no retained prompts for {self.concepts}: set model.retain (the default covers the toy model only)"
            )
        return [self.erase_prompt(c) for c in words if c not in self.concepts]

    def uses_retained(self) -> bool:
        """Whether the method reads `retained_prompts()` (checked before any work by train.py)."""
        return self.trains_on == "retained" or self.mask == "rbm"

    def summary(self) -> dict:
        """Figures for metrics.json, read after training; a method adds its own to these."""
        if not self.masks:
            return {}
        return {
            "mask": {
                "kind": self.mask,
                "ratio": self.mask_ratio,
                "sparsity": mask_sparsity(self.masks),
                "per_layer": layer_sparsity(self.masks),
            }
        }

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

    def noised(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z_t = q_sample(z_0, t) at a drawn t, t, and the noise drawn."""
        t = self.sample_timestep()
        noise = torch.randn_like(z0)
        return self.noise_scheduler.add_noise(z0, noise, t), t, noise

    def denoising_loss(self, z0: torch.Tensor, prompt: str) -> torch.Tensor:
        """The usual diffusion loss of one image (C, h, w) under `prompt`, at a drawn timestep."""
        zt, t, noise = self.noised(z0.unsqueeze(0).to(self.unet.device, self.unet.dtype))  # (1, C, h, w)
        return denoising(self.unet(zt, t, self.encoded(prompt)).sample, noise)

    # --- weight-saliency masks -----------------------------------------------------------------------

    def on_train_start(self) -> None:
        if self._resumed is not None:
            self._continue(self._resumed)
            self._resumed = None
        if self.mask == "none":
            return
        # A resumed run has its mask from the checkpoint: ranked on the original weights, not the trained ones.
        if not self.masks:
            self.build_mask(self.trainer.datamodule)
        self.hold_to_mask()

    def saliency(self, items: list[tuple[torch.Tensor, str]]) -> dict[str, torch.Tensor]:
        """Sum over (z_0, prompt) items of the denoising loss's gradient in every trained weight (SalUn's
        `generate_mask`: the gradient of the plain diffusion loss at the pretrained weights)."""
        names = list(self.trained)
        total = {n: torch.zeros_like(p) for n, p in self.trained.items()}
        for z0, prompt in items:
            grads = torch.autograd.grad(self.denoising_loss(z0, prompt), [self.trained[n] for n in names])
            for n, g in zip(names, grads):
                total[n] += g
        return total

    def build_mask(self, data) -> None:
        """Rank the trained weights once, from `data`'s concept (SalUn) or retained (RBM) images, into
        `masks`; RBM also zeroes the weights it holds out."""
        if self.mask == "salun":
            prompts, latents = [prompt for _, prompt in self.erase_items()], data.latents("concept")
        else:
            prompts, latents = self.retained_prompts(), data.latents("retained")
        items = [latents[i] for i in range(len(latents))]
        grads = self.saliency([(z, prompts[int(label)]) for z, label in items])
        if self.mask == "salun":
            self.masks = salun_mask(grads, self.mask_ratio)
        else:
            self.masks = rbm_mask(grads, self.mask_ratio)
            with torch.no_grad():
                for name, keep in self.masks.items():
                    self.trained[name].mul_(keep)

    def hold_to_mask(self) -> None:
        """Keep the update to `masks` with gradient hooks (replacing any earlier ones)."""
        for handle in self._mask_hooks:
            handle.remove()
        # A checkpoint's masks arrive on the CPU; the weights may be elsewhere.
        self.masks = {name: keep.to(self.trained[name].device) for name, keep in self.masks.items()}
        # Zero gradients outside the mask: Adam's moments then stay zero there, so those weights never move.
        self._mask_hooks = [
            self.trained[name].register_hook(lambda grad, keep=keep: grad * keep) for name, keep in self.masks.items()
        ]

    def edit(self) -> None:
        """A training-free editor's whole edit, in place, once the pipeline is attached."""
        raise NotImplementedError(f"{type(self).__name__} trains; it has no training-free edit()")

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
            self.check_finite({self.name: loss.item(), **figures})
            self.manual_backward(loss / len(labels))
            for key, value in figures.items():
                logs[key] = logs.get(key, 0.0) + value / len(labels)
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, batch_size=len(labels))

    def check_finite(self, losses: dict[str, float]) -> None:
        """Stop before the optimiser step when a loss is NaN or infinite: the weights it would write are lost."""
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            name, value = next(iter(bad.items()))
            raise NonFiniteLossError(
                f"training stopped at step {self.global_step}: loss {name} is {value}; nothing was exported. "
                "Lower model.lr (or use --trainer.precision=32-true) and run again"
            )

    def configure_optimizers(self):
        return torch.optim.Adam(self.trained.values(), lr=self.lr)

    # --- checkpoints (Lightning adds the optimizer states and the loops' progress) ---------------------

    def _trained_names(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep only what trains (the frozen model is the pretrained one, loaded anew on resume), plus the
        masks, the gradients left between steps (`paper_grad_accumulation`) and the RNG states."""
        trained = self._trained_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trained}
        checkpoint["masks"] = dict(self.masks)
        checkpoint["grads"] = {n: p.grad for n, p in self.named_parameters() if n in trained and p.grad is not None}
        checkpoint["rng"] = rng_state()

    def check_resumable(self, checkpoint: dict) -> None:
        """Raise unless `checkpoint` holds exactly the parameters this run trains."""
        saved, trained = set(checkpoint["state_dict"]), self._trained_names()
        if saved != trained:
            name = sorted(saved ^ trained)[0]
            raise ValueError(
                f"the checkpoint's trained parameters are not this run's (e.g. {name!r}); resume with the model "
                "settings of the run that wrote it"
            )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.check_resumable(checkpoint)
        self.masks = dict(checkpoint["masks"])
        self._resumed = {key: checkpoint[key] for key in ("grads", "rng")}

    def _continue(self, checkpoint: dict) -> None:
        """At the start of a resumed run's training, after Lightning has zeroed the gradients and drawn
        what it draws: the gradients and RNG states that the checkpointed step left."""
        params = dict(self.named_parameters())
        for name, grad in checkpoint["grads"].items():
            params[name].grad = grad.to(params[name])
        restore_rng(checkpoint["rng"])

    # --- export --------------------------------------------------------------------------------------

    def export(self, directory: Path, kohya: bool = False) -> None:
        """The edit as a diffusers LoRA directory `lora/` (and a kohya file) or `unet_delta.safetensors`."""
        if self.uses_lora:
            export.save_lora(self.unet, directory / "lora", adapter_name=ADAPTER)
            if kohya:
                export.save_kohya_lora(self.unet, directory / "kohya_lora.safetensors", adapter_name=ADAPTER)
        else:
            export.save_unet_delta(self.unet, self.frozen.originals, directory / export.DELTA_FILE)
        if self.masks:
            export.save_mask(
                self.masks, directory / "mask.safetensors", {"kind": self.mask, "ratio": str(self.mask_ratio)}
            )
