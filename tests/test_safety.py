"""A diverging loss stops the run, nothing we load runs code, and no secret or path trick reaches disk."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_run  # noqa: E402

import advanchor.methods.advanchor as advanchor_method  # noqa: E402
from advanchor.cli import main, run_name  # noqa: E402
from advanchor.logging import redact  # noqa: E402
from advanchor.methods.base import NonFiniteLossError  # noqa: E402
from advanchor.models import load_pipeline  # noqa: E402
from advanchor.testing import tiny_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHORT = [
    "--trainer.max_steps=2",
    "--data.generation.images_per_concept=2",
    "--data.generation.steps=2",
    "--eval.before=false",
    "--eval.seeds=1",
    "--eval.steps=2",
    "--trainer.enable_progress_bar=false",
]


def diverging_alignment(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction - target).pow(2).mean() * float("nan")


def test_a_nan_loss_stops_training_before_the_step(tmp_path, monkeypatch):
    monkeypatch.setattr(advanchor_method, "alignment", diverging_alignment)
    with pytest.raises(NonFiniteLossError, match=r"step 0: loss alignment is nan; nothing was exported") as info:
        tiny_run(tmp_path, trainable="lora", steps=3)
    module = info.traceback[-1].frame.f_locals["self"]
    # The optimiser never stepped: the LoRA's B factors are still zero.
    assert all(float(p.detach().abs().max()) == 0 for n, p in module.trained.items() if "lora_B" in n)


def test_train_py_with_a_nan_loss_exits_with_one_line_and_exports_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(advanchor_method, "alignment", diverging_alignment)
    monkeypatch.setenv("ADVANCHOR_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "outputs"
    with pytest.raises(SystemExit) as exit_info:
        main([f"--output_dir={out}", "--trainer.logger=false", *SHORT], default_configs=ROOT / "configs" / "toy")
    message = exit_info.value.code
    assert message.startswith("error: training stopped at step 0: loss alignment is nan") and "\n" not in message
    assert not any(p.suffix in (".safetensors", ".json") for p in out.rglob("*"))


def test_secrets_are_redacted_from_the_run_config(tmp_path, monkeypatch):
    assert redact({"a": {"api_key": "k", "tokens": 3, "hf_token": "t"}, "b": [{"password": "p"}]}) == {
        "a": {"api_key": "<redacted>", "tokens": 3, "hf_token": "<redacted>"},
        "b": [{"password": "<redacted>"}],
    }
    monkeypatch.setenv("ADVANCHOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    secret = "wandb-secret-" + "0123456789" * 4
    monkeypatch.setenv("WANDB_API_KEY", secret)
    # log_every_n_steps within the 2 steps: Lightning warns about the toy config's 5 otherwise.
    argv = [
        f"--output_dir={tmp_path / 'out'}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.log_every_n_steps=1",
        *SHORT,
    ]
    out = main(argv, default_configs=ROOT / "configs" / "toy")
    import wandb

    wandb.finish()
    assert (out / "config.yaml").is_file() and list(tmp_path.rglob("run-*.wandb"))
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "cache" not in p.parts]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]


def test_run_names_cannot_leave_the_output_folder(tmp_path):
    name = run_name("advanchor", ["../../etc/passwd", "a b"])
    assert "/" not in name and ".." not in name and name.startswith("advanchor-etc_passwd_a_b-")
    with pytest.raises(SystemExit, match=r"--run_name '../escape' must be one folder name"):
        main([f"--output_dir={tmp_path}", "--run_name=../escape"], default_configs=ROOT / "configs" / "toy")


def test_pickle_weights_load_only_when_allowed(tmp_path):
    tiny_pipeline().save_pretrained(tmp_path / "pipe", safe_serialization=False)
    # The UNet and VAE as pickle .bin files (transformers writes the text encoder as safetensors anyway).
    assert list((tmp_path / "pipe" / "unet").glob("*.bin")) and not list((tmp_path / "pipe" / "unet").glob("*.safet*"))
    with pytest.raises(ValueError, match="--allow_pickle"):
        load_pipeline(str(tmp_path / "pipe"))
    pipe = load_pipeline(str(tmp_path / "pipe"), allow_pickle=True)
    assert pipe.unet.config.sample_size == 8


def test_no_code_is_loaded_with_a_model():
    sources = "\n".join(p.read_text() for p in (ROOT / "advanchor").rglob("*.py"))
    assert "trust_remote_code" not in sources and "custom_pipeline" not in sources
    assert "weights_only=False" not in sources
