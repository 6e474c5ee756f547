"""Resuming a train.py run: checkpoints written atomically into its run folder, the RNG states they hold,
and the checkpoint that `--ckpt_path` names (`last`: the run's own latest)."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from .export import staged_file

LAST = "last"  # `--ckpt_path last`


@dataclass
class CheckpointOptions:
    """Checkpoints of a train.py run, in `<run folder>/checkpoints/last.ckpt`, for `--ckpt_path last`."""

    every_n_steps: int = 50  # write the checkpoint every this many optimiser steps; 0: never

    def check(self) -> CheckpointOptions:
        if self.every_n_steps < 0:
            raise ValueError(f"checkpoint.every_n_steps must be 0 (no checkpoints) or more, got {self.every_n_steps}")
        return self

    def attach(self, trainer: pl.Trainer, run: Path) -> None:
        """Checkpoint `trainer`'s run into `<run>/checkpoints/`: attached once parsing has named the run folder,
        which the Trainer's own arguments cannot know."""
        trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if self.every_n_steps:
            trainer.callbacks.append(RunCheckpoint(run, self.every_n_steps))


def last_checkpoint(run: Path) -> Path:
    return run / "checkpoints" / f"{LAST}.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes under a temporary name, then renames: a run killed while saving keeps its previous checkpoint.
    Reads tensors and plain Python values only (`weights_only`), whatever the caller asks."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        with staged_file(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)

    def load_checkpoint(self, path, **kwargs: Any) -> dict[str, Any]:
        return super().load_checkpoint(path, **{**kwargs, "weights_only": True})


class RunCheckpoint(ModelCheckpoint):
    """`last.ckpt` in `<run>/checkpoints/`, rewritten every `every_n_steps` optimiser steps; nothing else."""

    def __init__(self, run: Path, every_n_steps: int):
        super().__init__(
            dirpath=run / "checkpoints",
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_steps,
            enable_version_counter=False,  # one last.ckpt, replaced, also when a resumed run finds it there
        )

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        with warnings.catch_warnings():
            # Lightning warns that under manual optimisation the checkpoint holds the weights from after the
            # step: that is what resuming needs (they match the optimizer states and progress of that step).
            warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
            super().on_train_batch_end(*args, **kwargs)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A checkpoint from another folder (an explicit --ckpt_path) holds nothing this callback uses (it keeps
        # no best models); Lightning would warn that it drops that state.
        if state_dict.get("dirpath") == self.dirpath:
            super().load_state_dict(state_dict)


def rng_state() -> dict[str, Any]:
    """The random number generators a training step draws from: torch's CPU one and, once used, CUDA's."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def newest_run(output_dir: Path, prefix: str) -> Path | None:
    """The newest run folder `<prefix>-<time>` (`cli.run_name`) under `output_dir` that has a last checkpoint."""
    name = re.compile(rf"{re.escape(prefix)}-\d{{8}}-\d{{6}}")
    runs = [p for p in output_dir.glob("*") if name.fullmatch(p.name) and last_checkpoint(p).is_file()]
    return max(runs, key=lambda p: p.name, default=None)  # the time in the name sorts


def checkpoint_to_resume(
    ckpt_path: str, output_dir: Path, run_name: str | None, prefix: str
) -> tuple[Path, Path | None]:
    """The checkpoint `--ckpt_path` names and the run folder that continues there (None: the usual one).

    `last` is `<output_dir>/<run_name>/checkpoints/last.ckpt`; without a run name, that of the newest
    `<prefix>-<time>` run that has one. Raises FileNotFoundError, naming the fix, when there is none."""
    if ckpt_path != LAST:
        path = Path(ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at --ckpt_path {path}; pass a .ckpt file, or `last`")
        return path, None
    if run_name:
        run = output_dir / run_name
        if not last_checkpoint(run).is_file():
            raise FileNotFoundError(
                f"run {run} has no checkpoint to resume ({last_checkpoint(run)} is missing); drop --ckpt_path "
                "to start it anew"
            )
        return last_checkpoint(run), run
    run = newest_run(output_dir, prefix)
    if run is None:
        raise FileNotFoundError(
            f"no {prefix}-<time> run under {output_dir} has checkpoints/last.ckpt to resume; pass its --run_name, "
            "or drop --ckpt_path to start anew"
        )
    return last_checkpoint(run), run
