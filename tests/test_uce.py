"""UCE: the closed form against an explicit least-squares solve, its exact LoRA, and the editor path."""

import pytest
import torch

import advanchor
from advanchor.export import load_unet_delta
from advanchor.methods import method_class
from advanchor.methods.uce import final_token_index, uce_delta
from advanchor.testing import tiny_pipeline


def _random(seed, out=6, dim=5, k=2, m=3):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(out, dim, generator=g, dtype=torch.float64),
        torch.randn(k, dim, generator=g, dtype=torch.float64),
        torch.randn(k, out, generator=g, dtype=torch.float64),
        torch.randn(m, dim, generator=g, dtype=torch.float64),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_is_the_least_squares_solution(seed):
    w0, c, v, p = _random(seed)
    lamb, s_e, s_p = 0.5, 1.5, 0.7
    b, a = uce_delta(w0, c, v, p, lamb, s_e, s_p)
    # argmin_W lamb |W - W0|^2 + s_e sum |W c_i - v_i|^2 + s_p sum |W p_j - W0 p_j|^2, row by row as lstsq.
    dim = w0.shape[1]
    lhs = torch.cat([lamb**0.5 * torch.eye(dim, dtype=torch.float64), s_e**0.5 * c, s_p**0.5 * p])
    rhs = torch.cat([lamb**0.5 * w0.T, s_e**0.5 * v, s_p**0.5 * (p @ w0.T)])
    expected = torch.linalg.lstsq(lhs, rhs).solution.T
    assert torch.allclose(w0.float() + b @ a, expected.float(), atol=1e-5)
    assert b.shape == (6, 2) and a.shape == (2, 5)  # rank at most the number of erased embeddings


def test_no_erased_concept_returns_w0_exactly():
    w0, _, _, p = _random(0)
    b, a = uce_delta(w0, torch.zeros(0, 5), torch.zeros(0, 6), p)
    assert torch.equal(w0.float() + b @ a, w0.float())


def test_final_token_index_follows_the_authors_alignment():
    tokenizer = tiny_pipeline().tokenizer
    assert final_token_index(tokenizer, "") == 0  # BOS
    assert final_token_index(tokenizer, "a circle") == 2


def test_the_lora_and_the_delta_reproduce_the_edit(tmp_path):
    module = method_class("uce")(concepts=["circle"], prompt="a {concept}", preserve=["square"]).attach(tiny_pipeline())
    originals = {n: t.clone() for n, t in module.frozen.originals.items()}
    module.edit()
    assert module.summary()["lora_rank"] == 16 - 2 and module.summary()["lora_relative_error"] < 1e-6
    changed = [n for n, p in module.trained.items() if not torch.equal(p, originals[n])]
    assert changed and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in changed)
    module.export(tmp_path)
    fresh = tiny_pipeline()
    fresh.load_lora_weights(tmp_path / "lora")
    params = dict(fresh.unet.named_parameters())
    for name, p in module.trained.items():
        module_name = name.removesuffix(".weight")
        lora_a = params[f"{module_name}.lora_A.default_0.weight"]
        lora_b = params[f"{module_name}.lora_B.default_0.weight"]
        delta = p.detach() - originals[name]
        assert torch.linalg.norm(lora_b @ lora_a - delta) <= 1e-5 * torch.linalg.norm(delta)
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 16, 16, generator=g)
    with torch.no_grad():
        edited = module.unet(x, 500, cond).sample
        assert torch.allclose(fresh.unet(x, 500, cond).sample, edited, atol=1e-5)
        other = tiny_pipeline()
        load_unet_delta(other, tmp_path / "unet_delta.safetensors")
        assert torch.allclose(other.unet(x, 500, cond).sample, edited, atol=1e-5)


def test_uce_runs_through_erase_without_training():
    result = advanchor.erase(tiny_pipeline(), "circle", method="uce", prompt="a {concept}")
    assert "edit_time_s" in result.metrics and "train_time_s" not in result.metrics
    assert result.metrics["lora_rank"] == 14 and result.metrics["method"] == "uce"
    with pytest.raises(ValueError, match="set trainable to attn2-kv"):
        method_class("uce")(concepts=["circle"], trainable="lora")
    with pytest.raises(ValueError, match=r"uce guides name \['star'\]"):
        method_class("uce")(concepts=["circle"], guides={"star": "oval"})


def test_several_concepts_with_a_named_guide_solved_in_fp32_on_a_bf16_model():
    pipe = tiny_pipeline().to(torch.bfloat16)
    module = method_class("uce")(
        concepts=["circle", "square"], guides={"square": "oval"}, prompt="a {concept}", preserve=[]
    ).attach(pipe)
    module.edit()
    b, a = next(iter(module.factors.values()))
    assert b.dtype == a.dtype == torch.float32 and a.shape[0] == 2 * 14  # 14 embeddings per concept
    assert all(p.dtype == torch.bfloat16 for p in module.trained.values())
    # bf16 weights hold the fp32 edit to bf16's precision: the reported error says how far.
    assert 0 < module.summary()["lora_relative_error"] < 2e-2


def test_train_py_writes_the_run_folder_for_an_editor(tmp_path):
    from advanchor.cli import main

    out = main(
        ["--method", "uce", "--trainer.logger=false", f"--output_dir={tmp_path}", "--run_name=u", "--eval.seeds=1"]
    )
    metrics = __import__("json").loads((out / "metrics.json").read_text())
    assert metrics["method"] == "uce" and metrics["edit_time_s"] < 30
    assert metrics["after"]["circle"]["erased_accuracy"] <= metrics["before"]["circle"]["erased_accuracy"]
    for name in ("config.yaml", "grid_before.png", "grid_after.png", "unet_delta.safetensors", "lora"):
        assert (out / name).exists()
