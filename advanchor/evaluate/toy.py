"""Erasure metrics on the toy world, read by the shipped classifier."""

from __future__ import annotations

from diffusers import StableDiffusionPipeline

from ..toyworld.classifier import Classifier
from ..toyworld.quality import GUIDANCE_SCALE, STEPS, Probe, _mean, classify_probes, hits, per_concept, probes
from ..toyworld.vocab import NEIGHBORS, PARAPHRASES, concept_kind


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
) -> dict:
    """erased_accuracy (lower is better), paraphrase_erased_accuracy, retained_accuracy, neighbor_accuracy,
    color_accuracy of erased prompts, and per-concept accuracy of the retained prompts."""
    kind = concept_kind(concept)
    erased, paraphrased, retained = split_probes(concept)
    items = erased + paraphrased + retained
    readings = classify_probes(pipe, classifier, items, seeds, guidance_scale, steps)
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
        "settings": {"seeds": seeds, "guidance_scale": guidance_scale, "steps": steps},
    }
    if paraphrased:
        report["paraphrase_erased_accuracy"] = _mean(para_shows)
    if concept in NEIGHBORS:
        report["neighbor"] = NEIGHBORS[concept]
        report["neighbor_accuracy"] = others[NEIGHBORS[concept]]
    if colors:
        report["color_accuracy"] = _mean(colors)
    return report
