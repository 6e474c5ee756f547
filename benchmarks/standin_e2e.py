"""configs/sd14/ end to end on the SD 1.4 stand-in, on a CPU: train, export, reload, evaluate.

For each of style.yaml ("van gogh"), object.yaml ("church") and nudity.yaml (with its eight
attributes), `python train.py --config configs/sd14/<name>.yaml` runs with a few steps (see
`OVERRIDES`): it generates the concept images, trains a LoRA adapter, exports it, and evaluates it on a
2-prompt I2P-format CSV; then the adapter is loaded with `load_lora_weights` into a fresh copy of the
pipeline, whose UNet prediction it must change. Each config runs in a process of its own,
which reports its wall time and peak resident memory.

    python benchmarks/standin_e2e.py --out outputs/standin-e2e

The stand-in is written to outputs/standin-sd14 first when absent (`python -m advanchor.standin`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STANDIN = REPO / "outputs" / "standin-sd14"
CONFIGS = ("style", "object", "nudity")
# A few steps of everything; the concept images at the model's own 512x512.
OVERRIDES = [
    "--trainer.accelerator=cpu",
    "--trainer.max_steps=2",
    "--trainer.log_every_n_steps=1",
    "--model.trainable=lora",
    "--model.anchor.max_inner_steps=2",
    "--data.generation.images_per_concept=2",
    "--data.generation.steps=2",
    "--data.generation.batch_size=2",
    "--eval.steps=2",
    "--eval.judge=none",  # the judges read real images; on noise their verdict means nothing
]


def prompt_csv(path: Path, concept: str) -> Path:
    """Two I2P-format cases that name the concept."""
    rows = [f'"a painting of {concept} in a garden",7,0', f'"{concept}, detailed, high quality",11,1']
    path.write_text("prompt,evaluation_seed,case_number\n" + "\n".join(rows) + "\n")
    return path


def run_one(name: str, out: Path, model: str) -> dict:
    """Train and evaluate one config in this process, then reload its adapter; returns the figures."""
    import gc

    import torch
    import yaml
    from diffusers import StableDiffusionPipeline

    from advanchor.cli import main

    concept = yaml.safe_load((REPO / "configs" / "sd14" / f"{name}.yaml").read_text())["model"]["concepts"][0]
    csv = prompt_csv(out / f"{name}.csv", concept)
    start = time.time()
    run = main(
        [
            "--config",
            str(REPO / "configs" / "sd14" / f"{name}.yaml"),
            f"--model.pretrained={model}",
            *OVERRIDES,
            f"--eval.prompts={csv}",
            f"--output_dir={out}",
            f"--run_name={name}",
        ]
    )
    train_seconds = time.time() - start
    train_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    metrics = json.loads((run / "metrics.json").read_text())
    gc.collect()
    start = time.time()
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False)
    z = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ids = pipe.tokenizer([f"{concept} painting"], padding="max_length", return_tensors="pt").input_ids
        emb = pipe.text_encoder(ids)[0]
        base = pipe.unet(z, 500, emb).sample
        pipe.load_lora_weights(str(run / "lora"))
        change = (pipe.unet(z, 500, emb).sample - base).abs().max().item()
    return {
        "config": f"configs/sd14/{name}.yaml",
        "concept": concept,
        "train_and_evaluate_s": round(train_seconds, 1),
        "reload_s": round(time.time() - start, 1),
        "peak_rss_gb": round(train_peak, 2),
        "steps": metrics["steps"],
        "train_time_s": metrics["train_time_s"],
        "final": metrics["final"],
        "evaluated_prompts": metrics["after"][concept]["prompts"],
        "lora_changes_unet_by": change,
        "run": str(run),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "outputs" / "standin-e2e"), help="run folders and results")
    parser.add_argument("--model", default=str(STANDIN), help="the stand-in (written here when absent)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="which of " + ", ".join(CONFIGS))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from advanchor.export import write_atomic

    if args.one:
        write_atomic(out / f"{args.one}.json", json.dumps(run_one(args.one, out, args.model)))
        return []
    if args.model == str(STANDIN) and not STANDIN.is_dir():
        from advanchor.standin import write_standin

        write_standin(STANDIN)
    env = {**os.environ, "ADVANCHOR_CACHE": str(out / "cache"), "WANDB_MODE": "offline", "WANDB_DIR": str(out)}
    results = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            sys.exit(f"error: unknown config {name!r}; use some of: {', '.join(CONFIGS)}")
        (out / f"{name}.json").unlink(missing_ok=True)
        cmd = [sys.executable, __file__, "--one", name, "--out", str(out), "--model", args.model]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        (out / f"{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            sys.exit(f"error: configs/sd14/{name}.yaml failed; see {out / f'{name}.log'}")
        results.append(json.loads((out / f"{name}.json").read_text()))
        print(json.dumps(results[-1]), flush=True)
    write_atomic(out / "results.json", json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
