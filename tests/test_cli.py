"""train.py end to end on the shipped toy model, config parsing, W&B offline, the Python API."""

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

sys.path.insert(0, str(Path(__file__).parent))
from tiny import run_train_py  # noqa: E402

import advanchor  # noqa: E402
from advanchor.cli import main  # noqa: E402
from advanchor.toyworld import pipeline_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "toy" / "advanchor.yaml"
QUICK = [
    "--trainer.max_steps=2",
    "--data.generation.images_per_concept=2",
    "--eval.seeds=1",
    "--trainer.enable_progress_bar=false",
]


@pytest.mark.parametrize("config", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "concepts:" in printed and "trainable:" in printed


def bad_input_line(tmp_path, *args: str) -> str:
    """train.py with `args` in a subprocess: it must fail without a traceback; returns its last stderr line."""
    proc = run_train_py(tmp_path, *args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_unknown_concept_word_is_a_one_line_error(tmp_path):
    line = bad_input_line(
        tmp_path, "--model.concepts=[dragon]", "--trainer.logger=false", f"--output_dir={tmp_path}", *QUICK
    )
    assert line.startswith("error: concept word 'dragon'")


def test_train_py_exports_a_lora_that_diffusers_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVANCHOR_CACHE", str(tmp_path / "cache"))
    out = main(
        [
            "--config",
            str(TOY),
            "--trainer.logger=false",
            f"--output_dir={tmp_path}",
            "--run_name=r",
            "--export.kohya=true",
            *QUICK,
        ]
    )
    assert out == tmp_path / "r"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["method"] == "advanchor"
    for key in ("alignment", "preservation", "anchor_loss", "delta_norm", "inner_steps"):
        assert key in metrics["final"]
    for when in ("before", "after"):
        assert 0.0 <= metrics[when]["circle"]["erased_accuracy"] <= 1.0
    assert "concepts:" in (out / "config.yaml").read_text()
    assert (out / "grid_before.png").is_file() and (out / "grid_after.png").is_file()

    base = StableDiffusionPipeline.from_pretrained(pipeline_path())
    edited = StableDiffusionPipeline.from_pretrained(pipeline_path())
    edited.load_lora_weights(out / "lora")
    kohya = StableDiffusionPipeline.from_pretrained(pipeline_path())
    kohya.load_lora_weights(out / "kohya_lora.safetensors")
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 4, 16, 16, generator=g), torch.tensor([500])
    ids = base.tokenizer(["a circle"], padding="max_length", max_length=16, return_tensors="pt").input_ids
    cond = base.text_encoder(ids)[0]
    with torch.no_grad():
        outs = [p.unet(x, t, cond).sample for p in (base, edited, kohya)]
    assert not torch.allclose(outs[0], outs[1], atol=1e-6), "two steps of training left the UNet unchanged"
    assert torch.allclose(outs[1], outs[2], atol=1e-5)


def test_wandb_offline_run_logs_the_expected_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVANCHOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    main(
        [
            "--config",
            str(TOY),
            f"--output_dir={tmp_path}",
            "--run_name=w",
            "--trainer.log_every_n_steps=1",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            *QUICK,
        ]
    )
    import wandb

    wandb.finish()
    runs = list(tmp_path.rglob("offline-run-*"))
    assert runs, "no offline run directory"
    # Offline runs keep everything in one record file; metric names and config keys appear verbatim.
    records = next(runs[0].glob("run-*.wandb")).read_bytes()
    for key in (
        "train/alignment",
        "train/preservation",
        "train/anchor_loss",
        "train/delta_norm",
        "train/inner_steps",
        "after/circle/erased_accuracy",
        "after/circle/fidelity",
        "after/circle/post_asr",
        "final/train_time_s",
        "seed_everything",
    ):
        assert key.encode() in records, key
    assert list(runs[0].rglob("*.png")), "no image grid logged"
    assert list(runs[0].rglob("evaluation_*.table.json")), "no evaluation table logged"


def test_python_api_erases_and_saves(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVANCHOR_CACHE", str(tmp_path / "cache"))
    from advanchor.data import ConceptData, GenerationOptions
    from advanchor.evaluate import EvalOptions
    from advanchor.methods import PromptOptions

    result = advanchor.erase(
        "toy",
        "star",
        trainable="attn2-kv",
        lr=1e-3,
        prompts=PromptOptions(erase="a {concept}", anchor="a {concept}", neutral="", attribute="a {attribute}"),
        data=ConceptData(generation=GenerationOptions(images_per_concept=2, steps=5, guidance_scale=4.0)),
        trainer={"max_steps": 2, "enable_progress_bar": False},
        evaluation=EvalOptions(seeds=1),
    )
    assert result.metrics["steps"] == 2 and "star" in result.metrics["after"]
    out = result.save(tmp_path / "api")
    assert (out / "unet_delta.safetensors").is_file() and (out / "metrics.json").is_file()
    from advanchor.export import load_unet_delta

    reloaded = load_unet_delta(StableDiffusionPipeline.from_pretrained(pipeline_path()), out / "unet_delta.safetensors")
    for name, p in result.module.trained.items():
        assert torch.allclose(dict(reloaded.unet.named_parameters())[name], p, atol=1e-6)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_gpu_accelerator_without_a_gpu_is_a_one_line_error(accelerator):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(TOY), f"--trainer.accelerator={accelerator}", "--trainer.logger=false"])
    message = exit_info.value.code
    assert message.startswith("error: the trainer settings do not fit this machine: ") and "\n" not in message
    assert message.endswith("(without a GPU: --trainer.accelerator=cpu)")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_train_py_gpu_without_a_gpu_exits_without_a_traceback(tmp_path):
    line = bad_input_line(tmp_path, "--trainer.accelerator=gpu", "--trainer.precision=bf16-mixed")
    assert line.startswith("error: the trainer settings do not fit this machine")


def test_train_py_prints_no_warning_a_user_cannot_act_on(tmp_path):
    """The default run with its W&B logger (offline), shortened: no library notice, deprecation or advert
    reaches the terminal (advanchor.quiet and the filters around trainer.fit say why each is dropped)."""
    proc = run_train_py(tmp_path, f"--output_dir={tmp_path}", "--trainer.log_every_n_steps=1", *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    noise = [line for line in proc.stderr.splitlines() if re.search(r"warn|deprecat|tip:|torchvision", line, re.I)]
    assert noise == []


@pytest.mark.parametrize("flag", ["--model.lr=-1", "--model.lr=0", "--model.ddim_steps=0"])
def test_out_of_range_numbers_fail_before_any_work(tmp_path, flag):
    line = bad_input_line(tmp_path, flag, f"--output_dir={tmp_path / 'outputs'}")
    assert line.startswith(f"error: {flag.removeprefix('--').split('=')[0]} must be")
    # Checked when the method is built: no model was loaded, so no W&B run and no run folder exist.
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "wandb").exists()
