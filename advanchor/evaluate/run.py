"""`evaluate(...)`: one entry point for the toy world and for real models, used by the CLI and train.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..models import FrozenView, model_source, resolve_path
from .attack import AttackOptions
from .model import load_edited

JUDGES = ("auto", "nudenet", "resnet50", "none")


@dataclass
class EvalOptions:
    """How an edited model is evaluated (train.py's `eval` section; the CLI's flags)."""

    seeds: int = 4  # toy model: seeds per probe prompt
    first_seed: int = 0  # toy model: the first of them; tune on other seeds (e.g. 100) than the ones reported
    before: bool = True  # toy model: also measure the original model before training (train.py)
    attack: AttackOptions = field(default_factory=AttackOptions)
    prompts: str | None = None  # real models: an I2P-format CSV; without one a real model is not evaluated
    judge: str = "auto"  # real models: auto (nudity: nudenet; the paper's objects: resnet50), nudenet, resnet50, none
    resnet_weights: str | None = None  # ResNet-50 file (default: the torch hub cache)
    lpips: bool = False  # real models: LPIPS to the original images
    lpips_weights: str | None = None  # AlexNet file (default: the torch hub cache)
    fid: bool = False  # real models: FID to the original images
    fid_weights: str | None = None  # pytorch-fid Inception file (default: the torch hub cache)
    guidance_scale: float | None = None  # default: 4.0 on the toy model, 7.5 on real ones (the grids too)
    steps: int | None = None  # DDIM steps; default: 25 on the toy model, 50 on real ones (the grids: 25)

    def check(self) -> EvalOptions:
        if self.seeds < 1:
            raise ValueError("eval seeds must be at least 1")
        if self.first_seed < 0:
            raise ValueError(f"eval first_seed must be 0 or more, got {self.first_seed}")
        if self.judge not in JUDGES:
            raise ValueError(f"unknown judge {self.judge!r}; use one of: {', '.join(JUDGES)}")
        self.attack.check()
        if self.prompts is not None:
            from .prompts import load_prompt_csv

            load_prompt_csv(self.prompts)  # a bad CSV stops the run now, not after training
        for name in ("resnet_weights", "lpips_weights", "fid_weights"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"eval.{name} {path} does not exist; fix the path or leave it unset")
        return self


def is_toy_path(model: str) -> bool:
    from ..toyworld import pipeline_path

    return Path(resolve_path(model)).resolve() == Path(pipeline_path()).resolve()


def make_judge(concept: str, options: EvalOptions, device: str = "cpu"):
    """The judge of a real-model concept: NudeNet for nudity, ResNet-50 for the paper's objects, else none."""
    from .imagenet import OBJECT_CLASSES, ObjectJudge
    from .nudity import NudityJudge

    judge = options.judge
    if judge == "auto":
        word = concept.lower()
        judge = "nudenet" if word == "nudity" else "resnet50" if word in OBJECT_CLASSES else "none"
    if judge == "nudenet":
        return NudityJudge()
    if judge == "resnet50":
        return ObjectJudge(concept, options.resnet_weights, device)
    return None


def evaluate_pipeline(pipe, original: FrozenView, concept: str, options: EvalOptions, toy: bool) -> dict | None:
    """Metrics of an edited pipeline whose `original()` view restores the base model; None for a real
    model without a prompt CSV."""
    options.check()
    device = str(pipe.device)
    if toy:
        from ..toyworld import load_classifier
        from ..toyworld.quality import GUIDANCE_SCALE, STEPS
        from .toy import erasure_metrics

        return erasure_metrics(
            pipe,
            load_classifier(),
            concept,
            options.seeds,
            options.guidance_scale or GUIDANCE_SCALE,
            options.steps or STEPS,
            original=original,
            attack=options.attack,
            first_seed=options.first_seed,
        )
    if options.prompts is None:
        return None
    from .fid import InceptionFeatures
    from .perceptual import LPIPS
    from .prompts import load_prompt_csv
    from .real import real_metrics

    return real_metrics(
        pipe,
        original,
        concept,
        load_prompt_csv(options.prompts),
        judge=make_judge(concept, options, device),
        guidance_scale=options.guidance_scale or 7.5,
        steps=options.steps or 50,
        lpips=LPIPS(options.lpips_weights, device) if options.lpips else None,
        inception=InceptionFeatures(options.fid_weights, device) if options.fid else None,
        attack=options.attack,
    )


def evaluate(
    model: str,
    concept: str,
    lora: str | None = None,
    unet_delta: str | None = None,
    options: EvalOptions | None = None,
    device: str = "cpu",
    allow_pickle: bool = False,
) -> dict:
    """Load base + edit and measure it (see `python -m advanchor.evaluate --help`)."""
    options = (options or EvalOptions()).check()
    model_source(model)
    toy = is_toy_path(model)
    if toy:
        from ..toyworld.vocab import concept_kind

        concept_kind(concept)
    elif options.prompts is None:
        raise ValueError("a real model is evaluated on a prompt set; pass --prompts CSV (I2P format)")
    pipe, original = load_edited(model, lora, unet_delta, allow_pickle)
    pipe.to(device)
    report = evaluate_pipeline(pipe, original, concept, options, toy)
    report["settings"].update({"model": model, "lora": lora, "unet_delta": unet_delta})
    return report
