"""Benchmark every erasure method on the toy world: `python -m advanchor.benchmark --out DIR`.

For each (concept, method, training seed) cell it erases the concept with the method's toy config
(configs/toy/<method>.yaml; <method>-style.yaml for textures where one exists) and measures, at the
evaluation seeds, UnlearnCanvas's metrics read by the shipped classifier:

  UA   share of the erased concept's prompt images that do not show it (higher is better)
  IRA  accuracy of the erased concept's domain on the other prompts (the other shapes for a shape)
  CRA  accuracy of the other domains (colours and textures for a shape; shapes and colours for a texture)

It writes results.csv (one row per cell), summary.md (one row per method: the means, their harmonic
mean), scatter.png, heatmap.png and report.html (self-contained). Finished cells are kept in DIR and
skipped when the run is started again; the original model's images are generated once per DIR.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..errors import ArgumentParser, check_writable, reported
from .cells import QUICK, default_configs, parse_concepts, parse_methods
from .report import write_report
from .runner import Settings, run


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m advanchor.benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="folder of the cells, tables, plots and report")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    p.add_argument(
        "--concepts", default=None, help="concepts or groups: shapes, styles, colors (default: shapes,styles)"
    )
    p.add_argument("--quick", action="store_true", help=f"only {' and '.join(QUICK)} (every method)")
    p.add_argument("--seeds", type=int, default=Settings.seeds, help="evaluation seeds per prompt (default 4)")
    p.add_argument("--first-seed", type=int, default=Settings.first_seed, help="first evaluation seed (default 0)")
    p.add_argument("--train-seeds", default="0", help="comma-separated training seeds (default 0)")
    p.add_argument(
        "--attack",
        default="none",
        help="comma-separated attacks (random, soft, gcg, inversion): pre-ASR, a post-ASR column each (default none)",
    )
    p.add_argument("--eval-steps", type=int, default=Settings.eval_steps, help="DDIM steps of the evaluation (25)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override in every cell's config (repeatable)"
    )
    p.add_argument("--configs", type=Path, default=None, help="folder of the methods' toy configs (configs/toy)")
    return p


def main(argv: list[str] | None = None) -> Path:
    args = parser().parse_args(argv)
    with reported(args.debug):
        check_writable(args.out, "--out")
        if args.quick and args.concepts:
            raise ValueError("--quick picks the concepts itself; drop --concepts or --quick")
        methods = parse_methods(args.methods)
        concepts = parse_concepts(",".join(QUICK) if args.quick else args.concepts)
        try:
            train_seeds = [int(s) for s in args.train_seeds.split(",")]
        except ValueError:
            raise ValueError(f"--train-seeds {args.train_seeds!r} is not a list of integers; e.g. 0,1,2") from None
        settings = Settings(args.seeds, args.first_seed, args.eval_steps, attack=args.attack, overrides=args.set)
        settings.check()
        configs = args.configs or default_configs()
        if not configs.is_dir():
            raise FileNotFoundError(f"no config folder at {configs}; pass --configs DIR (the repository's configs/toy)")
    # Lightning's per-fit notices (GPU/TPU availability, tips) would repeat once per cell.
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    start = time.time()
    with reported(args.debug):
        rows, originals = run(args.out, methods, concepts, train_seeds, settings, configs)
    files = write_report(args.out, rows, originals, title=f"advanchor toy benchmark: {args.out.name}")
    print(f"finished in {time.time() - start:.0f} s; wrote " + ", ".join(str(p) for p in files.values()))
    return args.out


if __name__ == "__main__":
    main()
