"""`train.py`: LightningCLI over the chosen erasure method and its data, then export and metrics."""

from __future__ import annotations

import argparse
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.cli import LightningCLI

from .api import ExportOptions, check_trainer, fit
from .checkpoints import CheckpointOptions, checkpoint_to_resume
from .compute import ComputeOptions, check_precision
from .data import ConceptData
from .errors import argument_message, check_writable, reported, take_debug
from .evaluate.attack import AttackOptions
from .evaluate.inversion import InversionOptions
from .evaluate.run import EvalOptions
from .logging import redact
from .methods import ErasureMethod, method_class
from .methods.base import NonFiniteLossError
from .models import load_pipeline


class AdvAnchorCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--method", type=str, default="advanchor", help="erasure method; its class is `model` (advanchor, ...)"
        )
        parser.add_argument(
            "--run_name", type=str | None, default=None, help="outputs/<run_name>/ (default: concepts + time)"
        )
        parser.add_argument("--output_dir", type=str, default="outputs", help="parent folder of run folders")
        parser.add_argument(
            "--allow_pickle",
            type=bool,
            default=False,
            help="also load pickle (.bin/.ckpt) model weights, which can run code: only from a source you trust",
        )
        # LightningCLI adds --ckpt_path only to the subcommands of run=True.
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="resume a run: `last` (its checkpoints/last.ckpt; without --run_name, the newest run's of this "
            "method and concepts) or a .ckpt file",
        )
        parser.add_class_arguments(CheckpointOptions, "checkpoint")
        parser.add_class_arguments(EvalOptions, "eval")
        parser.add_class_arguments(ExportOptions, "export")
        parser.add_class_arguments(ComputeOptions, "compute")

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except argparse.ArgumentError as err:
            options = [o for action in parser._actions for o in action.option_strings]
            raise ValueError(argument_message(str(err), options)) from None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            # A nested option's own check (e.g. model.anchor's strategy) comes wrapped in jsonargparse's
            # report of every type it tried; the check's message is what the user needs.
            raise ValueError(argument_message(str(err), [])) from None


def run_prefix(method: str, concepts: list[str]) -> str:
    """What the default run name says before the time: the method and the concepts."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", "-".join(concepts)).strip("_")
    return f"{method}-{slug}"


def run_name(method: str, concepts: list[str]) -> str:
    return f"{run_prefix(method, concepts)}-{time.strftime('%Y%m%d-%H%M%S')}"


def _flag_values(argv: list[str], flag: str) -> list[str]:
    """Every value given to `flag` on the command line, as `flag VALUE` or `flag=VALUE`."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(flag + "=")]
    return values + [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def selected_method(argv: list[str], config_files: list[str]) -> str:
    """`--method` on the command line, else the last `method:` of the config files, else advanchor.

    The method decides the model class, and so the parser, so it is read before parsing."""
    flags = _flag_values(argv, "--method")
    if flags:
        return flags[-1]
    chosen = "advanchor"
    for path in config_files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"config file {path} does not exist; fix --config")
        chosen = (yaml.safe_load(Path(path).read_text()) or {}).get("method", chosen)
    return chosen


def check_inputs(module: ErasureMethod, data: ConceptData, allow_pickle: bool = False) -> None:
    """Load the model and check what depends on it (concept words, retained prompts, image folders) before
    any work."""
    module.attach(load_pipeline(module.pretrained, allow_pickle=allow_pickle))  # attaching checks the concept words
    if module.uses_retained():
        module.retained_prompts()
    data.check(module)


@dataclass
class Run:
    """A parsed and checked train.py run, before any training."""

    cli: AdvAnchorCLI
    out: Path  # the run folder
    evaluation: EvalOptions
    export: ExportOptions
    compute: ComputeOptions  # already applied to the model's pipeline
    config_yaml: str  # the resolved configuration
    ckpt_path: Path | None = None  # the checkpoint the run resumes from

    @property
    def logged_config(self) -> dict:
        """The resolved configuration for the loggers, secrets redacted as in `config_yaml`."""
        return redact(self.cli.config.as_dict())


def build(argv: list[str], default_configs: str | Path | None = None) -> Run:
    """Parse `argv` as train.py does, check the inputs (loads the model) and apply the `compute` options to
    it; raises ValueError or FileNotFoundError on bad input. Without `--config`,
    `<default_configs>/<method>.yaml` applies."""
    own_configs = _flag_values(argv, "--config")
    method = selected_method(argv, own_configs)
    cls = method_class(method)
    default = Path(default_configs) / f"{method}.yaml" if default_configs else None
    defaults = [str(default)] if default and default.is_file() and not own_configs else []
    with warnings.catch_warnings():
        # `args` is always given on purpose (train.py's own argv, or a benchmark cell's), which Lightning
        # warns about whenever the process also has command-line arguments.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        try:
            cli = AdvAnchorCLI(
                cls,
                ConceptData,
                run=False,
                save_config_callback=None,
                seed_everything_default=0,
                args=argv,
                # Parse errors raise (and become one line in `main`) instead of printing the usage block.
                parser_kwargs={"default_config_files": defaults, "exit_on_error": False},
                trainer_defaults={"enable_checkpointing": False},
            )
        except (MisconfigurationException, ImportError) as err:
            # Lightning says what this machine lacks (a GPU, torch_xla for a TPU, transformer-engine, ...).
            raise ValueError(
                f"the trainer settings do not fit this machine: {' '.join(str(err).split())} Fix the --trainer "
                "keys (without a GPU: --trainer.accelerator=cpu)"
            ) from err
    config = cli.config
    check_precision(cli.trainer.precision, cli.trainer.strategy.root_device)
    compute = ComputeOptions(**vars(config.compute)).check()
    if config.run_name is not None and (Path(config.run_name).name != config.run_name or config.run_name in ("", "..")):
        raise ValueError(f"--run_name {config.run_name!r} must be one folder name, without '/' or '..'")
    out = Path(config.output_dir) / (config.run_name or run_name(method, cli.model.concepts))
    ckpt = None
    if config.ckpt_path:
        prefix = run_prefix(method, cli.model.concepts)
        ckpt, resumed = checkpoint_to_resume(config.ckpt_path, Path(config.output_dir), config.run_name, prefix)
        out = resumed or out
    CheckpointOptions(**vars(config.checkpoint)).check().attach(cli.trainer, out)
    check_writable(out, "--output_dir")
    check_trainer(cli.trainer, cli.model)
    attack = vars(config.eval.attack)
    attack = AttackOptions(**{**attack, "inversion": InversionOptions(**vars(attack["inversion"]))})
    evaluation = EvalOptions(**{**vars(config.eval), "attack": attack}).check()
    check_inputs(cli.model, cli.datamodule, config.allow_pickle)
    if ckpt is not None:
        # The same check runs when Lightning loads it; here it fails before any work, in one line.
        cli.model.check_resumable(torch.load(ckpt, map_location="cpu", weights_only=True))
    compute.apply(cli.model.pipe)
    export = ExportOptions(**vars(config.export))
    # Redacted: config.yaml and the W&B config are shared, and no API key may reach them.
    config_yaml = yaml.safe_dump(redact(yaml.safe_load(cli.parser.dump(config, skip_none=False))), sort_keys=False)
    return Run(cli, out, evaluation, export, compute, config_yaml, ckpt)


def main(args: list[str] | None = None, default_configs: str | Path | None = None) -> Path | None:
    """Without `--config`, the chosen method's `<default_configs>/<method>.yaml` applies when it exists.

    Returns the run folder; None on the other ranks of a multi-process (DDP) run, which write nothing."""
    argv, debug = take_debug(sys.argv[1:] if args is None else args)
    with reported(debug):
        run = build(argv, default_configs)
    # Errors from here on are bugs or failures mid-run, not bad input: they keep their traceback, but for
    # a loss that diverged, which the user fixes with the settings.
    cli = run.cli
    with reported(debug, (NonFiniteLossError,)):
        result = fit(
            cli.model,
            cli.datamodule,
            cli.trainer,
            evaluation=run.evaluation,
            config=run.logged_config,
            ckpt_path=run.ckpt_path,
        )
    # Lightning's launcher runs this script once per rank; one run folder is written, by rank 0.
    if not cli.trainer.is_global_zero:
        return None
    result.save(run.out, config_yaml=run.config_yaml, options=run.export)
    print(f"wrote {run.out}")
    return run.out
