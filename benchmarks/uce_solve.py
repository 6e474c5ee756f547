"""UCE's closed-form solve on Stable Diffusion 1.4-size projections, on random weights (no download).

    python benchmarks/uce_solve.py [--erased 1] [--preserved 0,10] [--json OUT]

Builds SD 1.4's UNet from its published configuration (CompVis/stable-diffusion-v1-4, unet/config.json:
block_out_channels 320/640/1280/1280, cross_attention_dim 768, attention_head_dim 8) with random
weights, then times `uce_delta` over all 32 attn2 to_k / to_v projections, in fp32, with random
text embeddings: 74 per erased concept (a 2-token concept's final word token to the end of 77 tokens,
as UCE takes them) and 75 per preserved one. Model building is not timed; the solve and the write of
W = W0 + B A into the weights are.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from diffusers import UNet2DConditionModel

from advanchor.export import write_atomic
from advanchor.methods.uce import uce_delta

SD14_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
}


@torch.no_grad()
def time_solve(unet: UNet2DConditionModel, erased: int, preserved: int, seed: int = 0) -> dict:
    """Seconds to solve and write every attn2 to_k / to_v for `erased` and `preserved` concepts."""
    gen = torch.Generator().manual_seed(seed)
    dim = unet.config.cross_attention_dim
    erase = torch.randn(74 * erased, dim, generator=gen)
    guide = torch.randn(74 * erased, dim, generator=gen)
    keep = torch.randn(75 * preserved, dim, generator=gen)
    params = {n: p for n, p in unet.named_parameters() if ".attn2.to_k." in n or ".attn2.to_v." in n}
    start = time.perf_counter()
    for p in params.values():
        w0 = p.float()
        b, a = uce_delta(w0, erase, guide @ w0.T, keep)
        p.copy_(w0 + b @ a)
    return {
        "erased": erased,
        "preserved": preserved,
        "projections": len(params),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--erased", type=int, default=1, help="erased concepts (default 1)")
    parser.add_argument("--preserved", default="0,10", help="preserved-concept counts to time (default 0,10)")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD14_UNET).eval()
    rows = [time_solve(unet, args.erased, int(n)) for n in args.preserved.split(",")]
    print(f"threads {torch.get_num_threads()}, UNet parameters {sum(p.numel() for p in unet.parameters()):,}")
    for row in rows:
        head = f"erased {row['erased']}, preserved {row['preserved']:>3}"
        print(f"{head}: {row['projections']} projections in {row['seconds']:.2f} s")
    if args.json:
        write_atomic(args.json, json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
