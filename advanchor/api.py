"""The Python API: `advanchor.erase(...)`, and `fit`, the training path that train.py shares with it."""

from __future__ import annotations

import inspect
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from diffusers import StableDiffusionPipeline
from pytorch_lightning.loggers import WandbLogger

from .compute import ComputeOptions, check_precision
from .data import ConceptData
from .evaluate.generate import generate
from .evaluate.run import EvalOptions, evaluate_pipeline, is_toy_path
from .export import staged_file, write_atomic
from .logging import image_grid
from .methods import ErasureMethod, method_class

GRID_SEEDS = (0, 1, 2, 3)


@dataclass
class ExportOptions:
    """Extra artifacts besides the diffusers LoRA / UNet delta."""

    kohya: bool = False  # also write a kohya-format LoRA for A1111/ComfyUI


@dataclass
class ErasureResult:
    """What a run produced: metrics, the edited pipeline (adapters active) and how to save it."""

    metrics: dict
    pipeline: StableDiffusionPipeline
    module: ErasureMethod
    grids: dict = field(default_factory=dict)

    def save(self, directory: str | Path, config_yaml: str | None = None, options: ExportOptions | None = None) -> Path:
        """Write the adapter (or UNet delta), grids, config.yaml when given, and metrics.json last; each file
        under a temporary name first, so a killed save leaves whole files (the old ones or the new)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.module.export(out, kohya=bool(options and options.kohya))
        for name, grid in self.grids.items():
            with staged_file(out / f"{name}.png") as tmp:
                grid.save(tmp, format="PNG")
        if config_yaml is not None:
            write_atomic(out / "config.yaml", config_yaml)
        write_atomic(out / "metrics.json", json.dumps(self.metrics, indent=2))
        return out


def _grid_prompts(module: ErasureMethod) -> list[str]:
    prompts = [module.erase_prompt(c) for c in module.concepts]
    if is_toy_path(module.pretrained):
        from .toyworld.vocab import SHAPES

        prompts += [f"a {s}" for s in SHAPES if s not in module.concepts]
    return prompts


def _grid(module: ErasureMethod, guidance_scale: float, steps: int):
    prompts = _grid_prompts(module)
    images = generate(module.pipe, prompts, list(GRID_SEEDS), guidance_scale, steps, desc="grid")
    return image_grid(images, rows=len(prompts))


def _evaluate(module: ErasureMethod, options: EvalOptions, edited: bool) -> dict:
    """Per concept: the evaluation report (toy model, or a real one with a prompt CSV); empty otherwise.

    Before training the pipeline is the original: only the toy model is measured, without fidelity or attacks."""
    toy = is_toy_path(module.pretrained)
    if not (toy and options.before or edited):
        return {}
    original = module.frozen if edited else None
    reports = {c: evaluate_pipeline(module.pipe, original, c, options, toy) for c in module.concepts}
    return {c: r for c, r in reports.items() if r is not None}


def check_trainer(trainer: pl.Trainer, module: ErasureMethod) -> None:
    """Raise if a method that trains is given a Trainer that would run no step."""
    if not module.trains:
        return
    for key, value in (
        ("max_steps", trainer.max_steps),
        ("max_epochs", trainer.max_epochs),
        ("limit_train_batches", trainer.limit_train_batches),
    ):
        if value == 0:
            raise ValueError(f"trainer.{key} is 0, so {module.name} would train nothing; set it above 0")


def fit(
    module: ErasureMethod,
    datamodule: ConceptData,
    trainer: pl.Trainer,
    evaluation: EvalOptions | None = None,
    config: dict | None = None,
    measure: bool = True,
    ckpt_path: str | Path | None = None,
) -> ErasureResult:
    """Train, then measure: losses, wall time and the evaluation (`evaluation`; the toy model always
    after training, and before it unless `evaluation.before` is off; a real model after training when
    `evaluation.prompts` names a prompt CSV).

    `config` (the resolved run configuration) goes to every logger as hyperparameters. `measure=False`
    skips the evaluation and the grids, for a caller that measures the model itself (the benchmark).
    `ckpt_path` resumes the training from a Lightning checkpoint of the same run.

    With several processes (DDP) every rank runs this: Lightning's launcher starts the other ranks by
    running the script again, so they get here too before joining `trainer.fit`. Only global rank 0
    measures, makes the grids and logs; the others only train, and their result has no evaluation.
    """
    toy = is_toy_path(module.pretrained)
    evaluation = (evaluation or EvalOptions()).check()
    lead = trainer.is_global_zero
    measure = measure and lead
    if lead:
        for logger in trainer.loggers:
            logger.log_hyperparams(config or {"concepts": module.concepts, "trainable": module.trainable})
    guidance = evaluation.guidance_scale or (4.0 if toy else 7.5)
    grid_steps = evaluation.steps or 25
    module.pipe.to(trainer.strategy.root_device)
    metrics: dict = {"method": module.name, "concepts": module.concepts, "trainable": module.trainable}
    grids = {}
    if measure:
        with module.frozen():
            metrics["before"] = _evaluate(module, evaluation, edited=False)
            grids["grid_before"] = _grid(module, guidance, grid_steps)
    start = time.time()
    if module.trains:
        with warnings.catch_warnings():
            # The frozen parts (VAE, text encoder, the UNet's untrained modules) are in eval mode on
            # purpose: dropout stays off in the frozen reference passes.
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
            # Lightning 2.6 calls a torch pytree API that torch deprecates: Lightning's to change, not the user's.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics["train_time_s"] = round(time.time() - start, 2)
        metrics["steps"] = trainer.global_step
        metrics["final"] = {k.removeprefix("train/"): float(v) for k, v in trainer.callback_metrics.items()}
    else:
        module.edit()
        metrics["edit_time_s"] = round(time.time() - start, 2)
    metrics.update(module.summary())
    module.unet.eval()
    # A Trainer precision such as 64-true converts the LightningModule (UNet, text encoder), not the VAE.
    # nn.Module.to, not diffusers' ModelMixin.to: that one warns on every dtype cast, even when none of
    # the model's modules has to stay in fp32, and the user can do nothing about it.
    if module.pipe.vae.dtype != module.unet.dtype:
        torch.nn.Module.to(module.pipe.vae, dtype=module.unet.dtype)
    if measure:
        metrics["after"] = _evaluate(module, evaluation, edited=True)
        grids["grid_after"] = _grid(module, guidance, grid_steps)
    if lead:
        _log_summary(trainer, metrics, grids)
    return ErasureResult(metrics=metrics, pipeline=module.pipe, module=module, grids=grids)


def evaluation_table(metrics: dict) -> tuple[list[str], list[list]]:
    """The evaluation as one row per (when, concept): columns and rows of every scalar metric."""
    reports = [(when, c, r) for when in ("before", "after") for c, r in metrics.get(when, {}).items()]
    keys = sorted({k for _, _, r in reports for k, v in r.items() if isinstance(v, float)})
    rows = [[when, concept, *(report.get(k) for k in keys)] for when, concept, report in reports]
    return ["when", "concept", *keys], rows


def _log_summary(trainer: pl.Trainer, metrics: dict, grids: dict) -> None:
    flat = {f"final/{k}": metrics[k] for k in ("train_time_s", "edit_time_s") if k in metrics}
    for when in ("before", "after"):
        for concept, report in metrics.get(when, {}).items():
            flat.update({f"{when}/{concept}/{k}": v for k, v in report.items() if isinstance(v, float)})
    columns, rows = evaluation_table(metrics)
    for logger in trainer.loggers:
        logger.log_metrics(flat, step=trainer.global_step)
        if isinstance(logger, WandbLogger):
            logger.log_image("grids", list(grids.values()), caption=list(grids), step=trainer.global_step)
            if rows:
                logger.log_table("evaluation", columns=columns, data=rows, step=trainer.global_step)
            logger.experiment.summary.update(flat)


def erase(
    pipeline_or_path: StableDiffusionPipeline | str,
    concepts: list[str] | str,
    method: str = "advanchor",
    *,
    data: ConceptData | None = None,
    trainer: pl.Trainer | dict | None = None,
    evaluation: EvalOptions | None = None,
    compute: ComputeOptions | None = None,
    seed: int = 0,
    **options,
) -> ErasureResult:
    """Erase `concepts` from a pipeline (or a path / hub id) with `method` and return the result.

    `options` are the method's arguments (for AdvAnchor: trainable, lora, prompts, anchor, attributes,
    lr, ...); `trainer` is a Trainer or a dict of Trainer arguments (default: 50 steps, no logger);
    `compute` (gradient checkpointing, torch.compile, attention) is applied to the pipeline before training.
    """
    cls = method_class(method)
    accepted = set()
    for klass in cls.__mro__:
        if issubclass(klass, ErasureMethod):
            accepted |= set(inspect.signature(klass.__init__).parameters)
    accepted -= {"self", "concepts", "pretrained", "kwargs"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        choices = ", ".join(sorted(accepted))
        raise ValueError(f"method {method!r} takes no option {unknown[0]!r}; its options: {choices}")
    pl.seed_everything(seed, verbose=False)
    concepts = [concepts] if isinstance(concepts, str) else list(concepts)
    if isinstance(pipeline_or_path, StableDiffusionPipeline):
        source = pipeline_or_path.name_or_path or ""
        module = cls(concepts=concepts, pretrained=source, **options).attach(pipeline_or_path)
    else:
        module = cls(concepts=concepts, pretrained=str(pipeline_or_path), **options)
    if compute is not None:
        compute.apply(module.pipe)
    if not isinstance(trainer, pl.Trainer):
        settings = {"max_steps": 50, "logger": False, "enable_checkpointing": False, **(trainer or {})}
        trainer = pl.Trainer(**settings)
    check_precision(trainer.precision, trainer.strategy.root_device)
    check_trainer(trainer, module)
    return fit(module, data or ConceptData(), trainer, evaluation=evaluation)
