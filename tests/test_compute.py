"""`compute:` (gradient checkpointing, torch.compile, attention) and bf16-mixed: each option reaches the
model, and changes a few AdvAnchor steps on the tiny pipeline by no more than its float precision."""

import math
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from tiny import tiny_module, tiny_pipeline, tiny_run  # noqa: E402

import advanchor  # noqa: E402
from advanchor.cli import build, main  # noqa: E402
from advanchor.compute import ComputeOptions, check_precision  # noqa: E402
from advanchor.export import load_unet_delta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "configs" / "toy" / "advanchor.yaml"
# AdvAnchor's logged figures that are mean squared differences of two UNet predictions.
SQUARED = ("alignment", "preservation", "anchor_loss", "retain")
FP32, BF16 = 1e-5, 1e-2  # relative precision of a UNet prediction: fp32 kernels that differ in order; bf16


class StepLog(pl.Callback):
    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, *args):
        self.steps.append({k.removeprefix("train/"): float(v) for k, v in trainer.callback_metrics.items()})


def train(tmp_path: Path, trainable: str, compute: ComputeOptions | None = None, precision: str = "32-true"):
    """Three AdvAnchor steps on the tiny pipeline with `compute` applied: (figures of each step, module)."""
    log = StepLog()
    module, *_ = tiny_run(tmp_path, trainable=trainable, steps=3, precision=precision, callbacks=[log], compute=compute)
    return log.steps, module


@torch.no_grad()
def prediction(module, unet=None) -> torch.Tensor:
    """The trained UNet's (or `unet`'s) prediction on a fixed input, in fp32 outside autocast: (1, 4, 8, 8)."""
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500])
    return (unet or module.unet)(x, t, module.encoded("a circle")).sample


def assert_close(run, reference, r: float) -> None:
    """Every figure of every step, and the trained UNet's prediction, agree to relative precision `r` of a
    prediction. The losses are mean squared differences of two predictions of size ~1 that nearly agree on a
    random model (L from 1e-6 to 1e-2), so an error r in the predictions moves L by up to 2 sqrt(L) r + r^2,
    far more than r L. delta_norm is a norm: r relative. The inner step counts are equal."""
    (steps, module), (ref_steps, ref_module) = run, reference
    assert len(steps) == len(ref_steps) == 3
    for got, want in zip(steps, ref_steps):
        assert got.keys() == want.keys()
        for key, w in want.items():
            tol = 2 * math.sqrt(w) * r + r * r if key in SQUARED else r * abs(w)
            assert abs(got[key] - w) <= tol, (key, got[key], w)
    expected = prediction(ref_module)
    assert (prediction(module) - expected).norm() <= r * expected.norm()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One image cache: the baseline generates the concept images, every other run reads them."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def baseline(cache):
    """fp32, SDPA, no checkpointing, not compiled; per trainable set (weights swapped, LoRA scaled off)."""
    return {trainable: train(cache, trainable) for trainable in ("attn2", "lora")}


@pytest.mark.parametrize("trainable", ["attn2", "lora"])
@pytest.mark.parametrize(
    "options", [ComputeOptions(gradient_checkpointing=True), ComputeOptions(attention="eager")], ids=repr
)
def test_fp32_options_change_training_by_rounding_only(cache, baseline, trainable, options):
    assert_close(train(cache, trainable, options), baseline[trainable], FP32)


@pytest.mark.parametrize("trainable", ["attn2", "lora"])
def test_bf16_mixed_trains_within_bf16_precision_and_exports_fp32(tmp_path, cache, baseline, trainable):
    run = train(cache, trainable, precision="bf16-mixed")
    assert_close(run, baseline[trainable], BF16)
    module = run[1]
    assert {p.dtype for p in module.trained.values()} == {torch.float32}  # autocast leaves the weights fp32
    module.export(tmp_path)
    files = list(tmp_path.rglob("*.safetensors"))
    assert files and all(v.dtype == torch.float32 for f in files for v in load_file(f).values())
    if trainable == "lora":
        reloaded = tiny_pipeline()
        reloaded.load_lora_weights(tmp_path / "lora")
    else:
        reloaded = load_unet_delta(tiny_pipeline(), tmp_path / "unet_delta.safetensors")
    assert torch.allclose(prediction(module, reloaded.unet), prediction(module), atol=1e-5)


@pytest.mark.parametrize("trainable", ["attn2", "lora"])
def test_compiled_unet_trains_like_the_plain_one(cache, baseline, trainable, monkeypatch):
    """The training step through dynamo: graph capture, guards (the frozen view's swapped weights or zeroed
    LoRA scale), recompiles, the text-encoder hook, export. Inductor (and AOT autograd) are the next test's:
    on a CPU a graph takes ~30 s and a run compiles a dozen (~2-4 min), so this one runs dynamo's graphs as
    they are captured (backend "eager", ~15-25 s)."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="eager", **kw))
    run = train(cache, trainable, ComputeOptions(compile=True))
    assert run[1].unet._compiled_call_impl is not None
    assert_close(run, baseline[trainable], FP32)
    assert list(run[1].unet.state_dict()) == list(baseline[trainable][1].unet.state_dict())


def test_inductor_compiled_unet_matches_the_plain_one():
    """`compute.compile` as it runs (inductor, C++ on a CPU): one forward and backward, ~30 s on 2 cores."""
    plain, compiled = tiny_module("attn2"), tiny_module("attn2")
    ComputeOptions(compile=True).apply(compiled.pipe)
    outputs, grads = [], []
    for module in (plain, compiled):
        g = torch.Generator().manual_seed(1)
        x, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([500])
        out = module.unet(x, t, module.encoded("a circle")).sample
        outputs.append(out.detach())
        grads.append(torch.autograd.grad(out.square().mean(), list(module.trained.values())))
    assert (outputs[1] - outputs[0]).norm() <= FP32 * outputs[0].norm()
    for got, want in zip(*reversed(grads)):
        assert (got - want).norm() <= FP32 * want.norm()
    assert list(compiled.unet.state_dict()) == list(plain.unet.state_dict())


def test_every_option_reaches_the_model():
    pipe = tiny_pipeline()
    ComputeOptions(attention="eager", gradient_checkpointing=True, compile=True).apply(pipe)
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor}
    assert pipe.text_encoder.config._attn_implementation == "eager"
    assert pipe.unet.is_gradient_checkpointing
    assert pipe.unet._compiled_call_impl is not None
    ComputeOptions().apply(pipe)
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}
    assert pipe.text_encoder.config._attn_implementation == "sdpa"
    assert not pipe.unet.is_gradient_checkpointing


def test_bad_attention_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"^unknown compute.attention 'flash'; use one of: sdpa, eager$"):
        ComputeOptions(attention="flash").apply(tiny_pipeline())


def test_train_py_applies_the_compute_section(tmp_path):
    run = build(
        [
            "--config",
            str(TOY),
            "--compute.attention=eager",
            "--compute.gradient_checkpointing=true",
            "--trainer.logger=false",
            f"--output_dir={tmp_path}",
        ]
    )
    assert run.compute == ComputeOptions(gradient_checkpointing=True, attention="eager")
    unet = run.cli.model.unet
    assert unet.is_gradient_checkpointing and {type(p) for p in unet.attn_processors.values()} == {AttnProcessor}
    assert "gradient_checkpointing: true" in run.config_yaml


def test_train_py_bad_compute_value_is_a_one_line_error():
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(TOY), "--compute.attention=flash"])
    assert exit_info.value.code == "error: unknown compute.attention 'flash'; use one of: sdpa, eager"


def test_erase_applies_compute():
    result = advanchor.erase(
        tiny_pipeline(), "circle", method="uce", prompt="a {concept}", compute=ComputeOptions(attention="eager")
    )
    assert {type(p) for p in result.pipeline.unet.attn_processors.values()} == {AttnProcessor}


def test_bf16_on_a_gpu_without_it_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(ValueError, match=r"^trainer.precision bf16-mixed needs bfloat16.*16-mixed or 32-true$"):
        check_precision("bf16-mixed", torch.device("cuda"))
    check_precision("bf16-mixed", torch.device("cpu"))
    check_precision("32-true", torch.device("cuda"))
