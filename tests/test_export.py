"""Exports of an edited UNet load back into a fresh pipeline and reproduce the edit; failed exports leave nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from tiny import tiny_pipeline, unet_output

from advanchor.export import (
    DELTA_FORMAT,
    DELTA_VERSION,
    LORA_WEIGHT_NAME,
    load_unet_delta,
    save_kohya_lora,
    save_lora,
    save_unet_delta,
)

ATTN2 = r".*attn2\.(to_q|to_k|to_v|to_out\.0)"
ADAPTER = "advanchor"  # not peft's "default", so a dropped adapter_name cannot go unnoticed


@pytest.fixture(scope="module")
def base_output() -> torch.Tensor:
    return unet_output(tiny_pipeline(seed=0).unet)


@pytest.fixture(scope="module")
def edited() -> tuple[torch.nn.Module, torch.Tensor]:
    """A tiny UNet with a random LoRA on the attn2 projections, alpha != r, and its output."""
    unet = tiny_pipeline(seed=0).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=ATTN2), adapter_name=ADAPTER)
    return unet, unet_output(unet)


def fail_mid_write(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"half a file")
    raise OSError("disk full")


def test_edit_changes_output(edited, base_output):
    # Guards every round-trip test below against passing with a no-op edit.
    assert not torch.allclose(edited[1], base_output, atol=1e-3)


def test_lora_round_trip(tmp_path, edited):
    unet, expected = edited
    directory = save_lora(unet, tmp_path / "lora", adapter_name=ADAPTER)
    assert directory == tmp_path / "lora"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora"]
    assert sorted(p.name for p in directory.iterdir()) == [LORA_WEIGHT_NAME]
    with safetensors.safe_open(directory / LORA_WEIGHT_NAME, framework="pt") as f:
        keys = list(f.keys())
        config = json.loads(f.metadata()["lora_adapter_metadata"])
    assert keys and all(k.startswith("unet.") and ".attn2." in k for k in keys)
    assert config["unet.lora_alpha"] == 8 and config["unet.r"] == 4

    pipe = tiny_pipeline(seed=0)
    pipe.load_lora_weights(directory)
    assert torch.allclose(unet_output(pipe.unet), expected, atol=1e-5)


def test_kohya_file(tmp_path, edited):
    unet, expected = edited
    path = save_kohya_lora(unet, tmp_path / "edit.safetensors", adapter_name=ADAPTER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit.safetensors"]
    tensors = safetensors.torch.load_file(path)
    modules = [name for name, module in unet.named_modules() if isinstance(module, LoraLayer)]
    assert len(modules) == 4 * 4  # to_q, to_k, to_v, to_out.0 in 1 down, 1 mid and 2 up attentions
    stems = ["lora_unet_" + name.replace(".", "_") for name in modules]
    assert set(tensors) == {f"{s}.{part}" for s in stems for part in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_up.weight" in tensors
    for stem in stems:
        assert tensors[f"{stem}.alpha"].shape == () and tensors[f"{stem}.alpha"].item() == 8.0
        assert tensors[f"{stem}.lora_down.weight"].shape[0] == 4

    pipe = tiny_pipeline(seed=0)
    pipe.load_lora_weights(path)
    assert torch.allclose(unet_output(pipe.unet), expected, atol=1e-5)


def test_delta_round_trip(tmp_path):
    unet = tiny_pipeline(seed=0).unet
    names = [name for name, _ in unet.named_parameters() if ".attn2." in name]
    originals = {name: param.detach().clone() for name, param in unet.named_parameters() if name in names}
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if name in names:
                param.add_(torch.randn_like(param) * 0.1)
    expected = {name: param.detach().clone() for name, param in unet.named_parameters()}

    path = save_unet_delta(unet, originals, tmp_path / "delta.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["delta.safetensors"]
    with safetensors.safe_open(path, framework="pt") as f:
        assert sorted(f.keys()) == sorted(names)
        assert f.metadata() == {"format": DELTA_FORMAT, "version": DELTA_VERSION}

    pipe = tiny_pipeline(seed=0)
    assert load_unet_delta(pipe, path) is pipe
    loaded = dict(pipe.unet.named_parameters())
    for name, value in expected.items():
        if name in names:
            assert torch.allclose(loaded[name], value, atol=1e-6), name
            assert not torch.equal(loaded[name], originals[name]), name
        else:
            assert torch.equal(loaded[name], value), name


def test_delta_restores_half_precision_exactly(tmp_path):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 16).half()
    originals = {"weight": layer.weight.detach().clone()}
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight) * 0.01)
    path = save_unet_delta(layer, originals, tmp_path / "delta.safetensors")
    base = torch.nn.Linear(16, 16).half()
    with torch.no_grad():
        base.weight.copy_(originals["weight"])
    assert torch.equal(load_unet_delta(base, path).weight, layer.weight)


def test_failed_exports_leave_nothing(tmp_path, monkeypatch, edited):
    unet = edited[0]
    monkeypatch.setattr(safetensors.torch, "save_file", fail_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_lora(unet, tmp_path / "lora", adapter_name=ADAPTER)
    with pytest.raises(OSError, match="disk full"):
        save_kohya_lora(unet, tmp_path / "edit.safetensors", adapter_name=ADAPTER)
    with pytest.raises(OSError, match="disk full"):
        save_unet_delta(torch.nn.Linear(2, 2), {"weight": torch.zeros(2, 2)}, tmp_path / "delta.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_the_previous_one(tmp_path, monkeypatch, edited):
    directory = tmp_path / "lora"
    directory.mkdir()
    (directory / LORA_WEIGHT_NAME).write_bytes(b"previous export")
    (tmp_path / "edit.safetensors").write_bytes(b"previous export")
    monkeypatch.setattr(safetensors.torch, "save_file", fail_mid_write)
    with pytest.raises(OSError):
        save_lora(edited[0], directory, adapter_name=ADAPTER)
    with pytest.raises(OSError):
        save_kohya_lora(edited[0], tmp_path / "edit.safetensors", adapter_name=ADAPTER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit.safetensors", "lora"]
    assert (directory / LORA_WEIGHT_NAME).read_bytes() == b"previous export"
    assert (tmp_path / "edit.safetensors").read_bytes() == b"previous export"


def test_existing_export_is_replaced(tmp_path, edited):
    directory = tmp_path / "lora"
    directory.mkdir()
    (directory / LORA_WEIGHT_NAME).write_bytes(b"previous export")
    (tmp_path / "edit.safetensors").write_bytes(b"previous export")
    save_lora(edited[0], directory, adapter_name=ADAPTER)
    save_kohya_lora(edited[0], tmp_path / "edit.safetensors", adapter_name=ADAPTER)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edit.safetensors", "lora"]
    assert sorted(p.name for p in directory.iterdir()) == [LORA_WEIGHT_NAME]
    assert safetensors.torch.load_file(directory / LORA_WEIGHT_NAME)
    assert safetensors.torch.load_file(tmp_path / "edit.safetensors")


def test_save_lora_refuses_a_directory_with_other_files(tmp_path, edited):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="other than a LoRA export"):
        save_lora(edited[0], tmp_path, adapter_name=ADAPTER)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_save_lora_names_the_missing_adapter(tmp_path, edited):
    with pytest.raises(ValueError, match=r"no LoRA adapter 'default' \(it has: \['advanchor'\]\)"):
        save_lora(edited[0], tmp_path / "lora")
    with pytest.raises(ValueError, match="no LoRA adapter"):
        save_kohya_lora(tiny_pipeline(seed=0).unet, tmp_path / "edit.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_load_unet_delta_rejects_bad_files(tmp_path):
    unet = tiny_pipeline(seed=0).unet
    before = {name: param.detach().clone() for name, param in unet.named_parameters()}
    name = next(iter(before))
    metadata = {"format": DELTA_FORMAT, "version": DELTA_VERSION}

    with pytest.raises(FileNotFoundError, match="no UNet delta at"):
        load_unet_delta(unet, tmp_path / "missing.safetensors")

    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_unet_delta(unet, tmp_path / "garbage.safetensors")

    safetensors.torch.save_file({name: torch.zeros_like(before[name])}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not an advanchor UNet delta"):
        load_unet_delta(unet, tmp_path / "plain.safetensors")

    # A known name first: the unknown one must stop the load before anything is added.
    deltas = {name: torch.ones_like(before[name]), "down_blocks.9.nope.weight": torch.ones(1)}
    safetensors.torch.save_file(deltas, tmp_path / "unknown.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match="'down_blocks.9.nope.weight'"):
        load_unet_delta(unet, tmp_path / "unknown.safetensors")

    safetensors.torch.save_file({name: torch.ones(3)}, tmp_path / "shape.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match="has shape"):
        load_unet_delta(unet, tmp_path / "shape.safetensors")

    assert all(torch.equal(param, before[n]) for n, param in unet.named_parameters())


def test_save_unet_delta_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="'nope'"):
        save_unet_delta(torch.nn.Linear(2, 2), {"nope": torch.zeros(2, 2)}, tmp_path / "delta.safetensors")
    with pytest.raises(ValueError, match="originals is empty"):
        save_unet_delta(torch.nn.Linear(2, 2), {}, tmp_path / "delta.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_an_evaluated_lora_turns_off_in_the_original_view(tmp_path, edited, base_output):
    from advanchor.evaluate.model import load_edited

    unet, expected = edited
    tiny_pipeline(seed=0).save_pretrained(tmp_path / "base")
    save_lora(unet, tmp_path / "lora", adapter_name=ADAPTER)
    pipe, original = load_edited(str(tmp_path / "base"), str(tmp_path / "lora"))
    assert torch.allclose(unet_output(pipe.unet), expected, atol=1e-5)
    with original():  # fidelity, the attacks' targets and inversion's images all come from this view
        assert torch.allclose(unet_output(pipe.unet), base_output, atol=1e-5)
    assert torch.allclose(unet_output(pipe.unet), expected, atol=1e-5)
