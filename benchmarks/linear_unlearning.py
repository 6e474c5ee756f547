"""Fine-tuning unlearning in overparameterised linear regression (Ding et al., arXiv 2410.03833): FT, SalUn, RBM.

    OMP_NUM_THREADS=1 python benchmarks/linear_unlearning.py --seed 0 --json linear.json

The seed paper's own check, at toy scale. Each regime draws noise-free data y = x . w* with more weights than
samples, pretrains the min-norm interpolator of forgetting + retained data (the limit of gradient descent from
zero), then unlearns by gradient descent on the retained loss only, and compares with the golden model (the
min-norm interpolator of the retained data alone). Feature blocks, over `dim` weights:

- distinct: forgetting samples are nonzero on the first half of the coordinates only, retained samples on the
  second half only (disjoint supports, so orthogonal feature spaces);
- overlapping: forgetting samples use F + S, retained samples S + R, where S is a block of `shared` coordinates
  both sets draw on and F, R split the rest evenly.

The masks are advanchor.masks', as train.py applies them; `ratio` is their sparsity (the share held out).
Only the paper's abstract and summary could be read (not its equations), so these readings are ours:

- saliency is |grad| of a set's mean squared loss at the pretraining start w = 0, because at the interpolating
  pretrained weights both gradients vanish and rank nothing;
- FT+SalUn (Fan et al. 2024): fine-tune only the weights most salient to the forgetting loss, every other
  weight kept at its pretrained value (SalUn's masked update);
- FT+RBM: keep the weights most salient to the retained loss, zero the rest (the paper's "forgetting
  components of the pretrained weights") and fine-tune only the kept ones;
- FT+RBM grad-only: the RBM mask as a gradient mask alone, without the zeroing; it shows the zeroing is
  what forgets.

Rows: method, retained (remaining) loss, forgetting (unlearning) loss, ||w - w_golden||, the mask's
sparsity. Losses are 0.5 * mean squared residual.
"""

from __future__ import annotations

import argparse
import json

import torch

from advanchor.export import write_atomic
from advanchor.masks import mask_sparsity, rbm_mask, salun_mask

REGIMES = ("distinct", "overlapping")


def make_data(
    regime: str, seed: int, n_forget: int, n_retain: int, dim: int, shared: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded (x_forget, y_forget, x_retain, y_retain) of one regime, float64; labels are noise-free x . w*."""
    if regime == "distinct":
        shared = 0
    elif regime != "overlapping":
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if not 0 <= shared < dim - 1:
        raise ValueError(f"shared must be in [0, dim - 1), got {shared}")
    gen = torch.Generator().manual_seed(seed)
    n_forget_only = (dim - shared) // 2
    w_star = torch.randn(dim, generator=gen, dtype=torch.float64) / dim**0.5
    x_forget = torch.zeros(n_forget, dim, dtype=torch.float64)
    x_forget[:, : n_forget_only + shared] = torch.randn(n_forget, n_forget_only + shared, generator=gen)
    x_retain = torch.zeros(n_retain, dim, dtype=torch.float64)
    x_retain[:, n_forget_only:] = torch.randn(n_retain, dim - n_forget_only, generator=gen)
    return x_forget, x_forget @ w_star, x_retain, x_retain @ w_star


def loss(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """0.5 * mean squared residual."""
    return 0.5 * float(((x @ w - y) ** 2).mean())


def grad(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of `loss` in w: x^T (x w - y) / n."""
    return x.T @ (x @ w - y) / len(y)


def finetune(
    w_start: torch.Tensor, x: torch.Tensor, y: torch.Tensor, update: torch.Tensor, steps: int, tol: float
) -> torch.Tensor:
    """Gradient descent on loss(x, y) from w_start that moves only the weights where `update` is True."""
    x_free = x[:, update]  # (n, kept)
    # L of the masked problem; a step of 1 / L always descends.
    lipschitz = float(torch.linalg.matrix_norm(x_free, ord=2) ** 2) / len(y) if x_free.numel() else 0.0
    if lipschitz == 0.0:
        # The data never touch the free weights (e.g. SalUn's mask in the distinct regime): nothing can move.
        return w_start.clone()
    w = w_start.clone()
    for _ in range(steps):
        g = grad(w, x, y) * update
        if float(g.norm()) <= tol:
            break
        w -= g / lipschitz
    return w


def run(
    regime: str,
    seed: int,
    n_forget: int = 20,
    n_retain: int = 40,
    dim: int = 250,
    shared: int = 50,
    ratio: float = 0.5,
    steps: int = 20000,
    tol: float = 1e-10,
) -> dict[str, dict[str, float]]:
    """Method -> {"retained_loss", "forgetting_loss", "dist_golden", "sparsity"} for one regime and seed."""
    x_f, y_f, x_r, y_r = make_data(regime, seed, n_forget, n_retain, dim, shared)
    w_pre = torch.linalg.pinv(torch.cat([x_f, x_r])) @ torch.cat([y_f, y_r])
    w_gold = torch.linalg.pinv(x_r) @ y_r
    zero = torch.zeros(dim, dtype=torch.float64)
    everything = torch.ones(dim, dtype=torch.bool)

    m_salun = salun_mask({"w": grad(zero, x_f, y_f)}, ratio)
    m_rbm = rbm_mask({"w": grad(zero, x_r, y_r)}, ratio)
    salient_f, salient_r = m_salun["w"], m_rbm["w"]
    models = {
        "pretrained": (w_pre, None),
        "golden": (w_gold, None),
        "FT": (finetune(w_pre, x_r, y_r, everything, steps, tol), None),
        "FT+SalUn": (finetune(w_pre, x_r, y_r, salient_f, steps, tol), m_salun),
        "FT+RBM": (finetune(w_pre * salient_r, x_r, y_r, salient_r, steps, tol), m_rbm),
        "FT+RBM grad-only": (finetune(w_pre, x_r, y_r, salient_r, steps, tol), m_rbm),
    }
    return {
        name: {
            "retained_loss": loss(w, x_r, y_r),
            "forgetting_loss": loss(w, x_f, y_f),
            "dist_golden": float((w - w_gold).norm()),
            "sparsity": mask_sparsity(masks) if masks else 0.0,
        }
        for name, (w, masks) in models.items()
    }


def format_table(regime: str, rows: dict[str, dict[str, float]]) -> str:
    """One regime's results as a fixed-width text table."""
    lines = [
        f"regime: {regime}",
        f"{'method':<18} {'retained loss':>14} {'forgetting loss':>16} {'dist golden':>12} {'sparsity':>8}",
    ]
    for name, r in rows.items():
        lines.append(
            f"{name:<18} {r['retained_loss']:>14.3e} {r['forgetting_loss']:>16.3e} "
            f"{r['dist_golden']:>12.3e} {r['sparsity']:>8.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ratio", type=float, default=0.5, help="each mask's sparsity: the share of weights held out")
    parser.add_argument("--json", help="also write {regime: {method: metrics}} here")
    args = parser.parse_args()
    results = {regime: run(regime, args.seed, ratio=args.ratio) for regime in REGIMES}
    print("\n\n".join(format_table(regime, rows) for regime, rows in results.items()))
    if args.json:
        write_atomic(args.json, json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
