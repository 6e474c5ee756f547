"""Measure how well a toy pipeline draws what it is asked: `python -m advanchor.toyworld.quality`.

Generates every shape x colour, shape x style and paraphrase prompt at N seeds, classifies the
images with the shipped classifier and reports per-concept accuracy.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from ..errors import ArgumentParser, check_writable, reported
from ..evaluate.generate import generate
from ..export import write_atomic
from ..models import load_pipeline
from .classifier import Classifier, load_classifier
from .vocab import COLORS, PARAPHRASES, SHAPES, STYLES

GUIDANCE_SCALE = 4.0
STEPS = 25


@dataclass(frozen=True)
class Probe:
    """A prompt and the attribute values its images must show."""

    prompt: str
    group: str  # which summary metric it counts towards: shape_color, shape_style, paraphrase
    expect: dict[str, str]
    concept: dict[str, str]  # per-concept table entries: concept word -> attribute it checks


def probes() -> list[Probe]:
    out = []
    for shape in SHAPES:
        for color in COLORS:
            out.append(
                Probe(
                    f"a {color} {shape}",
                    "shape_color",
                    {"shape": shape, "color": color},
                    {shape: "shape", color: "color"},
                )
            )
        for style in STYLES:
            out.append(
                Probe(
                    f"a {shape} in {style} style",
                    "shape_style",
                    {"shape": shape, "style": style},
                    {shape: "shape", style: "style"},
                )
            )
        para = PARAPHRASES[shape]
        for color in COLORS:
            out.append(Probe(f"a {color} {para}", "paraphrase", {"shape": shape}, {para: "shape"}))
    return out


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def probe_images(
    pipe: StableDiffusionPipeline,
    items: list[Probe],
    seeds: int,
    guidance_scale: float = GUIDANCE_SCALE,
    steps: int = STEPS,
    first_seed: int = 0,
) -> torch.Tensor:
    """Every probe's images at seeds first_seed..first_seed+seeds-1, probe-major: (len(items) * seeds, 3, H, W)."""
    seed_list = list(range(first_seed, first_seed + seeds))
    return generate(pipe, [p.prompt for p in items], seed_list, guidance_scale, steps, desc="generating")


def read_probes(classifier: Classifier, images: torch.Tensor, seeds: int) -> list[list[dict]]:
    """The classifier's reading of `probe_images`, one list of `seeds` predictions per probe."""
    preds = classifier.predict(images)
    return [preds[i : i + seeds] for i in range(0, len(preds), seeds)]


def hits(probe: Probe, preds: list[dict], attrs: tuple[str, ...] | None = None) -> list[bool]:
    """One boolean per image and checked attribute: did the image show what the prompt asked?"""
    return [pred[a] == v for pred in preds for a, v in probe.expect.items() if attrs is None or a in attrs]


def per_concept(items: list[Probe], readings: list[list[dict]]) -> dict[str, float]:
    scores: dict[str, list[bool]] = {}
    for probe, preds in zip(items, readings):
        for word, attr in probe.concept.items():
            scores.setdefault(word, []).extend(hits(probe, preds, (attr,)))
    return {k: _mean(v) for k, v in scores.items()}


def measure(
    pipe: StableDiffusionPipeline,
    classifier: Classifier,
    seeds: int,
    guidance_scale: float = GUIDANCE_SCALE,
    steps: int = STEPS,
) -> dict:
    items = probes()
    readings = read_probes(classifier, probe_images(pipe, items, seeds, guidance_scale, steps), seeds)
    by_attr: dict[str, list[bool]] = {"shape": [], "color": [], "style": [], "paraphrase": []}
    for probe, preds in zip(items, readings):
        for attr in probe.expect:
            by_attr["paraphrase" if probe.group == "paraphrase" else attr].extend(hits(probe, preds, (attr,)))
    return {
        "shape_accuracy": _mean(by_attr["shape"]),
        "color_accuracy": _mean(by_attr["color"]),
        "style_accuracy": _mean(by_attr["style"]),
        "paraphrase_accuracy": _mean(by_attr["paraphrase"]),
        "per_concept": per_concept(items, readings),
        "settings": {"seeds": seeds, "guidance_scale": guidance_scale, "steps": steps, "prompts": len(items)},
    }


def format_table(report: dict) -> str:
    lines = [f"{'concept':<12} {'accuracy':>8}"]
    lines += [f"{name:<12} {acc:>8.3f}" for name, acc in report["per_concept"].items()]
    lines.append("")
    lines += [
        f"{k:<20} {report[k]:.3f}"
        for k in ("shape_accuracy", "color_accuracy", "style_accuracy", "paraphrase_accuracy")
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="diffusers pipeline directory (default: the shipped toy model)")
    parser.add_argument("--seeds", type=int, default=16, help="seeds per prompt (default 16)")
    parser.add_argument("--guidance-scale", type=float, default=GUIDANCE_SCALE)
    parser.add_argument("--steps", type=int, default=STEPS, help="DDIM steps")
    parser.add_argument("--classifier", default=None, help="classifier directory (default: the shipped one)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be at least 1")
    with reported(args.debug):
        if args.json:
            check_writable(args.json, "--json")
        pipe, classifier = load_pipeline(args.model or "toy"), load_classifier(args.classifier)
    torch.manual_seed(0)
    report = measure(pipe, classifier, args.seeds, args.guidance_scale, args.steps)
    print(format_table(report))
    if args.json:
        write_atomic(args.json, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
