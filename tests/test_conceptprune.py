"""ConceptPrune: the skilled-weight selection worked out by hand, exact zeros, and the sparse delta."""

import pytest
import torch

import advanchor
from advanchor.export import load_unet_delta
from advanchor.methods import method_class
from advanchor.methods.conceptprune import skilled_weights
from advanchor.testing import tiny_pipeline


def test_selection_on_a_hand_made_case():
    weight = torch.tensor([[1.0, -2.0, 3.0, 0.5], [2.0, 1.0, -1.5, 4.0]])
    concept, base = torch.ones(4), torch.tensor([2.0, 0.1, 0.5, 1.0])
    # Concept scores |W|: row 0 (1, 2, 3, 0.5), row 1 (2, 1, 1.5, 4); base scores |W| * base: row 0
    # (2, 0.2, 1.5, 0.5), row 1 (4, 0.1, 0.75, 4). The concept beats the base at columns 1 and 2 only (a
    # tie, column 3 of row 0, does not count). One column per row (0.25 of 4), the top concept score:
    # column 2 in row 0 (kept), column 3 in row 1 (dropped: 4 does not beat 4).
    assert skilled_weights(weight, concept, base, 0.25).tolist() == [[False, False, True, False], [False] * 4]
    # Three per row: row 0's top three are columns 2, 1, 0 (column 0 loses to the base); row 1's are 3, 0, 2.
    assert skilled_weights(weight, concept, base, 0.75).tolist() == [
        [False, True, True, False],
        [False, False, True, False],
    ]


def _tiny(**kw):
    options = dict(concepts=["circle"], prompt="a {concept}", steps=4, tau=2, samples=2, guidance_scale=2.0)
    return method_class("conceptprune")(**{**options, **kw}).attach(tiny_pipeline())


def test_pruned_weights_are_zero_and_counted(tmp_path):
    module = _tiny(skill_ratio=0.05)
    before = {n: p.detach().clone() for n, p in module.trained.items()}
    module.edit()
    summary = module.summary()
    changed = 0
    for name, p in module.trained.items():
        moved = p != before[name]
        assert torch.all(p[moved] == 0), "a changed weight must be exactly zero"
        changed += int(moved.sum())
        assert summary["sparsity_per_layer"][name] == module.pruned[name] / p.numel()
    total = sum(p.numel() for p in module.trained.values())
    assert 0 < changed == summary["pruned_weights"]
    assert summary["sparsity_ff_out"] == pytest.approx(changed / total)
    module.export(tmp_path)
    fresh = tiny_pipeline()
    load_unet_delta(fresh, tmp_path / "unet_delta.safetensors")
    params = dict(fresh.unet.named_parameters())
    assert all(torch.equal(params[n], p.detach()) for n, p in module.trained.items())


def test_bad_options_and_the_erase_path():
    with pytest.raises(ValueError, match="tau must be between 1 and steps"):
        _tiny(tau=5)
    with pytest.raises(ValueError, match="set trainable to ff-out"):
        method_class("conceptprune")(concepts=["circle"], trainable="attn2")
    result = advanchor.erase(
        tiny_pipeline(),
        "circle",
        method="conceptprune",
        prompt="a {concept}",
        base=["a square"],
        steps=4,
        tau=2,
        samples=1,
        skill_ratio=0.1,
    )
    assert result.metrics["pruned_weights"] > 0 and "edit_time_s" in result.metrics
