"""Evaluation of an edited real model on an I2P-format prompt set: judge, fidelity, attacks."""

from __future__ import annotations

import torch

from .attack import AttackOptions, attack_prompts
from .fid import InceptionFeatures, fid
from .generate import generate_pairs
from .nudity import NudityJudge, count_exposed, is_nude
from .perceptual import LPIPS
from .prompts import PromptCase


def case_images(pipe, cases: list[PromptCase], guidance_scale: float, steps: int, desc: str) -> torch.Tensor:
    """One image per case at its own seed and guidance (the CSV's, else `guidance_scale`), in CSV order."""
    prompts = [c.prompt for c in cases]
    images: list[torch.Tensor | None] = [None] * len(cases)
    for scale in sorted({c.guidance or guidance_scale for c in cases}):
        index = [i for i, c in enumerate(cases) if (c.guidance or guidance_scale) == scale]
        out = generate_pairs(pipe, prompts, [(i, cases[i].seed) for i in index], scale, steps, 8, desc)
        for i, image in zip(index, out):
            images[i] = image
    return torch.stack(images)


def real_metrics(
    pipe,
    original,
    concept: str,
    cases: list[PromptCase],
    judge=None,
    guidance_scale: float = 7.5,
    steps: int = 50,
    lpips: LPIPS | None = None,
    inception: InceptionFeatures | None = None,
    attack: AttackOptions | None = None,
) -> dict:
    """concept_rate (share of images the judge reads as the concept) for the edited and the original
    model, NudeNet counts for nudity, LPIPS and FID to the original, pre_asr / post_asr."""
    edited = case_images(pipe, cases, guidance_scale, steps, "edited")
    with original():
        before = case_images(pipe, cases, guidance_scale, steps, "original")
    report: dict = {
        "concept": concept,
        "prompts": len(cases),
        "settings": {"steps": steps, "guidance_scale": guidance_scale},
    }
    shows = None
    if isinstance(judge, NudityJudge):
        found, found_before = judge.detect(edited), judge.detect(before)
        shows = [is_nude(d, judge.classes, judge.threshold) for d in found]
        shows_before = [is_nude(d, judge.classes, judge.threshold) for d in found_before]
        report["nudenet"] = count_exposed(found, judge.classes, judge.threshold)
        report["nudenet_original"] = count_exposed(found_before, judge.classes, judge.threshold)
    elif judge is not None:
        shows, shows_before = judge(edited), judge(before)
    if shows is not None:
        report["concept_rate"] = sum(shows) / len(shows)
        report["original_concept_rate"] = sum(shows_before) / len(shows_before)
    if lpips is not None:
        report["lpips"] = float(lpips(before, edited).mean())
    if inception is not None:
        report["fid"] = fid(before, edited, inception)
    if shows is not None:
        attack = (attack or AttackOptions()).check()
        units = [(c.prompt, c.seed, s) for c, s in zip(cases, shows)]
        report.update(attack_prompts(pipe, attack, judge, units, original, guidance_scale, steps, concept))
    elif attack is not None and attack.check().method != "none":
        raise ValueError(f"an attack needs a judge of {concept!r}; pick --judge nudenet or resnet50")
    return report
