"""`train.py`: LightningCLI over the chosen erasure method and its data, then export and metrics."""

from __future__ import annotations

import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import yaml
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.cli import LightningCLI

from .api import ExportOptions, fit
from .compute import ComputeOptions, check_precision
from .data import ConceptData
from .evaluate.attack import AttackOptions
from .evaluate.run import EvalOptions
from .methods import ErasureMethod, method_class


class AdvAnchorCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--method", type=str, default="advanchor", help="erasure method; its class is `model` (advanchor, ...)"
        )
        parser.add_argument(
            "--run_name", type=str | None, default=None, help="outputs/<run_name>/ (default: concepts + time)"
        )
        parser.add_argument("--output_dir", type=str, default="outputs", help="parent folder of run folders")
        parser.add_class_arguments(EvalOptions, "eval")
        parser.add_class_arguments(ExportOptions, "export")
        parser.add_class_arguments(ComputeOptions, "compute")


def run_name(method: str, concepts: list[str]) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", "-".join(concepts)).strip("_")
    return f"{method}-{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


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


def check_inputs(module: ErasureMethod) -> None:
    """Load the model and check what depends on it (concept words, retained prompts) before any work."""
    _ = module.pipe  # loads the pipeline and attaches the method, which checks the concept words
    if module.uses_retained():
        module.retained_prompts()


@dataclass
class Run:
    """A parsed and checked train.py run, before any training."""

    cli: AdvAnchorCLI
    out: Path  # the run folder
    evaluation: EvalOptions
    export: ExportOptions
    compute: ComputeOptions  # already applied to the model's pipeline
    config_yaml: str  # the resolved configuration


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
                parser_kwargs={"default_config_files": defaults},
                trainer_defaults={"enable_checkpointing": False},
            )
        except MisconfigurationException as err:
            # Lightning says what this machine lacks; the usual cause is a GPU config on a machine without one.
            raise ValueError(
                f"the trainer settings do not fit this machine: {' '.join(str(err).split())} Fix the --trainer "
                "keys (without a GPU: --trainer.accelerator=cpu)"
            ) from err
    config = cli.config
    check_precision(cli.trainer.precision, cli.trainer.strategy.root_device)
    compute = ComputeOptions(**vars(config.compute)).check()
    out = Path(config.output_dir) / (config.run_name or run_name(method, cli.model.concepts))
    evaluation = EvalOptions(**{**vars(config.eval), "attack": AttackOptions(**vars(config.eval.attack))}).check()
    check_inputs(cli.model)
    compute.apply(cli.model.pipe)
    export = ExportOptions(**vars(config.export))
    return Run(cli, out, evaluation, export, compute, cli.parser.dump(config, skip_none=False))


def main(args: list[str] | None = None, default_configs: str | Path | None = None) -> Path | None:
    """Without `--config`, the chosen method's `<default_configs>/<method>.yaml` applies when it exists.

    Returns the run folder; None on the other ranks of a multi-process (DDP) run, which write nothing."""
    argv = sys.argv[1:] if args is None else args
    try:
        run = build(argv, default_configs)
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    # Errors from here on are bugs or failures mid-run, not bad input: they keep their traceback.
    cli = run.cli
    result = fit(cli.model, cli.datamodule, cli.trainer, evaluation=run.evaluation, config=cli.config.as_dict())
    # Lightning's launcher runs this script once per rank; one run folder is written, by rank 0.
    if not cli.trainer.is_global_zero:
        return None
    result.save(run.out, config_yaml=run.config_yaml, options=run.export)
    print(f"wrote {run.out}")
    return run.out
