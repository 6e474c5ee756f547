"""Evaluate an edited model: `python -m advanchor.evaluate --lora DIR --concept circle [--attack soft]`.

Loads the base pipeline, applies a LoRA directory (through diffusers' `load_lora_weights`) or a
UNet delta, and measures it at fixed seeds. On the shipped toy model every probe prompt is read by
the shipped classifier; a real model is measured on an I2P-format prompt CSV (`--prompts`) with
NudeNet (nudity) or ImageNet ResNet-50 (the paper's objects), LPIPS and FID from local weights.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ArgumentParser, check_writable, reported
from ..export import write_atomic
from .attack import ATTACKS, SCHEDULES, TARGETS, AttackOptions
from .inversion import InversionOptions
from .run import JUDGES, EvalOptions, evaluate


def format_report(report: dict) -> str:
    rows = [(k, v) for k, v in report.items() if isinstance(v, float)]
    rows += [(f"  {k}", v) for k, v in report.get("per_concept", {}).items()]
    if "attack" in report:
        rows.append(("attack_time_s", float(report["attack"]["time_s"])))
    for group in ("nudenet", "nudenet_original"):
        rows += [(f"{group}/{k}", float(v)) for k, v in report.get(group, {}).items()]
    return "\n".join(f"{k:<36} {v:.3f}" for k, v in rows)


def parser() -> argparse.ArgumentParser:
    defaults, attack = EvalOptions(), AttackOptions()
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="toy", help="base pipeline: 'toy', a diffusers directory or a cached hub id")
    edit = p.add_mutually_exclusive_group()
    edit.add_argument("--lora", default=None, help="LoRA directory written by train.py (outputs/<run>/lora)")
    edit.add_argument("--unet-delta", default=None, help="unet_delta.safetensors written by train.py")
    p.add_argument("--concept", required=True, help="the erased concept word")
    p.add_argument("--seeds", type=int, default=8, help="toy model: seeds per prompt (default 8)")
    p.add_argument(
        "--first-seed", type=int, default=0, help="toy model: first seed (default 0; tune on others, e.g. 100)"
    )
    p.add_argument("--attack", choices=ATTACKS, default="none", help="adversarial prompt search (default none)")
    p.add_argument("--attack-tokens", type=int, default=attack.tokens, help="k prepended tokens")
    p.add_argument("--attack-rounds", type=int, default=attack.rounds, help="rounds, each ends with a judgement")
    p.add_argument("--attack-steps", type=int, default=attack.steps, help="soft, gcg: optimisation steps per round")
    p.add_argument("--attack-seeds", type=int, default=attack.seeds, help="toy: attacked seeds per erased prompt")
    p.add_argument("--attack-lr", type=float, default=attack.lr, help="soft: Adam learning rate of the embeddings")
    p.add_argument("--attack-restarts", type=int, default=attack.restarts, help="soft, gcg: chains judged in turn")
    p.add_argument(
        "--attack-timesteps", type=int, default=attack.timestep_blocks, help="soft, gcg: noisy latents per loss"
    )
    p.add_argument(
        "--attack-schedule", choices=SCHEDULES, default=attack.schedule, help="soft, gcg: where timesteps are drawn"
    )
    p.add_argument(
        "--attack-target", choices=TARGETS, default=attack.target, help="soft, gcg: the original's sampling or image"
    )
    p.add_argument("--attack-screen", type=int, default=attack.screen, help="soft, gcg: random draws per start")
    p.add_argument("--attack-top-k", type=int, default=attack.top_k, help="gcg: substitutions per position")
    p.add_argument("--attack-candidates", type=int, default=attack.candidates, help="gcg: swaps evaluated per step")
    p.add_argument(
        "--attack-ban-similarity",
        type=float,
        default=attack.ban_similarity,
        help="tokens this cosine-close to the concept's are banned from the attacks",
    )
    p.add_argument("--inversion-steps", type=int, default=attack.inversion.steps, help="inversion: Adam steps")
    p.add_argument("--inversion-lr", type=float, default=attack.inversion.lr, help="inversion: learning rate")
    p.add_argument(
        "--inversion-images", type=int, default=attack.inversion.images, help="inversion: original images learnt on"
    )
    p.add_argument("--prompts", default=None, help="real models: I2P-format CSV (prompt, evaluation_seed, case_number)")
    p.add_argument("--judge", choices=JUDGES, default=defaults.judge, help="real models: concept judge")
    p.add_argument("--resnet-weights", default=None, help="ResNet-50 weights file (default: torch hub cache)")
    p.add_argument("--lpips", action="store_true", help="real models: LPIPS to the original images")
    p.add_argument("--lpips-weights", default=None, help="AlexNet weights file (default: torch hub cache)")
    p.add_argument("--fid", action="store_true", help="real models: FID to the original images")
    p.add_argument("--fid-weights", default=None, help="pytorch-fid Inception weights file (default: torch hub cache)")
    p.add_argument("--guidance-scale", type=float, default=None, help="default 4.0 (toy) or 7.5")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps, default 25 (toy) or 50")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--allow-pickle", action="store_true", help="also load pickle (.bin) weights, which can run code: trusted only"
    )
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    options = EvalOptions(
        seeds=args.seeds,
        first_seed=args.first_seed,
        attack=AttackOptions(
            method=args.attack,
            tokens=args.attack_tokens,
            rounds=args.attack_rounds,
            steps=args.attack_steps,
            lr=args.attack_lr,
            restarts=args.attack_restarts,
            timestep_blocks=args.attack_timesteps,
            schedule=args.attack_schedule,
            target=args.attack_target,
            screen=args.attack_screen,
            top_k=args.attack_top_k,
            candidates=args.attack_candidates,
            ban_similarity=args.attack_ban_similarity,
            seeds=args.attack_seeds,
            inversion=InversionOptions(steps=args.inversion_steps, lr=args.inversion_lr, images=args.inversion_images),
        ),
        prompts=args.prompts,
        judge=args.judge,
        resnet_weights=args.resnet_weights,
        lpips=args.lpips,
        lpips_weights=args.lpips_weights,
        fid=args.fid,
        fid_weights=args.fid_weights,
        guidance_scale=args.guidance_scale,
        steps=args.steps,
    )
    with reported(args.debug):
        if args.json:
            check_writable(args.json, "--json")
        report = evaluate(args.model, args.concept, args.lora, args.unet_delta, options, args.device, args.allow_pickle)
    print(format_report(report))
    if args.json:
        write_atomic(args.json, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
