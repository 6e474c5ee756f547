"""How far bf16 autocast moves the adversarial anchor from its fp32 value, on a CPU.

The official AdvAnchor scripts run in fp32, and delta starts at 1e-7 * randn: in bf16 (8 bits of
mantissa) such a perturbation is smaller than the rounding step of the token embeddings it is added
to. This runs the same interleaved inner loop (`anchor.max_inner_steps` updates of delta from the same
start, on the same z_t and t) in fp32 and under `torch.autocast("cpu", torch.bfloat16)`, and reports:

- `embedding_change`: how much the initial delta changes the anchor's text embedding E(c_a; delta);
- `delta_rel_diff`: ||delta_bf16 - delta_fp32|| / ||delta_fp32 - delta_start|| after the inner loop;
- `loss_fp32`, `loss_bf16`: the anchor loss after it.

    python benchmarks/anchor_precision.py --model tiny --json precision.json
"""

from __future__ import annotations

import argparse
import json
from contextlib import nullcontext

import torch

from advanchor.anchors import AnchorOptions
from advanchor.export import write_atomic
from advanchor.methods import AdvAnchor
from advanchor.models import load_pipeline
from advanchor.testing import TOY_PROMPTS, tiny_pipeline


def inner_loop(pipe, model: str, bf16: bool, draw: int, steps: int) -> dict:
    """One image's inner loop with the official anchor settings (adv1, Adam lr 1e-4, init 1e-7).

    Only delta changes, so every run can share `pipe`."""
    torch.manual_seed(0)
    anchor = AnchorOptions(loss="adv1", lr=1e-4, max_inner_steps=steps, init_scale=1e-7, reset_optimizer=True)
    module = AdvAnchor(concepts=["circle"], pretrained=model, prompts=TOY_PROMPTS, anchor=anchor).attach(pipe)
    g = torch.Generator().manual_seed(draw)
    size = pipe.unet.config.sample_size
    zt = torch.randn(1, pipe.unet.config.in_channels, size, size, generator=g)
    t = torch.randint(0, 1000, (1,), generator=g)
    start = module.deltas[0].detach().clone()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    with autocast:
        with torch.no_grad():
            perturbed = module.anchor_embedding(0).float()
            module.deltas[0].zero_()
            clean = module.anchor_embedding(0).float()
            module.deltas[0].copy_(start)
        eps0, eps_attrs = module._frozen_references(zt, t, module._concept_text(0))
        inner = module._optimise_anchor(0, zt, t, eps0, eps_attrs, steps)
    return {
        "delta": module.deltas[0].detach().clone(),
        "start": start,
        "loss": inner.loss,
        "steps": inner.steps,
        "embedding_change": float((perturbed - clean).abs().max()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "toy"], default="tiny", help="tiny random pipeline or the toy one")
    parser.add_argument("--steps", type=int, default=30, help="inner steps (the official w_iter_break)")
    parser.add_argument("--draws", type=int, default=4, help="(z_t, t) draws")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    pipe = tiny_pipeline() if args.model == "tiny" else load_pipeline("toy")
    rows = []
    for draw in range(args.draws):
        fp32, bf16 = (inner_loop(pipe, args.model, b, draw, args.steps) for b in (False, True))
        moved = (fp32["delta"] - fp32["start"]).norm()
        rows.append(
            {
                "draw": draw,
                "steps_fp32": fp32["steps"],
                "steps_bf16": bf16["steps"],
                "embedding_change_fp32": fp32["embedding_change"],
                "embedding_change_bf16": bf16["embedding_change"],
                "delta_rel_diff": float((bf16["delta"] - fp32["delta"]).norm() / moved),
                "loss_fp32": fp32["loss"],
                "loss_bf16": bf16["loss"],
            }
        )
    report = {"model": args.model, "steps": args.steps, "draws": rows}
    header = ("draw", "steps", "emb change fp32", "bf16", "delta diff", "loss fp32", "bf16")
    print("{:>4} {:>9} {:>16} {:>9} {:>10} {:>11} {:>11}".format(*header))
    for r in rows:
        print(
            f"{r['draw']:>4} {r['steps_fp32']:>4}/{r['steps_bf16']:<4} {r['embedding_change_fp32']:>16.2e} "
            f"{r['embedding_change_bf16']:>9.2e} {r['delta_rel_diff']:>10.3f} "
            f"{r['loss_fp32']:>11.4e} {r['loss_bf16']:>11.4e}"
        )
    if args.json:
        write_atomic(args.json, json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
