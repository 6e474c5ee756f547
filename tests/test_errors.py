"""Bad input: every command stops before any work with one line that names the value and the fix."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig

from advanchor.cli import main as train_main
from advanchor.evaluate.__main__ import main as evaluate_main
from advanchor.export import save_lora, save_unet_delta
from advanchor.models import load_pipeline
from advanchor.testing import tiny_pipeline

ROOT = Path(__file__).resolve().parent.parent
TOY_CONFIGS = ROOT / "configs" / "toy"


def one_line(call) -> str:
    """The message `call` exits with: `error: ...` on a single line."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    message = exit_info.value.code
    assert isinstance(message, str), message
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.fixture
def quiet_env(tmp_path, monkeypatch):
    """Run from an empty tmp_path with W&B offline and the image cache there: whatever a run would write by
    default (outputs/, wandb/, cache/) would land in it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("ADVANCHOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad inputs on disk: an empty folder, one without images, a file, a CSV without the I2P columns, a
    pipeline with pickle weights only."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "empty").mkdir()
    (root / "text_only").mkdir()
    (root / "text_only" / "notes.txt").write_text("no images here")
    (root / "a_file").write_text("")
    (root / "bad.csv").write_text("text,seed\nhello,1\n")
    tiny_pipeline().save_pretrained(root / "pickle_pipeline", safe_serialization=False)
    return root


TRAIN_CASES = {
    "unknown concept word": (["--model.concepts=[zqxw]"], "concept word 'zqxw' is not in the tokenizer's vocabulary"),
    "empty concept word": (['--model.concepts=[""]'], "concept word '' has no tokens"),
    "concept absent from the template": (["--model.prompts.anchor=a thing"], "fix model.prompts.anchor"),
    "model path that does not exist": (["--model.pretrained=does/not/exist"], "model path does/not/exist does not"),
    "not a diffusers directory": (["--model.pretrained={files}/empty"], "not a diffusers pipeline"),
    "hub id while offline": (["--model.pretrained=someone/model"], "not be downloaded (offline?)"),
    "pickle weights without --allow_pickle": (["--model.pretrained={files}/pickle_pipeline"], "--allow_pickle"),
    "mistyped key": (["--model.lrr=0.1"], "unknown option --model.lrr; did you mean --model.lr?"),
    "mistyped nested key": (["--model.anchor.strategyy=x"], "model.anchor: Option 'strategyy' is not accepted"),
    "mistyped trainer key": (["--trainer.max_stepz=3"], "did you mean --trainer.max_steps?"),
    "value of the wrong type": (["--model.lr=abc"], "model.lr: Expected a <class 'float'>"),
    "negative learning rate": (["--model.lr=-1"], "model.lr must be above 0"),
    "LoRA rank 0": (["--model.lora.rank=0"], "model.lora.rank must be at least 1, got 0"),
    "LoRA target that is no regex": (["--model.lora.target_modules=("], "is not a regex"),
    "zero steps": (["--trainer.max_steps=0"], "trainer.max_steps is 0"),
    "zero anchor learning rate": (["--model.anchor.lr=0"], "model.anchor.lr must be above 0"),
    "unknown anchor strategy": (["--model.anchor.strategy=zigzag"], "unknown anchor strategy 'zigzag'"),
    "mask ratio outside (0, 1)": (
        ["--model.trainable=attn2", "--model.mask=salun", "--model.mask_ratio=1.5"],
        "mask_ratio must be in (0, 1)",
    ),
    "zero images per step": (["--data.batch_size=0"], "data.batch_size must be at least 1"),
    "zero generated images": (["--data.generation.images_per_concept=0"], "images_per_concept must be at least 1"),
    "missing data folder": (["--data.image_dirs={circle: {files}/nowhere}"], "does not exist; fix data.image_dirs"),
    "empty data folder": (["--data.image_dirs={circle: {files}/empty}"], "holds no .png/.jpg/.jpeg/.webp files"),
    "data folder without images": (["--data.image_dirs={circle: {files}/text_only}"], "holds no .png"),
    "output directory under a file": (["--output_dir={files}/a_file/runs"], "a_file is a file"),
    "TPU without torch_xla": (["--trainer.accelerator=tpu"], "do not fit this machine"),
    "prompt CSV with missing columns": (["--eval.prompts={files}/bad.csv"], "lacks column(s) prompt"),
    "eval weights file that does not exist": (["--eval.resnet_weights=/nowhere.pt"], "eval.resnet_weights"),
    "unknown method": (["--method=nosuch"], "unknown method 'nosuch'"),
    "missing config file": (["--config=nowhere.yaml"], "config file nowhere.yaml does not exist"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_py_bad_input_is_one_line_and_leaves_nothing(case, quiet_env, files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    flags, expected = TRAIN_CASES[case]
    argv = [f.replace("{files}", str(files)) for f in flags]
    message = one_line(lambda: train_main(argv, default_configs=TOY_CONFIGS))
    assert expected in message
    assert list(quiet_env.iterdir()) == [], "a run folder, W&B run or image cache was created"


def test_debug_shows_the_traceback(quiet_env):
    with pytest.raises(ValueError, match="model.lr must be above 0"):
        train_main(["--model.lr=-1", "--debug"], default_configs=TOY_CONFIGS)


def test_train_py_subprocess_prints_one_line_without_traceback(tmp_path):
    """The user's view: status 1, one stderr line, no usage block, quickly (no model is loaded)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--model.lr=-1", "--model.lrr=2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown option --model.lrr; did you mean --model.lr?")
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "wandb").exists()


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    """A toy-model LoRA (non-zero), its corrupt and truncated copies, a pickle copy, a toy UNet delta and
    its corrupt copy, and a tiny pipeline of another architecture."""
    root = tmp_path_factory.mktemp("loras")
    pipe = load_pipeline("toy")
    config = LoraConfig(r=2, lora_alpha=2, target_modules=["to_k", "to_v"], init_lora_weights=False)
    pipe.unet.add_adapter(config, adapter_name="probe")
    save_lora(pipe.unet, root / "good", adapter_name="probe")
    weights = (root / "good" / "pytorch_lora_weights.safetensors").read_bytes()
    for name, data in (("corrupt", b"not a safetensors file" * 4), ("truncated", weights[: len(weights) // 2])):
        (root / name).mkdir()
        (root / name / "pytorch_lora_weights.safetensors").write_bytes(data)
    (root / "no_weights").mkdir()
    (root / "pickled").mkdir()
    torch.save({"w": torch.zeros(1)}, root / "pickled" / "pytorch_lora_weights.bin")
    params = dict(load_pipeline("toy").unet.named_parameters())
    name = next(n for n in params if ".attn2.to_k." in n)
    save_unet_delta(load_pipeline("toy").unet, {name: params[name] + 1}, root / "unet_delta.safetensors")
    (root / "corrupt_delta.safetensors").write_bytes(b"\x00" * 64)
    tiny_pipeline().save_pretrained(root / "other_base", safe_serialization=True)
    (root / "prompts.csv").write_text("prompt,evaluation_seed,case_number\na circle,0,0\n")
    return root


EVALUATE_CASES = {
    "model path that does not exist": (["--model", "does/not/exist"], "model path does/not/exist does not exist"),
    "unknown toy concept": (["--concept", "dragon"], "unknown toy-world concept 'dragon'"),
    "missing LoRA": (["--lora", "{loras}/nowhere"], "does not exist; pass the run's lora/ directory"),
    "LoRA folder without weights": (["--lora", "{loras}/no_weights"], "holds no .safetensors file"),
    "corrupt LoRA": (["--lora", "{loras}/corrupt"], "is corrupt or truncated"),
    "truncated LoRA": (["--lora", "{loras}/truncated"], "is corrupt or truncated"),
    "LoRA of another base model": (
        ["--model", "{loras}/other_base", "--lora", "{loras}/good", "--prompts", "{loras}/prompts.csv"],
        "does not fit the model",
    ),
    "pickle LoRA without --allow-pickle": (["--lora", "{loras}/pickled"], "is a pickle file"),
    "missing delta": (["--unet-delta", "{loras}/nowhere.safetensors"], "no UNet delta at"),
    "corrupt delta": (["--unet-delta", "{loras}/corrupt_delta.safetensors"], "is not a safetensors file"),
    "unknown flag": (["--sedes", "3"], "unrecognized arguments: --sedes 3"),
    "unwritable report": (["--json", "{loras}/unet_delta.safetensors/report.json"], "is a file"),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_bad_input_is_one_line(case, loras):
    flags, expected = EVALUATE_CASES[case]
    argv = [f.replace("{loras}", str(loras)) for f in flags]
    if "--concept" not in argv:
        argv += ["--concept", "circle"]
    message = one_line(lambda: evaluate_main(argv))
    assert expected in message
    if case == "LoRA of another base model":
        assert "size mismatch for" in message and "pass the one it was trained from" in message


OTHER_CASES = {
    "benchmark output under a file": ("benchmark", ["--out", "{files}/a_file/bench"], "a_file is a file"),
    "benchmark unknown method": ("benchmark", ["--out", "{files}/bench", "--methods", "nope"], "unknown method 'nope'"),
    "benchmark unknown flag": ("benchmark", ["--out", "{files}/bench", "--sedes", "2"], "unrecognized arguments"),
    "stand-in over an existing folder": ("standin", ["{files}/empty"], "exists; pass --overwrite"),
    "toy quality of a missing model": ("toyworld.quality", ["--model", "{files}/nowhere"], "does not exist"),
    "toy build into a file": ("toyworld.build", ["--out", "{files}/a_file/toy"], "a_file is a file"),
}


@pytest.mark.parametrize("case", list(OTHER_CASES))
def test_other_commands_bad_input_is_one_line(case, files):
    module, flags, expected = OTHER_CASES[case]
    command = importlib.import_module(f"advanchor.{module}" + ("" if "." in module else ".__main__"))
    argv = [f.replace("{files}", str(files)) for f in flags]
    assert expected in one_line(lambda: command.main(argv))
    assert not (files / "bench").exists()
