"""Where along sampling does the soft/gcg loss tell tokens that bring a concept back from those that do not?

    python benchmarks/attack_signal.py [--lora outputs/attack-control/lora] [--concept circle]
        [--setting 0:8] [--setting 8:16] [--draws 24] [--out outputs/attack-signal]

For every erased (prompt, seed) at each setting FIRST:SEEDS whose plain image does not show the concept,
draws D sets of allowed tokens as the random attack does, and for each: the attack's loss at every step
of the original model's sampling of that seed (the `trajectory` target), and the judge's verdict on the
image the tokens give. Reports, per step and per schedule's span, the AUC of "lower loss, concept back"
(averaged over units with draws of both outcomes: 0.5 is no signal, below 0.5 a misleading one), and how
many units the `rounds` lowest-loss draws bring back against as many drawn at random (expected). The
adapter defaults to the positive control's (`benchmarks/attack_control.py` trains it). Writes
OUT/signal.json and OUT/signal.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from math import comb
from pathlib import Path

import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from attack_control import CONCEPT, Control  # noqa: E402

from advanchor.evaluate.attack import AttackOptions, TokenSearch, original_targets, schedule_span  # noqa: E402
from advanchor.evaluate.generate import generate_pairs  # noqa: E402
from advanchor.export import write_atomic  # noqa: E402
from advanchor.toyworld.quality import GUIDANCE_SCALE, STEPS  # noqa: E402

SPANS = ("stratified", "low", "high", "early")


@torch.no_grad()
def readings(control: Control, first: int, seeds: int, draws: int) -> list[dict]:
    """Per erased unit: the per-step losses (D, S) of D random token draws and whether each brought it back."""
    units = control.prepare(first, seeds)
    targets = original_targets(control.pipe, control.original, units, GUIDANCE_SCALE, STEPS, "trajectory")
    search = TokenSearch(control.pipe, AttackOptions(method="random"), control.concept)
    out = []
    for i, tr in tqdm(targets.items(), desc=f"signal {first}:{seeds}", unit="prompt"):
        prompt, seed, _ = units[i]
        adv = search.random_tokens(torch.Generator().manual_seed(10_007 * seed + i), draws)  # (D, k)
        conds = search.condition(search.ids(prompt, adv))  # (D, L, E)
        steps = range(len(tr.timesteps))
        batches = [(tr.timesteps[s : s + 1], tr.predictions[s : s + 1], tr.latents[s : s + 1]) for s in steps]
        losses = torch.stack([search.losses(conds, b) for b in batches], 1)  # (D, S)
        pairs = [(d, seed) for d in range(draws)]
        images = generate_pairs(control.pipe, conds, pairs, GUIDANCE_SCALE, STEPS, progress=False)
        out.append(
            {
                "prompt": prompt,
                "seed": seed,
                "timesteps": tr.timesteps.tolist(),
                "losses": losses.tolist(),
                "back": control.judge(images),
            }
        )
    return out


def auc(scores: list[float], back: list[bool]) -> float | None:
    """P(a draw that brought the concept back has the lower score than one that did not); None without both."""
    pos = [s for s, b in zip(scores, back) if b]
    neg = [s for s, b in zip(scores, back) if not b]
    if not pos or not neg:
        return None
    return sum((p < n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def mean_auc(scores: list[torch.Tensor], backs: list[list[bool]]) -> float:
    """`auc` averaged over the units that have draws of both outcomes: scores (D,) per unit."""
    values = [a for x, back in zip(scores, backs) if (a := auc(x.tolist(), back)) is not None]
    return sum(values) / max(len(values), 1)


def summary(units: list[dict], rounds: int) -> dict:
    steps = len(units[0]["timesteps"])
    losses = [torch.tensor(u["losses"]) for u in units]  # (D, S) per unit
    backs = [u["back"] for u in units]
    per_step = [
        {"step": s, "timestep": units[0]["timesteps"][s], "auc": mean_auc([x[:, s] for x in losses], backs)}
        for s in range(steps)
    ]
    n = len(backs[0])
    chance = sum(1 - comb(n - sum(back), rounds) / comb(n, rounds) for back in backs)
    spans = []
    for name in SPANS:
        low, high = schedule_span(name, steps)
        scores = [x[:, low:high].mean(1) for x in losses]  # (D,) per unit
        best = sum(any(back[j] for j in x.argsort()[:rounds]) for x, back in zip(scores, backs))
        row = {"schedule": name, "steps": f"{low}-{high - 1}", "auc": mean_auc(scores, backs)}
        spans.append({**row, "best": best, "chance": chance})
    return {"units": len(units), "per_step": per_step, "spans": spans}


def table(s: dict, rounds: int) -> str:
    lines = [
        f"{s['units']} erased units. Steps in timestep order (step 0 is the last of sampling).\n",
        f"| schedule | steps | AUC | back by the {rounds} lowest-loss draws | by {rounds} random draws (expected) |",
        "|---|---|---|---|---|",
        *(f"| {r['schedule']} | {r['steps']} | {r['auc']:.3f} | {r['best']} | {r['chance']:.1f} |" for r in s["spans"]),
        "",
        "| step | timestep | AUC |",
        "|---|---|---|",
        *(f"| {r['step']} | {r['timestep']} | {r['auc']:.3f} |" for r in s["per_step"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lora", type=Path, default=REPO / "outputs" / "attack-control" / "lora")
    p.add_argument("--concept", default=CONCEPT)
    p.add_argument("--setting", action="append", default=None, help="FIRST:SEEDS (default 0:8, 8:16 and 24:16)")
    p.add_argument("--draws", type=int, default=24, help="random token draws per erased unit")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "attack-signal")
    args = p.parse_args()
    if not args.lora.is_dir():
        sys.exit(f"error: no adapter at {args.lora}: run python benchmarks/attack_control.py first, or pass --lora")
    control = Control(args.lora, args.concept)
    units = []
    for setting in args.setting or ["0:8", "8:16", "24:16"]:
        first, seeds = (int(v) for v in setting.split(":"))
        units += readings(control, first, seeds, args.draws)
    if not units:
        sys.exit("error: every erased prompt already shows the concept at these seeds: nothing to attack")
    rounds = AttackOptions().rounds
    result = {"lora": str(args.lora), "concept": args.concept, **summary(units, rounds), "units_raw": units}
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "signal.json", json.dumps(result))
    write_atomic(args.out / "signal.md", table(result, rounds))
    print(table(result, rounds))


if __name__ == "__main__":
    main()
