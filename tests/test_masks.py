"""Weight-saliency masks (advanchor/masks.py): the ranking, the sparsity, their use in training, and
the linear check of Ding et al. (benchmarks/linear_unlearning.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from advanchor.anchors import AnchorOptions
from advanchor.data import ConceptData, GenerationOptions
from advanchor.export import load_mask, load_unet_delta
from advanchor.masks import check_mask, mask_sparsity, rbm_mask, salun_mask, top_fraction_mask
from advanchor.methods import method_class
from advanchor.testing import TOY_PROMPTS, tiny_pipeline

sys.path.insert(0, str(Path(__file__).parent))
from tiny import load_benchmark  # noqa: E402


def test_top_fraction_ranks_globally_and_keeps_shapes():
    scores = {"a": torch.tensor([[0.1, 9.0], [0.2, 0.3]]), "b": torch.tensor([8.0, 0.0, 7.0])}
    masks = top_fraction_mask(scores, 3 / 7)
    assert masks["a"].dtype == torch.bool
    assert masks["a"].tolist() == [[False, True], [False, False]]
    assert masks["b"].tolist() == [True, False, True]


@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.5, 0.77, 0.99])
def test_mask_sparsity_equals_mask_ratio(ratio):
    gen = torch.Generator().manual_seed(0)
    grads = {"conv": torch.randn(8, 4, 3, 3, generator=gen), "attn": torch.randn(16, 16, generator=gen)}
    total = sum(g.numel() for g in grads.values())
    for build in (salun_mask, rbm_mask):
        masks = build(grads, ratio)
        assert mask_sparsity(masks) == pytest.approx(ratio, abs=0.5 / total)


def test_ties_do_not_change_the_count():
    scores = {"a": torch.ones(7), "b": torch.ones(2, 3)}
    for keep in (0.2, 0.5, 0.9):
        assert sum(int(m.sum()) for m in top_fraction_mask(scores, keep).values()) == round(keep * 13)


def test_salun_and_rbm_keep_the_largest_gradient_magnitudes():
    forget_grads = {"w": torch.tensor([-4.0, 0.1, 0.0, 3.0])}
    retain_grads = {"w": torch.tensor([0.0, -2.0, 1.0, 0.1])}
    # The largest |grad| is kept, sign ignored (one public SalUn implementation sorts the other way).
    assert salun_mask(forget_grads, 0.5)["w"].tolist() == [True, False, False, True]
    assert rbm_mask(retain_grads, 0.5)["w"].tolist() == [False, True, True, False]


def test_bad_mask_options_are_one_line_errors():
    with pytest.raises(ValueError, match="unknown mask 'sal'; use one of: none, salun, rbm"):
        check_mask("sal", 0.5)
    for ratio in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"mask_ratio must be in \(0, 1\)"):
            check_mask("rbm", ratio)
    with pytest.raises(ValueError, match="NaN"):
        top_fraction_mask({"w": torch.tensor([1.0, float("nan")])}, 0.5)
    with pytest.raises(ValueError, match="not lora"):
        method_class("ft")(concepts=["circle"], trainable="lora", mask="rbm")


def test_retained_prompts_default_to_every_other_toy_concept():
    ft = method_class("ft")
    retained = ft(concepts=["circle"]).retained_prompts()
    assert retained[:3] == ["a oval", "a square", "a rectangle"] and "a red" in retained and "a striped" in retained
    assert len(retained) == 6 + 5 + 4 - 1 and "a circle" not in retained
    assert ft(concepts=["van gogh"], retain=["a photo"]).retained_prompts() == ["a photo"]
    with pytest.raises(ValueError, match="no retained prompts for \\['van gogh'\\]: set model.retain"):
        ft(concepts=["van gogh"]).retained_prompts()
    with pytest.raises(ValueError, match="no retained prompts for \\['circle'\\]"):
        ft(concepts=["circle"], pretrained="/models/sd14").retained_prompts()


def test_retain_prompts_that_name_an_erased_concept_are_dropped():
    """One retain list serves every texture: the erased one's own prompts leave it, look-alike words stay."""
    ft = method_class("ft")
    retain = ["a circle in striped style", "a circle in dotted style", "a stripedfish", "van gogh painting"]
    kept = ft(concepts=["striped", "van gogh"], retain=retain).retained_prompts()
    assert kept == ["a circle in dotted style", "a stripedfish"]
    with pytest.raises(ValueError, match="every model.retain prompt names an erased concept"):
        ft(concepts=["striped"], retain=["a striped circle"]).retained_prompts()


@pytest.mark.parametrize("method", ["ft", "ac", "advanchor"])
@pytest.mark.parametrize("mask", ["salun", "rbm"])
def test_a_masked_run_moves_only_the_masked_weights_and_saves_the_mask(tmp_path, method, mask):
    pl.seed_everything(0, verbose=False)
    options = {
        "ft": {},
        "ac": {"erase": "a {concept}", "anchor": ""},
        "advanchor": {"prompts": TOY_PROMPTS, "anchor": AnchorOptions(lr=1e-2, max_inner_steps=2)},
    }[method]
    module = method_class(method)(
        concepts=["circle"], trainable="attn2", lr=1e-2, mask=mask, mask_ratio=0.7, **options
    ).attach(tiny_pipeline())
    before = {n: p.detach().clone() for n, p in module.trained.items()}
    data = ConceptData(
        generation=GenerationOptions(images_per_concept=2, steps=2, guidance_scale=2.0),
        cache_dir=str(tmp_path / "cache"),
    )
    trainer = pl.Trainer(
        max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(module, datamodule=data)
    summary = module.summary()["mask"]
    total = sum(m.numel() for m in module.masks.values())
    assert summary["kind"] == mask and summary["sparsity"] == pytest.approx(0.7, abs=0.5 / total)
    for name, keep in module.masks.items():
        after = module.trained[name].detach()
        held = before[name] * 0 if mask == "rbm" else before[name]  # RBM zeroes what it holds out
        assert torch.equal(after[~keep], held[~keep])
    assert any(not torch.equal(module.trained[n][k], before[n][k]) for n, k in module.masks.items())
    module.export(tmp_path / "out")
    saved, metadata = load_mask(tmp_path / "out" / "mask.safetensors")
    assert metadata["kind"] == mask and saved.keys() == module.masks.keys()
    assert all(torch.equal(saved[n], module.masks[n]) for n in saved)
    fresh = tiny_pipeline()
    load_unet_delta(fresh, tmp_path / "out" / "unet_delta.safetensors")
    for name, p in fresh.unet.named_parameters():
        if name in module.trained:
            assert torch.allclose(p, module.trained[name].detach(), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("regime", ["distinct", "overlapping"])
def test_linear_check_reproduces_the_papers_findings(regime, seed):
    rows = load_benchmark("linear_unlearning").run(regime, seed, n_forget=10, n_retain=20, dim=100, shared=20)
    pre, gold, ft, rbm = rows["pretrained"], rows["golden"], rows["FT"], rows["FT+RBM"]
    # FT fits the retained data but keeps the pretrained fit of the forgetting data, unlike the golden model.
    assert ft["retained_loss"] < 1e-20
    assert ft["forgetting_loss"] < 1e-20 < 1e-3 < gold["forgetting_loss"]
    assert ft["dist_golden"] == pytest.approx(pre["dist_golden"], rel=1e-8)
    # SalUn's mask ranks forgetting-data weights, which fine-tuning on the retained data never moves.
    assert rows["FT+SalUn"]["dist_golden"] == pytest.approx(ft["dist_golden"], rel=1e-8)
    # The RBM mask as a gradient mask alone changes nothing either: the zeroing is what forgets.
    assert rows["FT+RBM grad-only"]["dist_golden"] == pytest.approx(ft["dist_golden"], rel=1e-8)
    assert rbm["retained_loss"] < 1e-12
    assert rbm["dist_golden"] < 0.7 * ft["dist_golden"]
    if regime == "distinct":
        assert rbm["dist_golden"] < 1e-8  # disjoint features: RBM lands on the golden model
    else:
        assert 0.3 * gold["forgetting_loss"] < rbm["forgetting_loss"] <= 1.01 * gold["forgetting_loss"]
