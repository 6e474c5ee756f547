"""Weight-saliency masks over named parameter tensors: SalUn and Retention-Based Masking (RBM).

A mask is a dict name -> bool tensor shaped like the parameter; True marks a weight the unlearning
update may change. `ratio` is the mask's sparsity: the share of weights it holds out of the update.

- SalUn (Fan et al., ICLR 2024, arXiv 2310.12508, Eq. 3-4): saliency is |grad| of the forgetting loss
  at the pretrained weights; the most salient weights are updated and every other weight keeps its
  pretrained value, theta_u = m * (theta_o + delta) + (1 - m) * theta_o.
- RBM (Ding et al., "Understanding Fine-tuning in Approximate Unlearning", arXiv 2410.03833): the
  saliency comes from the *retained* data. The weights the retained data rely on least carry what
  only the forgetting data put there (the "forgetting components of the pretrained weights"), so they
  are removed (set to zero, the start of the paper's linear pretraining) and held there; the rest are
  fine-tuned. Only the paper's abstract and summary could be read here, not its equations: which end
  is kept and the reset to zero are our reading, checked by benchmarks/linear_unlearning.py on the
  paper's own linear-regression setting.
"""

from __future__ import annotations

import torch

MASKS = ("none", "salun", "rbm")


def check_mask(kind: str, ratio: float) -> None:
    """A one-line error for an unknown mask or a ratio outside (0, 1)."""
    if kind not in MASKS:
        raise ValueError(f"unknown mask {kind!r}; use one of: {', '.join(MASKS)}")
    if kind != "none" and not 0.0 < ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1) (the share of weights held out), got {ratio!r}")


def top_fraction_mask(scores: dict[str, torch.Tensor], keep: float) -> dict[str, torch.Tensor]:
    """True at the round(keep * total) largest scores, ranked globally over every tensor."""
    if not scores:
        return {}
    flat = torch.cat([s.detach().reshape(-1).float().cpu() for s in scores.values()])  # (total,)
    if torch.isnan(flat).any():
        # topk ranks NaN above every number, so a NaN score would silently be kept.
        raise ValueError("saliency scores contain NaN; the gradient of the saliency loss diverged")
    # topk rather than a quantile threshold, so that ties at the threshold cannot change the count.
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, round(keep * flat.numel()), sorted=False).indices] = True
    chunks = chosen.split([s.numel() for s in scores.values()])
    return {name: chunk.view(s.shape).to(s.device) for (name, s), chunk in zip(scores.items(), chunks)}


def salun_mask(forget_grads: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """SalUn (Fan et al. 2024, Eq. 3): update the weights with the LARGEST |grad| of the forgetting loss."""
    return top_fraction_mask({name: g.abs() for name, g in forget_grads.items()}, 1.0 - ratio)


def rbm_mask(retain_grads: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """RBM (Ding et al. 2024, arXiv 2410.03833): keep the weights with the LARGEST |grad| of the retained
    loss; the `ratio` least salient to the retained data are the forgetting components."""
    return top_fraction_mask({name: g.abs() for name, g in retain_grads.items()}, 1.0 - ratio)


def mask_sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Share of weights the masks hold out of the update (False entries), over all of them."""
    total = sum(m.numel() for m in masks.values())
    if total == 0:
        raise ValueError("the masks hold no weights")
    return 1.0 - sum(int(m.sum()) for m in masks.values()) / total


def layer_sparsity(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per parameter: the share of its weights held out of the update."""
    return {name: 1.0 - float(m.float().mean()) for name, m in masks.items()}
