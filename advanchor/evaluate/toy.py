"""Erasure metrics on the toy world, read by the shipped classifier."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
from diffusers import StableDiffusionPipeline

from ..data import encode_pixels
from ..toyworld.classifier import Classifier
from ..toyworld.quality import GUIDANCE_SCALE, STEPS, Probe, _mean, hits, per_concept, probe_images, probes, read_probes
from ..toyworld.vocab import NEIGHBORS, PARAPHRASES, concept_kind
from .attack import AttackOptions, attack_prompts
from .fidelity import pixel_distance

Original = Callable[[], AbstractContextManager]  # while active, the pipeline is the original model


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
) -> dict:
    """erased_accuracy (lower is better), paraphrase_erased_accuracy, retained_accuracy, neighbor_accuracy,
    color_accuracy of erased prompts, per-concept accuracy of the retained prompts; with `original`
    also fidelity, pre_asr and post_asr (under `attack`, none by default). Images use seeds
    first_seed..first_seed+seeds-1: tuning reads other seeds than the reported evaluation."""
    kind = concept_kind(concept)
    erased, paraphrased, retained = split_probes(concept)
    items = erased + paraphrased + retained
    images = probe_images(pipe, items, seeds, guidance_scale, steps, first_seed)
    readings = read_probes(classifier, images, seeds)
    n_e, n_p = len(erased), len(paraphrased)
    shows = [pred[kind] == concept for preds in readings[:n_e] for pred in preds]
    para_shows = [pred["shape"] == concept for preds in readings[n_e : n_e + n_p] for pred in preds]
    kept = [h for probe, preds in zip(retained, readings[n_e + n_p :]) for h in hits(probe, preds)]
    colors = [h for probe, preds in zip(erased, readings[:n_e]) for h in hits(probe, preds, ("color",))]
    others = per_concept(retained, readings[n_e + n_p :])
    report = {
        "concept": concept,
        "erased_accuracy": _mean(shows),
        "retained_accuracy": _mean(kept),
        "per_concept": others,
        "settings": {"seeds": seeds, "first_seed": first_seed, "guidance_scale": guidance_scale, "steps": steps},
    }
    if paraphrased:
        report["paraphrase_erased_accuracy"] = _mean(para_shows)
    if concept in NEIGHBORS:
        report["neighbor"] = NEIGHBORS[concept]
        report["neighbor_accuracy"] = others[NEIGHBORS[concept]]
    if colors:
        report["color_accuracy"] = _mean(colors)
    if original is not None:
        with original():
            before = probe_images(pipe, retained, seeds, guidance_scale, steps, first_seed)
        report["fidelity"] = pixel_distance(before, images[(n_e + n_p) * seeds :])
        erased_readings = list(zip(erased, readings[:n_e]))
        report.update(
            robustness(pipe, classifier, concept, erased_readings, original, attack, guidance_scale, steps, first_seed)
        )
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
    targets = None
    if attack.method == "soft":
        # UnlearnDiffAtk's targets: the original model's own image of each attacked prompt and seed.
        with original():
            pixels = probe_images(
                pipe, [p for p, _ in erased], seeds, guidance_scale, steps, first_seed
            )  # units' order
        targets = encode_pixels(pipe.vae, pixels)

    def judge(images: torch.Tensor) -> list[bool]:
        return [pred[kind] == concept for pred in classifier.predict(images)]

    return attack_prompts(pipe, attack, judge, units, targets, guidance_scale, steps)
