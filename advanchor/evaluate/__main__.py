"""Evaluate an edited toy model: `python -m advanchor.evaluate --lora DIR --concept circle`.

Loads the base pipeline, applies a LoRA directory (through diffusers' `load_lora_weights`) or a
UNet delta, generates every probe prompt at fixed seeds and reads the images with the shipped
classifier.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffusers import StableDiffusionPipeline

from ..export import load_unet_delta
from ..models import resolve_path
from ..toyworld import load_classifier
from ..toyworld.quality import GUIDANCE_SCALE, STEPS
from ..toyworld.vocab import concept_kind
from .toy import erasure_metrics


def load_edited(model: str, lora: str | None = None, unet_delta: str | None = None) -> StableDiffusionPipeline:
    path = resolve_path(model)
    if not Path(path, "model_index.json").is_file():
        raise SystemExit(f"error: no diffusers pipeline at {path!r} (model_index.json missing); pass --model DIR")
    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True)
    if lora:
        if not Path(lora).exists():
            raise SystemExit(f"error: LoRA {lora!r} does not exist; pass the run's lora/ directory")
        pipe.load_lora_weights(lora)
    if unet_delta:
        load_unet_delta(pipe, unet_delta)
    return pipe


def format_report(report: dict) -> str:
    rows = [(k, v) for k, v in report.items() if isinstance(v, float)]
    rows += [(f"  {k}", v) for k, v in report["per_concept"].items()]
    return "\n".join(f"{k:<28} {v:.3f}" for k, v in rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy", help="base pipeline: 'toy' or a diffusers directory")
    edit = parser.add_mutually_exclusive_group()
    edit.add_argument("--lora", default=None, help="LoRA directory written by train.py (outputs/<run>/lora)")
    edit.add_argument("--unet-delta", default=None, help="unet_delta.safetensors written by train.py")
    parser.add_argument("--concept", required=True, help="the erased concept word")
    parser.add_argument("--seeds", type=int, default=8, help="seeds per prompt (default 8)")
    parser.add_argument("--guidance-scale", type=float, default=GUIDANCE_SCALE)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    try:
        concept_kind(args.concept)
    except ValueError as err:
        parser.error(str(err))
    pipe = load_edited(args.model, args.lora, args.unet_delta)
    report = erasure_metrics(pipe, load_classifier(), args.concept, args.seeds, args.guidance_scale, args.steps)
    report["settings"].update({"model": args.model, "lora": args.lora, "unet_delta": args.unet_delta})
    print(format_report(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
