"""Reproducible build of the shipped toy world: `python -m advanchor.toyworld.build`.

Trains the VAE, then the text encoder and UNet jointly (Lightning) on the VAE's latents, then the
classifier, all with fixed seeds, and writes the diffusers pipeline and the classifier.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from diffusers import StableDiffusionPipeline

from ..errors import ArgumentParser, check_writable, reported
from ..export import staged_dir
from .assets import ASSETS
from .classifier import save_classifier
from .components import build_scheduler, build_text_encoder, build_unet
from .render import render_dataset
from .tokenizer import build_tokenizer
from .train_classifier import accuracy, train_classifier
from .train_denoiser import train_denoiser
from .train_vae import encode, train_vae


def build(
    out: Path,
    seed: int,
    images: int,
    vae_steps: int,
    unet_steps: int,
    classifier_steps: int,
    classifier_pool: int = 8000,
) -> dict:
    times = {}
    start = time.time()
    pixels, scenes = render_dataset(images, seed)
    times["render_s"] = time.time() - start

    vae = train_vae(pixels, vae_steps, seed=seed)
    latents = encode(vae, pixels)
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    latents = latents * vae.config.scaling_factor
    times["vae_s"] = time.time() - start - sum(times.values())

    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(
        len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id
    )
    scheduler = build_scheduler()
    unet, text_encoder = train_denoiser(
        build_unet(), text_encoder, tokenizer, scheduler, latents, scenes, unet_steps, seed=seed
    )
    times["denoiser_s"] = time.time() - start - sum(times.values())

    classifier = train_classifier(vae, classifier_steps, pool=classifier_pool, seed=seed)
    times["classifier_s"] = time.time() - start - sum(times.values())
    report = {
        "seed": seed,
        "images": images,
        "vae_steps": vae_steps,
        "unet_steps": unet_steps,
        "classifier_steps": classifier_steps,
        "classifier_pool": classifier_pool,
        "classifier_accuracy": accuracy(classifier, 2000, seed + 1),
        **times,
    }

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # Staged next to the destination, so an interrupted build never leaves half a model.
    with staged_dir(out) as tmp:
        pipe.save_pretrained(tmp / "pipeline", safe_serialization=True)
        save_classifier(classifier, tmp / "classifier")
        report["total_s"] = time.time() - start
        (tmp / "build.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ASSETS, help="output directory (default: the package's assets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=30000, help="renders for the VAE and the denoiser")
    parser.add_argument("--vae-steps", type=int, default=1200)
    parser.add_argument("--unet-steps", type=int, default=6500)
    parser.add_argument("--classifier-steps", type=int, default=500)
    parser.add_argument("--classifier-pool", type=int, default=8000, help="renders the classifier trains on")
    args = parser.parse_args(argv)
    with reported(args.debug):
        counts = (args.images, args.vae_steps, args.unet_steps, args.classifier_steps, args.classifier_pool)
        if min(counts) < 1:
            raise ValueError(
                "--images, --vae-steps, --unet-steps, --classifier-steps and --classifier-pool must be >= 1"
            )
        check_writable(args.out, "--out")
    report = build(args.out, args.seed, *counts)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
