"""Grid search of a method's toy config on tuning seeds, resumable: every finished cell is skipped.

    python benchmarks/tune.py --method ft --out outputs/tune-ft \
        --grid model.mask=none,salun,rbm --grid model.lr=1e-4,1e-3 --first-seed 100 --seeds 4

Each cell runs `python train.py --method M` with the cell's overrides and the evaluation moved to seeds
first_seed..first_seed+seeds-1, so that the tuning never reads the seeds that README reports (0..7).
A cell's run folder is <out>/<cell>; the table (erased, paraphrase, retained, neighbour accuracy,
fidelity, training or edit seconds) is printed and written to <out>/results.csv.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = (
    "erased_accuracy",
    "paraphrase_erased_accuracy",
    "retained_accuracy",
    "in_domain_accuracy",
    "cross_domain_accuracy",
    "neighbor_accuracy",
    "fidelity",
)


def cells(grids: list[str]) -> list[dict[str, str]]:
    """Every combination of `key=v1,v2,...` grids, as {key: value}; a value may be a [list]."""
    axes = []
    for grid in grids:
        key, sep, values = grid.partition("=")
        if not sep or not values:
            raise SystemExit(f"error: --grid {grid!r} is not key=v1,v2,...; e.g. --grid model.lr=1e-4,1e-3")
        # Commas inside [...] belong to a list value: model.preserve=[a,b],[c] is two values.
        axes.append([(key, v) for v in re.split(r",(?![^\[]*\])", values)])
    return [dict(combo) for combo in itertools.product(*axes)]


def cell_name(cell: dict[str, str]) -> str:
    return "_".join(f"{k.split('.')[-1]}={v}" for k, v in cell.items()) or "default"


def run_cell(method: str, cell: dict[str, str], folder: Path, seeds: int, first_seed: int, extra: list[str]) -> dict:
    """The cell's metrics.json, training it first unless it is already there."""
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        argv = [sys.executable, str(ROOT / "train.py"), "--method", method, "--trainer.logger=false"]
        # `extra` (--set, --config among them) first, so that the cell's own values override it.
        argv += extra + [f"--{k}={v}" for k, v in cell.items()]
        argv += [f"--eval.seeds={seeds}", f"--eval.first_seed={first_seed}", "--eval.before=false"]
        argv += ["--trainer.enable_progress_bar=false"]
        argv += [f"--output_dir={folder.parent}", f"--run_name={folder.name}"]
        subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(metrics.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="advanchor")
    parser.add_argument("--out", type=Path, required=True, help="folder of the cells' runs and results.csv")
    parser.add_argument(
        "--grid", action="append", default=[], help="key=v1,v2,... (repeatable; a value may be a [list])"
    )
    parser.add_argument("--set", action="append", default=[], help="key=value applied to every cell (repeatable)")
    parser.add_argument("--seeds", type=int, default=4, help="evaluation seeds per prompt (default 4)")
    parser.add_argument("--first-seed", type=int, default=100, help="first evaluation seed (default 100)")
    args = parser.parse_args(argv)
    extra = [f"--{s}" for s in args.set]
    rows = []
    for cell in cells(args.grid):
        name = cell_name(cell)
        metrics = run_cell(args.method, cell, args.out / name, args.seeds, args.first_seed, extra)
        after = next(iter(metrics["after"].values()))
        seconds = metrics.get("train_time_s", metrics.get("edit_time_s"))
        rows.append({"cell": name, **{c: after.get(c) for c in COLUMNS}, "seconds": seconds})
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    from advanchor.export import write_atomic

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(args.out / "results.csv", buffer.getvalue())


if __name__ == "__main__":
    main()
