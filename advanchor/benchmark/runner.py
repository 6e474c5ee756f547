"""Run the benchmark's cells, resumably: a finished cell's `cell.json` is kept and never run again."""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path

import safetensors.torch
import torch
from tqdm.auto import tqdm

from ..api import fit
from ..cli import build
from ..evaluate.attack import ATTACKS, AttackOptions
from ..evaluate.toy import erasure_metrics, probe_image_map, read_image_map, scores, split_probes
from ..export import staged_file, write_atomic
from ..logging import image_grid
from ..models import load_pipeline
from ..toyworld import load_classifier
from ..toyworld.quality import GUIDANCE_SCALE, STEPS, probes
from ..toyworld.vocab import concept_kind
from .cells import Cell, config_path
from .metrics import cell_row

SETTINGS_FILE = "settings.json"
SAMPLE_SEEDS = 4  # seeds per prompt in the report's image grids


@dataclass
class Settings:
    """What makes two runs' cells comparable: a folder holds cells of one set of settings only."""

    seeds: int = 4  # evaluation seeds per probe prompt
    first_seed: int = 0  # the first of them (tuning uses 100 and up)
    eval_steps: int = STEPS  # DDIM steps of the evaluation images
    guidance_scale: float = GUIDANCE_SCALE
    attack: str = "none"  # none, or comma-separated attacks (random, soft, gcg, inversion): pre_asr, post_asr_<attack>
    overrides: list[str] = field(default_factory=list)  # key=value applied to every cell's config

    def attacks(self) -> list[str]:
        """The attacks every cell is measured under, in order: none for "none"."""
        return [] if self.attack == "none" else [a.strip() for a in self.attack.split(",")]

    def check(self) -> Settings:
        if self.seeds < 1 or self.eval_steps < 1:
            raise ValueError(f"--seeds and --eval-steps must be at least 1, got {self.seeds} and {self.eval_steps}")
        if self.first_seed < 0:
            raise ValueError(f"--first-seed must be 0 or more, got {self.first_seed}")
        for name in self.attacks():
            if name not in ATTACKS or name == "none":
                raise ValueError(f"unknown attack {name!r} in --attack; use none or some of: {', '.join(ATTACKS[1:])}")
        for item in self.overrides:
            if "=" not in item or item.startswith("="):
                raise ValueError(f"--set {item!r} is not key=value; e.g. --set trainer.max_steps=50")
        return self


def claim(out: Path, settings: Settings, configs: dict[str, Path]) -> None:
    """Record the settings, the attacks' options and the configs' contents in `out`, or check them against a
    previous run's there."""
    configs_hash = {name: hashlib.sha1(p.read_bytes()).hexdigest() for name, p in configs.items()}
    # The attacks' options are code defaults: a folder attacked under other defaults must not be mixed in.
    attacks = {name: asdict(AttackOptions(method=name)) for name in settings.attacks()}
    record = {"settings": asdict(settings), "configs": configs_hash, "attacks": attacks}
    path = out / SETTINGS_FILE
    if path.is_file():
        before = json.loads(path.read_text())
        if before["settings"] != record["settings"]:
            old = before["settings"]
            diff = [f"{k} {old.get(k)!r} there, {v!r} now" for k, v in record["settings"].items() if old.get(k) != v]
            raise ValueError(f"{out} holds a benchmark run with other settings ({'; '.join(diff)}); use another --out")
        changed = [n for n, h in configs_hash.items() if before["configs"].get(n, h) != h]
        if changed:
            raise ValueError(
                f"{out} holds cells trained with other versions of {', '.join(changed)}; use another --out"
            )
        if before.get("attacks", attacks) != attacks:
            raise ValueError(f"{out} holds cells attacked with other attack options (defaults); use another --out")
        record["configs"] = {**before["configs"], **configs_hash}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=2))


def original_images(out: Path, settings: Settings) -> dict[str, torch.Tensor]:
    """The shipped toy model's images of every probe prompt at the evaluation seeds, generated once per
    benchmark folder: prompt -> (seeds, 3, H, W)."""
    path = out / "original" / "images.safetensors"
    if path.is_file():
        return safetensors.torch.load_file(path)
    pipe = load_pipeline("toy")
    images = probe_image_map(
        pipe, probes(), settings.seeds, settings.guidance_scale, settings.eval_steps, settings.first_seed
    )
    with staged_file(path) as tmp:
        safetensors.torch.save_file({k: v.contiguous() for k, v in images.items()}, tmp)
    return images


def sample_prompts(concept: str) -> list[str]:
    """The report's prompts of a concept: three that name it, then three it should leave alone."""
    erased, _, retained = split_probes(concept)
    return [items[i * len(items) // 3].prompt for items in (erased, retained) for i in range(3)]


def sample_grid(images: dict[str, torch.Tensor], concept: str, path: Path) -> None:
    """One row per sample prompt, one column per seed (at most SAMPLE_SEEDS), written atomically as PNG."""
    rows = [images[p][:SAMPLE_SEEDS] for p in sample_prompts(concept)]
    grid = image_grid(torch.cat(rows), rows=len(rows))
    with staged_file(path) as tmp:
        grid.save(tmp, format="PNG")


def finished(cell: Cell, out: Path) -> dict | None:
    """The row of a finished cell, or None."""
    path = cell.folder(out) / "cell.json"
    return json.loads(path.read_text())["row"] if path.is_file() else None


def train(config: Path, method: str, concepts: list[str], seed: int, folder: Path, overrides: list[str]):
    """Erase `concepts` with `method` and the toy config `config` at training seed `seed`, unmeasured and
    unsaved: (the built run, its result); `folder` is the run folder `result.save` should write."""
    argv = [
        f"--config={config}",
        f"--method={method}",
        f"--model.concepts=[{','.join(concepts)}]",
        f"--seed_everything={seed}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--checkpoint.every_n_steps=0",  # a cell is resumed whole: a killed one is run again
        f"--output_dir={folder.parent}",
        f"--run_name={folder.name}",
        *(f"--{o}" for o in overrides),
    ]
    run = build(argv)
    return run, fit(run.cli.model, run.cli.datamodule, run.cli.trainer, config=run.logged_config, measure=False)


def run_cell(
    cell: Cell,
    out: Path,
    settings: Settings,
    config: Path,
    original: dict[str, torch.Tensor],
    originals: dict[str, dict],
    classifier,
) -> dict:
    """Erase the cell's concept with its method's toy config, measure it against the original, save it."""
    folder = cell.folder(out)
    run, result = train(config, cell.method, [cell.concept], cell.train_seed, folder, settings.overrides)
    module = run.cli.model
    start = time.time()
    items = [p for group in split_probes(cell.concept) for p in group]
    images = probe_image_map(
        module.pipe, items, settings.seeds, settings.guidance_scale, settings.eval_steps, settings.first_seed
    )
    report = erasure_metrics(
        module.pipe,
        classifier,
        cell.concept,
        settings.seeds,
        settings.guidance_scale,
        settings.eval_steps,
        original=module.frozen,
        first_seed=settings.first_seed,
        images=images,
        original_images=original,
        attacks=tuple(AttackOptions(method=name) for name in settings.attacks()),
    )
    row = {
        "method": cell.method,
        "concept": cell.concept,
        "kind": concept_kind(cell.concept),
        "train_seed": cell.train_seed,
        **cell_row(report, originals[cell.concept]),
        "train_s": result.metrics.get("train_time_s", result.metrics.get("edit_time_s")),
        "eval_s": round(time.time() - start, 2),
    }
    result.metrics["after"] = {cell.concept: report}
    result.save(folder, config_yaml=run.config_yaml)
    sample_grid(images, cell.concept, folder / "samples.png")
    write_atomic(folder / "cell.json", json.dumps({"row": row, "report": report}, indent=2))
    return row


def run(
    out: Path,
    methods: list[str],
    concepts: list[str],
    train_seeds: list[int],
    settings: Settings,
    configs: Path,
) -> tuple[list[dict], dict[str, dict]]:
    """Every (concept, method, training seed) cell not yet finished in `out`; returns every cell's row and
    the original model's scores per concept."""
    settings.check()
    cells = [Cell(m, c, s) for c in concepts for m in methods for s in train_seeds]
    paths = {cell: config_path(configs, cell.method, cell.concept) for cell in cells}
    claim(out, settings, {p.name: p for p in paths.values()})
    pending = [cell for cell in cells if finished(cell, out) is None]
    if len(pending) < len(cells):
        print(f"{len(cells) - len(pending)} of {len(cells)} cells are already finished in {out}: kept")
    classifier = load_classifier()
    original = original_images(out, settings)
    readings = read_image_map(classifier, original)
    originals = {c: scores(c, readings) for c in concepts}
    for concept in concepts:
        sample_grid(original, concept, out / "original" / f"{concept}.png")
    for cell in tqdm(pending, desc="benchmark cells", unit="cell", dynamic_ncols=True):
        folder = cell.folder(out)
        folder.mkdir(parents=True, exist_ok=True)
        # The cell's own output (its progress bars, Lightning's notices) goes to its log, under one bar.
        with open(folder / "log.txt", "w") as log, redirect_stdout(log), redirect_stderr(log):
            run_cell(cell, out, settings, paths[cell], original, originals, classifier)
    return [finished(cell, out) for cell in cells], originals
