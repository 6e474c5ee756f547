"""A GPU cost model of AdvAnchor on SD 1.4: UNet passes x FLOPs per pass / bf16 rate. An estimate, not a timing.

The FLOPs are counted (torch.utils.flop_counter, matrix products and convolutions) on the SD 1.4
stand-in at 64x64 latents (512x512 images), one prompt of 77 tokens:
- a forward pass of the UNet;
- the anchor's backward pass (to delta only: through the UNet to the text embedding, and the text encoder);
- the unlearning backward pass (to the cross-attention weights);
- the text encoder's forward pass.
An iteration with `S` delta updates costs, ours: S + 1 anchor forwards (text encoder included), S anchor
backwards, 2 frozen and 2 trained forwards, 2 unlearning backwards; the published scripts' pattern: 3 S +
2 frozen forwards (S + 1 of them the anchor's), S anchor backwards, 2 trained forwards and 2 backwards.
Generating the concept images costs `images x steps x 2` UNet forwards (classifier-free guidance; the VAE
is not counted). Dividing by the H100's dense bf16 rate gives a lower bound on the time; real runs reach a
fraction of it.

    python benchmarks/gpu_estimate.py --json outputs/gpu_estimate.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parent.parent
H100_BF16_DENSE = 989e12  # FLOP/s, H100 SXM, dense (NVIDIA's datasheet)


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure(model: str, latent: int) -> dict:
    """FLOPs of each kind of pass, counted on one AdvAnchor method attached to `model`."""
    from advanchor.methods import AdvAnchor
    from advanchor.models import load_pipeline

    torch.manual_seed(0)
    module = AdvAnchor(concepts=["van gogh"], pretrained=model).attach(load_pipeline(model))
    unet = module.unet
    zt = torch.randn(1, unet.config.in_channels, latent, latent)
    t = torch.tensor([500])
    text = module._concept_text(0)
    with torch.no_grad():
        forward = count(lambda: unet(zt, t, text.erase))
        text_forward = count(lambda: module.anchor_embedding(0))

    def anchor_backward():
        eps = unet(zt, t, module.anchor_embedding(0)).sample
        torch.autograd.grad(eps.square().mean(), [module.deltas[0]])

    def unlearning_backward():
        unet(zt, t, text.erase).sample.square().mean().backward()

    with module.frozen():
        anchor_total = count(anchor_backward)
    unlearning_total = count(unlearning_backward)
    return {
        "unet_forward": forward,
        "text_encoder_forward": text_forward,
        "anchor_backward": anchor_total - forward - text_forward,
        "unlearning_backward": unlearning_total - forward,
    }


def iteration_flops(f: dict, steps: int) -> dict:
    """FLOPs of one outer iteration with `steps` delta updates, ours and the reference pattern."""
    anchor_forward = f["unet_forward"] + f["text_encoder_forward"]
    ours = (
        (steps + 1) * anchor_forward
        + steps * f["anchor_backward"]
        + 4 * f["unet_forward"]
        + 2 * f["unlearning_backward"]
    )
    reference = (
        (steps + 1) * anchor_forward
        + (2 * steps + 1) * f["unet_forward"]
        + steps * f["anchor_backward"]
        + 2 * f["unet_forward"]
        + 2 * f["unlearning_backward"]
    )
    return {"ours": ours, "reference": reference}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "outputs" / "standin-sd14"), help="the SD 1.4 stand-in")
    parser.add_argument("--latent", type=int, default=64, help="latent size (64: 512x512 images)")
    parser.add_argument("--inner-steps", type=int, default=30, help="delta updates per iteration (w_iter_break)")
    parser.add_argument("--iterations", type=int, default=50, help="outer iterations of a run (iter_break)")
    parser.add_argument("--images", type=int, default=50, help="concept images generated (images_per_concept)")
    parser.add_argument("--generation-steps", type=int, default=50, help="denoising steps per concept image")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    flops = measure(args.model, args.latent)
    per_iteration = iteration_flops(flops, args.inner_steps)
    generation = args.images * args.generation_steps * 2 * flops["unet_forward"]
    estimate = {
        "flops_per_pass": flops,
        "flops_per_iteration": per_iteration,
        "lower_bound_s_per_iteration": {k: v / H100_BF16_DENSE for k, v in per_iteration.items()},
        "lower_bound_s_per_run": {k: args.iterations * v / H100_BF16_DENSE for k, v in per_iteration.items()},
        "generation_flops": generation,
        "lower_bound_s_generation": generation / H100_BF16_DENSE,
        "settings": {
            "latent": args.latent,
            "inner_steps": args.inner_steps,
            "iterations": args.iterations,
            "images": args.images,
            "generation_steps": args.generation_steps,
            "bf16_flops_per_s": H100_BF16_DENSE,
        },
    }
    text = json.dumps(estimate, indent=2)
    if args.json:
        from advanchor.export import write_atomic

        write_atomic(args.json, text)
    print(text)
    return estimate


if __name__ == "__main__":
    main()
