"""`train.py`: LightningCLI over the Unlearner and its data, then export and metrics."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from pytorch_lightning.cli import LightningCLI

from .api import ExportOptions, fit
from .data import ConceptData
from .evaluate.attack import AttackOptions
from .evaluate.run import EvalOptions
from .module import Unlearner


class AdvAnchorCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--run_name", type=str | None, default=None, help="outputs/<run_name>/ (default: concepts + time)"
        )
        parser.add_argument("--output_dir", type=str, default="outputs", help="parent folder of run folders")
        parser.add_class_arguments(EvalOptions, "eval")
        parser.add_class_arguments(ExportOptions, "export")


def run_name(concepts: list[str]) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", "-".join(concepts)).strip("_")
    return f"advanchor-{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def main(args: list[str] | None = None, default_config: str | Path | None = None) -> Path:
    """`default_config` applies unless the command line names its own `--config`."""
    argv = sys.argv[1:] if args is None else args
    own_config = any(a == "--config" or a.startswith("--config=") for a in argv)
    defaults = [str(default_config)] if default_config and not own_config else []
    try:
        cli = AdvAnchorCLI(
            Unlearner,
            ConceptData,
            run=False,
            save_config_callback=None,
            seed_everything_default=0,
            args=argv,
            parser_kwargs={"default_config_files": defaults},
            trainer_defaults={"enable_checkpointing": False},
        )
        config = cli.config
        config_yaml = cli.parser.dump(config, skip_none=False)
        out = Path(config.output_dir) / (config.run_name or run_name(cli.model.concepts))
        evaluation = EvalOptions(**{**vars(config.eval), "attack": AttackOptions(**vars(config.eval.attack))})
        result = fit(cli.model, cli.datamodule, cli.trainer, evaluation=evaluation, config=config.as_dict())
    except (ValueError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    result.save(out, config_yaml=config_yaml, options=ExportOptions(**vars(config.export)))
    print(f"wrote {out}")
    return out
