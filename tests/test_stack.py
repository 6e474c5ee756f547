"""Stacking erasure artifacts: several LoRAs and UNet deltas load onto one pipeline and add up."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from tiny import tiny_pipeline, unet_output

import advanchor
from advanchor.export import save_lora, save_unet_delta
from advanchor.stack import load_erasers, resolve

ATTN2 = r".*attn2\.(to_q|to_k|to_v|to_out\.0)"


def lora_run(folder, seed: int, rank: int = 4, alpha: float = 8.0) -> dict[str, torch.Tensor]:
    """A run folder with a random LoRA (`init_lora_weights=False`) on the tiny UNet: its weight deltas."""
    unet = tiny_pipeline(seed=0).unet
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=False, target_modules=ATTN2)
    unet.add_adapter(config, adapter_name="edit")
    save_lora(unet, folder / "lora", adapter_name="edit")
    layers = {n: m for n, m in unet.named_modules() if isinstance(m, LoraLayer)}
    return {f"{n}.weight": m.get_delta_weight("edit") for n, m in layers.items()}


def delta_file(path, seed: int) -> dict[str, torch.Tensor]:
    """A UNet delta file that changes every attn2 value projection: its deltas."""
    unet = tiny_pipeline(seed=0).unet
    params = {n: p for n, p in unet.named_parameters() if n.endswith("attn2.to_v.weight")}
    originals = {n: p.detach().clone() for n, p in params.items()}
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.add_(0.1 * torch.randn_like(p))
    save_unet_delta(unet, originals, path)
    return {n: params[n].detach() - originals[n] for n in params}


def merged_output(*edits: tuple[dict[str, torch.Tensor], float]) -> torch.Tensor:
    """The tiny UNet's output with every (deltas, weight) added to its weights by hand."""
    unet = tiny_pipeline(seed=0).unet
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for deltas, weight in edits:
            for name, delta in deltas.items():
                params[name].add_(weight * delta)
    return unet_output(unet)


def test_two_loras_and_a_delta_add_up(tmp_path):
    first = lora_run(tmp_path / "a", seed=1)
    second = lora_run(tmp_path / "b", seed=2, rank=2, alpha=2.0)
    delta = delta_file(tmp_path / "unet_delta.safetensors", seed=3)
    pipe = tiny_pipeline(seed=0)
    base = unet_output(pipe.unet)
    names = advanchor.load_erasers(pipe, [tmp_path / "a", tmp_path / "b/lora", tmp_path / "unet_delta.safetensors"])
    assert names == ["eraser0", "eraser1"]
    assert sorted(pipe.get_active_adapters()) == names
    stacked = unet_output(pipe.unet)
    assert not torch.allclose(stacked, base, atol=1e-3)
    assert torch.allclose(stacked, merged_output((first, 1.0), (second, 1.0), (delta, 1.0)), atol=1e-5)
    # Adapters come off again; the delta stays, as documented.
    pipe.disable_lora()
    assert torch.allclose(unet_output(pipe.unet), merged_output((delta, 1.0)), atol=1e-5)


def test_weights_scale_each_eraser_and_earlier_adapters_keep_theirs(tmp_path):
    first = lora_run(tmp_path / "a", seed=1)
    second = lora_run(tmp_path / "b", seed=2)
    delta = delta_file(tmp_path / "d.safetensors", seed=3)
    pipe = tiny_pipeline(seed=0)
    advanchor.load_erasers(pipe, [tmp_path / "a"], weights=[0.5])
    names = advanchor.load_erasers(pipe, [tmp_path / "b", tmp_path / "d.safetensors"], weights=[0.25, 2.0])
    assert names == ["eraser1"]
    expected = merged_output((first, 0.5), (second, 0.25), (delta, 2.0))
    assert torch.allclose(unet_output(pipe.unet), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing", r"eraser '.*missing' does not exist; pass a run folder, its lora/ directory or a unet_delta"),
        ("notes.txt", r"eraser '.*notes.txt' is not a .safetensors file"),
        ("empty", r"eraser '.*empty' holds no lora/, unet_delta.safetensors nor LoRA file"),
    ],
)
def test_bad_sources_fail_in_one_line_before_anything_loads(tmp_path, source, message):
    lora_run(tmp_path / "good", seed=1)
    (tmp_path / "notes.txt").write_text("not weights")
    (tmp_path / "empty").mkdir()
    pipe = tiny_pipeline(seed=0)
    base = unet_output(pipe.unet)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as info:
        load_erasers(pipe, [tmp_path / "good", tmp_path / source])
    assert "\n" not in str(info.value)
    assert pipe.get_list_adapters() == {}
    assert torch.allclose(unet_output(pipe.unet), base)


def test_a_lora_for_another_model_is_taken_off_with_the_ones_before_it(tmp_path):
    lora_run(tmp_path / "good", seed=1)
    lora_run(tmp_path / "good2", seed=2)
    other = tiny_pipeline(seed=0)
    other.unet = type(other.unet).from_config({**other.unet.config, "cross_attention_dim": 8})
    other.unet.add_adapter(LoraConfig(r=2, init_lora_weights=False, target_modules=ATTN2), adapter_name="edit")
    save_lora(other.unet, tmp_path / "other" / "lora", adapter_name="edit")
    delta_file(tmp_path / "d.safetensors", seed=3)
    pipe = tiny_pipeline(seed=0)
    base = unet_output(pipe.unet)
    sources = [tmp_path / "good", tmp_path / "good2", tmp_path / "other", tmp_path / "d.safetensors"]
    with pytest.raises(ValueError, match="does not fit the model") as info:
        load_erasers(pipe, sources)
    assert "\n" not in str(info.value)
    assert pipe.get_list_adapters().get("unet", []) == []
    assert torch.allclose(unet_output(pipe.unet), base, atol=1e-6)


def test_a_run_folder_prefers_its_lora_and_a_weight_count_must_match(tmp_path):
    lora_run(tmp_path / "run", seed=1)
    delta_file(tmp_path / "run" / "unet_delta.safetensors", seed=2)
    assert resolve(tmp_path / "run").kind == "lora"
    assert resolve(tmp_path / "run" / "unet_delta.safetensors").kind == "delta"
    with pytest.raises(ValueError, match="2 weights for 1 erasers; give one weight per eraser"):
        load_erasers(tiny_pipeline(seed=0), [tmp_path / "run"], weights=[1.0, 1.0])
