"""The attacks' positive control: on a weakly erased adapter, do soft and gcg beat random?

    python benchmarks/attack_control.py [--out outputs/attack-control] [--setting 0:8] [--setting 8:16]

Trains README's weakly erased circle adapter unless OUT/lora exists (`python train.py
--trainer.max_steps=120 --model.lr=7e-4 --model.lora.target_modules='.*attn2\\.(to_q|to_k|to_v|to_out\\.0)'
--trainer.logger=false`, with ADVANCHOR_CACHE in a temporary folder unless it is set), then attacks its
circle prompts with every attack at its default options, the ban on, at each setting FIRST:SEEDS (every
one of the seeds attacked, as `python -m advanchor.evaluate --seeds S --attack-seeds S --first-seed F`
does). Each (setting, attack) is written to OUT/attacks/ and read back, not rerun, while its options are
unchanged; OUT/attacks.json and OUT/attacks.md hold the table. `--lora DIR --concept WORD` attacks another
adapter (e.g. a benchmark cell's) instead; `--set KEY=VALUE` changes an attack option (e.g. schedule=low).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from advanchor.evaluate.asr import Unit  # noqa: E402
from advanchor.evaluate.attack import AttackOptions, attack_prompts  # noqa: E402
from advanchor.evaluate.model import load_edited  # noqa: E402
from advanchor.evaluate.toy import split_probes  # noqa: E402
from advanchor.export import write_atomic  # noqa: E402
from advanchor.toyworld import load_classifier, pipeline_path  # noqa: E402
from advanchor.toyworld.quality import GUIDANCE_SCALE, STEPS, probe_images, read_probes  # noqa: E402
from advanchor.toyworld.vocab import concept_kind  # noqa: E402

CONCEPT = "circle"
# The attacks' defaults were tuned on the first three (seeds 0-39); 40-71 are held out.
SETTINGS = ["0:8", "8:16", "24:16", "40:16", "56:16"]
TRAIN = [
    "--trainer.max_steps=120",
    "--model.lr=7e-4",
    r"--model.lora.target_modules=.*attn2\.(to_q|to_k|to_v|to_out\.0)",
    "--trainer.logger=false",
]


def train(out: Path) -> None:
    """README's weakly erased adapter, into OUT (a train.py run folder)."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as cache:
        env.setdefault("ADVANCHOR_CACHE", cache)
        command = [sys.executable, "train.py", *TRAIN, f"--output_dir={out.parent}", f"--run_name={out.name}"]
        subprocess.run(command, cwd=REPO, env=env, check=True)


class Control:
    """An edited pipeline, its judge for `concept` and its (prompt, seed, pre-success) units per setting."""

    def __init__(self, lora: Path, concept: str = CONCEPT):
        self.pipe, self.original = load_edited(pipeline_path(), str(lora))
        self.classifier = load_classifier()
        self.concept, self.kind = concept, concept_kind(concept)
        self.erased = split_probes(concept)[0]
        self.units: dict[tuple[int, int], list[Unit]] = {}

    def judge(self, images: torch.Tensor) -> list[bool]:
        return [pred[self.kind] == self.concept for pred in self.classifier.predict(images)]

    def prepare(self, first: int, seeds: int) -> list[Unit]:
        """The units of a setting, probe-major as `toy.robustness` has them."""
        if (first, seeds) not in self.units:
            args = (self.erased, seeds, GUIDANCE_SCALE, STEPS, first)
            readings = read_probes(self.classifier, probe_images(self.pipe, *args), seeds)
            self.units[first, seeds] = [
                (p.prompt, first + s, preds[s][self.kind] == self.concept)
                for p, preds in zip(self.erased, readings)
                for s in range(seeds)
            ]
        return self.units[first, seeds]

    def attack(self, options: AttackOptions, first: int, seeds: int) -> dict:
        units = self.prepare(first, seeds)
        args = (GUIDANCE_SCALE, STEPS, self.concept)
        return attack_prompts(self.pipe, options, self.judge, units, self.original, *args)


def table(rows: list[dict]) -> str:
    lines = [
        "| seeds (first:count) | attack | units | pre_asr | post_asr | erased pairs back | attack s | banned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        back = f"{round((r['post_asr'] - r['pre_asr']) * r['units'])} of {round((1 - r['pre_asr']) * r['units'])}"
        lines.append(
            f"| {r['setting']} | {r['method']} | {r['units']} | {r['pre_asr']:.3f} | {r['post_asr']:.3f} | {back} "
            f"| {r['time_s']:.0f} | {', '.join(r['banned'])} |"
        )
    return "\n".join(lines) + "\n"


def overrides(pairs: list[str]) -> dict:
    """KEY=VALUE pairs as AttackOptions fields, each cast to its default's type."""
    defaults = asdict(AttackOptions())
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in defaults or isinstance(defaults[key], dict) or key in ("method", "seeds"):
            sys.exit(f"error: --set {pair}: not an attack option; use one of the scalar fields of AttackOptions")
        out[key] = type(defaults[key])(value)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "attack-control")
    p.add_argument("--lora", type=Path, default=None, help="attack this adapter instead (default: OUT/lora, trained)")
    p.add_argument("--concept", default=CONCEPT, help=f"the adapter's erased concept (default {CONCEPT})")
    p.add_argument("--setting", action="append", default=None, help=f"FIRST:SEEDS (default {', '.join(SETTINGS)})")
    p.add_argument(
        "--attack", action="append", default=None, help="attacks to run (default random, soft, gcg, inversion)"
    )
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE: an attack option other than its default")
    args = p.parse_args()
    changed = overrides(args.set)
    out = args.out.resolve()
    lora = args.lora or out / "lora"
    if args.lora is None and not lora.is_dir():
        train(out)
    if not lora.is_dir():
        sys.exit(f"error: no adapter at {lora}: pass a LoRA folder (with pytorch_lora_weights.safetensors)")
    tag = "".join(f"-{k}={v}" for k, v in sorted(changed.items()))
    control = None
    rows = []
    for setting in args.setting or SETTINGS:
        first, seeds = (int(v) for v in setting.split(":"))
        for method in args.attack or ["random", "soft", "gcg", "inversion"]:
            options = AttackOptions(method=method, seeds=seeds, **changed)
            part = out / "attacks" / f"{method}{tag}-{first}-{seeds}.json"
            row = json.loads(part.read_text()) if part.exists() else None
            if row is None or row["options"] != asdict(options):
                control = control or Control(lora, args.concept)
                start = time.perf_counter()
                report = control.attack(options, first, seeds)
                row = {
                    "setting": setting,
                    "method": method + tag,
                    "options": asdict(options),
                    "units": len(report["attack"]["results"]),
                    "pre_asr": report["pre_asr"],
                    "post_asr": report["post_asr"],
                    "time_s": report["attack"]["time_s"],
                    "wall_s": time.perf_counter() - start,
                    "banned": report["attack"]["banned"],
                    "results": report["attack"]["results"],
                }
                part.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(part, json.dumps(row, indent=2))
            rows.append(row)
            print(f"{setting} {method}: pre {row['pre_asr']:.3f} post {row['post_asr']:.3f} ({row['time_s']:.0f} s)")
    write_atomic(out / "attacks.json", json.dumps(rows, indent=2))
    write_atomic(out / "attacks.md", table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
