"""Erasure metrics on the toy world, read by the shipped classifier."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline

from ..toyworld.classifier import Classifier
from ..toyworld.quality import GUIDANCE_SCALE, STEPS, Probe, _mean, hits, per_concept, probe_images, probes, read_probes
from ..toyworld.vocab import NEIGHBORS, PARAPHRASES, concept_kind
from .asr import Original
from .attack import AttackOptions, attack_prompts
from .fidelity import pixel_distance


def split_probes(concept: str) -> tuple[list[Probe], list[Probe], list[Probe]]:
    """(prompts naming the concept, prompts naming its paraphrase, every other prompt)."""
    kind = concept_kind(concept)
    para = PARAPHRASES.get(concept)
    erased, paraphrased, retained = [], [], []
    for probe in probes():
        if concept in probe.concept:
            erased.append(probe)
        elif para is not None and para in probe.concept:
            paraphrased.append(probe)
        elif kind != "shape" and probe.group == "paraphrase":
            continue  # paraphrase prompts measure shapes; a colour or style erasure is read elsewhere
        else:
            retained.append(probe)
    return erased, paraphrased, retained


def domain_hits(retained: list[Probe], readings: list[list[dict]], kind: str) -> tuple[list[bool], list[bool]]:
    """Hits of the retained prompts split by attribute: the erased concept's own domain (`kind`: the
    other shapes for a shape) and every other domain (UnlearnCanvas's IRA and CRA)."""
    same = [h for probe, preds in zip(retained, readings) for h in hits(probe, preds, (kind,))]
    others = tuple(a for a in ("shape", "color", "style") if a != kind)
    cross = [h for probe, preds in zip(retained, readings) for h in hits(probe, preds, others)]
    return same, cross


def scores(concept: str, readings: dict[str, list[dict]]) -> dict:
    """The toy metrics of erasing `concept`, from the classifier's readings of each probe prompt
    (prompt -> one prediction per seed): erased_accuracy (lower is better), paraphrase_erased_accuracy,
    retained_accuracy (split into in_domain_accuracy and cross_domain_accuracy), neighbor_accuracy,
    color_accuracy of the erased prompts, and per_concept accuracy of the retained prompts."""
    kind = concept_kind(concept)
    erased, paraphrased, retained = split_probes(concept)
    kept_readings = [readings[p.prompt] for p in retained]
    shows = [pred[kind] == concept for p in erased for pred in readings[p.prompt]]
    para_shows = [pred["shape"] == concept for p in paraphrased for pred in readings[p.prompt]]
    kept = [h for probe, preds in zip(retained, kept_readings) for h in hits(probe, preds)]
    in_domain, cross_domain = domain_hits(retained, kept_readings, kind)
    colors = [h for p in erased for h in hits(p, readings[p.prompt], ("color",))]
    others = per_concept(retained, kept_readings)
    report = {
        "concept": concept,
        "erased_accuracy": _mean(shows),
        "retained_accuracy": _mean(kept),
        "in_domain_accuracy": _mean(in_domain),
        "cross_domain_accuracy": _mean(cross_domain),
        "per_concept": others,
    }
    if paraphrased:
        report["paraphrase_erased_accuracy"] = _mean(para_shows)
    if concept in NEIGHBORS:
        report["neighbor"] = NEIGHBORS[concept]
        report["neighbor_accuracy"] = others[NEIGHBORS[concept]]
    if colors:
        report["color_accuracy"] = _mean(colors)
    return report


def stack_scores(concepts: list[str], readings: dict[str, list[dict]]) -> dict:
    """The toy metrics of erasing several concepts at once: each one's erased_accuracy (share of its
    prompts' images that show it), and the retained_accuracy of the prompts that `split_probes` retains
    for every one of them (those naming none of the concepts nor a shape's paraphrase)."""
    erased, retained = {}, probes()
    for concept in concepts:
        kind = concept_kind(concept)
        named, _, kept = split_probes(concept)
        erased[concept] = _mean([pred[kind] == concept for p in named for pred in readings[p.prompt]])
        retained = [p for p in retained if p in kept]
    kept = [readings[p.prompt] for p in retained]
    return {
        "erased_accuracy": erased,
        "retained_accuracy": _mean([h for p, preds in zip(retained, kept) for h in hits(p, preds)]),
        "retained_prompts": len(retained),
        "per_concept": per_concept(retained, kept),
    }


def probe_image_map(pipe: StableDiffusionPipeline, items: list[Probe], seeds: int, *args) -> dict[str, torch.Tensor]:
    """prompt -> its images at `seeds` seeds, (seeds, 3, H, W) each; the other arguments are `probe_images`'s."""
    images = probe_images(pipe, items, seeds, *args)
    return {p.prompt: images[i * seeds : (i + 1) * seeds] for i, p in enumerate(items)}


def read_image_map(classifier: Classifier, images: dict[str, torch.Tensor]) -> dict[str, list[dict]]:
    """The classifier's reading of every prompt's images, in one batch."""
    prompts = list(images)
    seeds = len(images[prompts[0]])
    readings = read_probes(classifier, torch.cat([images[p] for p in prompts]), seeds)
    return dict(zip(prompts, readings))


def erasure_metrics(
    pipe: StableDiffusionPipeline,
    classifier: Classifier,
    concept: str,
    seeds: int = 4,
    guidance_scale: float = GUIDANCE_SCALE,
    steps: int = STEPS,
    original: Original | None = None,
    attack: AttackOptions | None = None,
    first_seed: int = 0,
    images: dict[str, torch.Tensor] | None = None,
    original_images: dict[str, torch.Tensor] | None = None,
    attacks: tuple[AttackOptions, ...] = (),
) -> dict:
    """`scores` of the edited pipeline at seeds first_seed..first_seed+seeds-1 (tuning reads other seeds
    than the reported evaluation); with `original` also fidelity, pre_asr and post_asr (under `attack`,
    none by default). `images` / `original_images` (`probe_image_map`'s) are used instead of generating
    the edited / original model's images again, as the benchmark does. Each of `attacks` adds its own
    `robustness` report under report["attacks"][method] (the benchmark's attack columns)."""
    erased, paraphrased, retained = split_probes(concept)
    if images is None:
        images = probe_image_map(pipe, erased + paraphrased + retained, seeds, guidance_scale, steps, first_seed)
    readings = read_image_map(classifier, images)
    report = scores(concept, readings)
    report["settings"] = {"seeds": seeds, "first_seed": first_seed, "guidance_scale": guidance_scale, "steps": steps}
    if original is not None:
        if original_images is None:
            with original():
                original_images = probe_image_map(pipe, retained, seeds, guidance_scale, steps, first_seed)
        before = torch.cat([original_images[p.prompt] for p in retained])
        report["fidelity"] = pixel_distance(before, torch.cat([images[p.prompt] for p in retained]))
        erased_readings = [(p, readings[p.prompt]) for p in erased]
        args = (pipe, classifier, concept, erased_readings, original)
        report.update(robustness(*args, attack, guidance_scale, steps, first_seed))
        if attacks:
            report["attacks"] = {a.method: robustness(*args, a, guidance_scale, steps, first_seed) for a in attacks}
    return report


def robustness(
    pipe: StableDiffusionPipeline,
    classifier: Classifier,
    concept: str,
    erased: list[tuple[Probe, list[dict]]],
    original: Original,
    attack: AttackOptions | None,
    guidance_scale: float,
    steps: int,
    first_seed: int = 0,
) -> dict:
    """pre_asr / post_asr over the erased prompts (with their readings) at the first `attack.seeds` seeds."""
    attack = (attack or AttackOptions()).check()
    seeds = min(attack.seeds, min(len(preds) for _, preds in erased))
    kind = concept_kind(concept)
    units = [(p.prompt, first_seed + s, preds[s][kind] == concept) for p, preds in erased for s in range(seeds)]

    def judge(images: torch.Tensor) -> list[bool]:
        return [pred[kind] == concept for pred in classifier.predict(images)]

    return attack_prompts(pipe, attack, judge, units, original, guidance_scale, steps, concept)
