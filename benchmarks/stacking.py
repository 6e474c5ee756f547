"""Stacking erasure adapters on the toy world: do concepts erased separately stay erased together?

    python benchmarks/stacking.py [--out outputs/stacking] [--train-seeds 0,1,2]

For each set of concepts (circle + striped, then circle + square + triangle) and training seed it compares:
- alone: each concept's own AdvAnchor adapter (the benchmark's cell, its toy config), one at a time;
- stacked: those adapters loaded together with `advanchor.load_erasers` (diffusers' multi-adapter);
- multi: one AdvAnchor run that erases the whole set (configs/toy/advanchor.yaml, the concepts' steps added
  up: 400 per concept, as many as the stack's adapters took together).
Each model's images of every probe prompt (evaluation seeds 0-3, the benchmark's) are read by the shipped
classifier: each concept's erased accuracy, and the retained accuracy of the prompts that name none of the
set. The single-concept cells are the benchmark's (`OUT/cells`, resumable as it is); the multi runs and
every model's readings are kept under OUT and reused, so a killed run picks up where it stopped.
OUT/stacking.json holds every reading's scores, OUT/stacking.md the table (mean and worst over training seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from advanchor.benchmark.cells import Cell, default_configs  # noqa: E402
from advanchor.benchmark.runner import Settings, original_images, run, train  # noqa: E402
from advanchor.evaluate.toy import probe_image_map, read_image_map, stack_scores  # noqa: E402
from advanchor.export import write_atomic  # noqa: E402
from advanchor.models import load_pipeline  # noqa: E402
from advanchor.stack import load_erasers  # noqa: E402
from advanchor.toyworld import load_classifier  # noqa: E402
from advanchor.toyworld.quality import probes  # noqa: E402

METHOD = "advanchor"
SETS = {"circle+striped": ["circle", "striped"], "circle+square+triangle": ["circle", "square", "triangle"]}
STEPS_PER_CONCEPT = 400  # configs/toy/advanchor.yaml's trainer.max_steps


def multi_run(out: Path, name: str, concepts: list[str], seed: int, overrides: list[str]) -> Path:
    """The run folder of one AdvAnchor run erasing `concepts` together, trained unless it is finished."""
    folder = out / "multi" / name / f"seed{seed}"
    if not (folder / "metrics.json").is_file():
        steps = [f"trainer.max_steps={STEPS_PER_CONCEPT * len(concepts)}", *overrides]
        run_, result = train(default_configs() / f"{METHOD}.yaml", METHOD, concepts, seed, folder, steps)
        result.save(folder, config_yaml=run_.config_yaml)
    return folder


def readings(out: Path, key: str, sources: list[Path], settings: Settings, classifier) -> dict[str, list[dict]]:
    """The classifier's reading of every probe prompt under the toy model with `sources` loaded, kept in
    OUT/readings/<key>.json."""
    path = out / "readings" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    pipe = load_pipeline("toy")
    load_erasers(pipe, sources)
    images = probe_image_map(
        pipe, probes(), settings.seeds, settings.guidance_scale, settings.eval_steps, settings.first_seed
    )
    found = read_image_map(classifier, images)
    write_atomic(path, json.dumps(found))
    return found


def table(results: list[dict]) -> str:
    """Markdown: one row per (set, model), erased accuracy per concept and retained accuracy as the mean
    (worst) over training seeds; the original model's retained accuracy under each set."""
    lines = [
        "| concepts | model | erased accuracy per concept, mean (worst) | retained accuracy, mean (worst) |",
        "|---|---|---|---|",
    ]
    keys = list(dict.fromkeys((r["set"], r["model"]) for r in results))
    for name, model in keys:
        rows = [r for r in results if (r["set"], r["model"]) == (name, model)]
        per_seed = {c: [r["erased_accuracy"][c] for r in rows] for c in rows[0]["erased_accuracy"]}
        erased = ", ".join(f"{c} {_mean(v):.2f} ({max(v):.2f})" for c, v in per_seed.items())
        kept = [r["retained_accuracy"] for r in rows]
        lines.append(f"| {name} | {model} | {erased} | {_mean(kept):.3f} ({min(kept):.3f}) |")
    return "\n".join(lines) + "\n"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "stacking")
    parser.add_argument("--train-seeds", default="0,1,2", help="comma-separated training seeds")
    parser.add_argument("--seeds", type=int, default=4, help="evaluation seeds per probe prompt, from 0")
    parser.add_argument("--eval-steps", type=int, default=Settings.eval_steps, help="DDIM steps of the images")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every run")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.train_seeds.split(",")]
    settings = Settings(seeds=args.seeds, eval_steps=args.eval_steps, overrides=args.overrides)
    concepts = list(dict.fromkeys(c for members in SETS.values() for c in members))
    run(args.out, [METHOD], concepts, seeds, settings, default_configs())
    classifier = load_classifier()
    original = read_image_map(classifier, original_images(args.out, settings))
    jobs = [(name, members, seed) for name, members in SETS.items() for seed in seeds]
    results = []
    for name, members, seed in tqdm(jobs, desc="stacking", unit="set", dynamic_ncols=True):
        cells = {c: Cell(METHOD, c, seed).folder(args.out) for c in members}
        models = {"original": original}
        for concept, folder in cells.items():
            models[f"{concept} alone"] = readings(args.out, f"{concept}-seed{seed}", [folder], settings, classifier)
        models["stacked"] = readings(args.out, f"{name}-stacked-seed{seed}", list(cells.values()), settings, classifier)
        multi = multi_run(args.out, name, members, seed, settings.overrides)
        models["multi"] = readings(args.out, f"{name}-multi-seed{seed}", [multi], settings, classifier)
        for model, found in models.items():
            results.append({"set": name, "model": model, "train_seed": seed, **stack_scores(members, found)})
    write_atomic(args.out / "stacking.json", json.dumps(results, indent=2))
    write_atomic(args.out / "stacking.md", table(results))
    print(table(results))
    return results


if __name__ == "__main__":
    main()
