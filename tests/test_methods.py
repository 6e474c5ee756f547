"""The method interface: the registry, choosing a method in Python and on the command line."""

import pytest
import pytorch_lightning as pl
import torch
import yaml

import advanchor
from advanchor.cli import main, selected_method
from advanchor.data import ConceptData, GenerationOptions
from advanchor.export import load_unet_delta
from advanchor.methods import METHODS, AdvAnchor, ErasureMethod, Unlearner, method_class
from advanchor.models import LoraOptions
from advanchor.testing import tiny_pipeline
from advanchor.text import tokenize


def test_registry_names_the_methods():
    assert method_class("advanchor") is AdvAnchor is Unlearner
    assert METHODS["advanchor"].paper.startswith("Zhao et al. 2024")
    with pytest.raises(ValueError, match=r"unknown method 'esdx'; available: .*advanchor"):
        method_class("esdx")


def test_a_taken_name_fails_at_definition():
    with pytest.raises(TypeError, match="method name 'advanchor' is taken by AdvAnchor"):

        class Again(ErasureMethod):
            name = "advanchor"

    assert METHODS["advanchor"] is AdvAnchor


def test_erase_rejects_unknown_methods_and_options():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        advanchor.erase("toy", "circle", method="nope")
    with pytest.raises(ValueError, match=r"takes no option 'eta'; its options: .*preservation_weight"):
        advanchor.erase("toy", "circle", eta=1.0)


def test_method_comes_from_the_flag_then_the_configs(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("method: one\nmodel:\n  lr: 1.0\n")
    second.write_text("model:\n  lr: 2.0\n")
    assert selected_method([], []) == "advanchor"
    assert selected_method([], [str(first), str(second)]) == "one"
    assert selected_method(["--method=two"], [str(first)]) == "two"
    assert selected_method(["--method", "three"], [str(first)]) == "three"
    with pytest.raises(FileNotFoundError, match="config file .*missing.yaml does not exist"):
        selected_method([], [str(tmp_path / "missing.yaml")])


def test_unknown_method_on_the_command_line_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--method=nope", "--print_config"])
    assert (
        str(exit_info.value)
        == "error: unknown method 'nope'; available: ac, advanchor, conceptprune, esd, fmn, ft, uce"
    )


TINY = {
    "ac": dict(erase="a {concept}", anchor=""),
    "esd": dict(prompt="a {concept}", ddim_steps=4, guidance_scale=2.0),
    "fmn": dict(prompt="a {concept}"),
    "ft": dict(prompt="a {concept}"),
}


@pytest.mark.parametrize("method", sorted(TINY))
@pytest.mark.parametrize("trainable", ["attn2", "lora"])
def test_each_method_trains_two_steps_and_exports(tmp_path, method, trainable):
    pl.seed_everything(0, verbose=False)
    lora = LoraOptions(rank=2, alpha=4.0)
    module = method_class(method)(concepts=["circle"], trainable=trainable, lora=lora, lr=1e-3, **TINY[method])
    module.attach(tiny_pipeline())
    before = {n: p.detach().clone() for n, p in module.trained.items()}
    data = ConceptData(
        generation=GenerationOptions(images_per_concept=2, steps=2, guidance_scale=2.0),
        cache_dir=str(tmp_path / "cache"),
    )
    trainer = pl.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2
    assert any(not torch.equal(p.detach(), before[n]) for n, p in module.trained.items())
    assert (tmp_path / "cache").exists() == (module.trains_on != "none")
    module.export(tmp_path / "out")
    fresh = tiny_pipeline()
    if trainable == "lora":
        fresh.load_lora_weights(tmp_path / "out" / "lora")
    else:
        load_unet_delta(fresh, tmp_path / "out" / "unet_delta.safetensors")
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 16, 16, generator=g)
    with torch.no_grad():
        assert torch.allclose(fresh.unet(x, 500, cond).sample, module.unet(x, 500, cond).sample, atol=1e-5)


def test_esd_samples_to_the_timestep_it_reports():
    module = method_class("esd")(concepts=["circle"], prompt="a {concept}", ddim_steps=4).attach(tiny_pipeline())
    uncond_cond = module.encoded("", "a circle")
    z, t = module.partial_sample(uncond_cond, 0)
    assert z.shape == (1, 4, 8, 8) and int(t) == int(module.sampler.timesteps[0])
    _, t2 = module.partial_sample(uncond_cond, 3)
    assert int(t2) == int(module.sampler.timesteps[3]) < int(t)


@pytest.mark.parametrize("method,default_lr", [("ac", 2e-6), ("esd", 1e-5)])
def test_each_method_gets_its_own_defaults(tmp_path, capsys, method, default_lr):
    config = tmp_path / "only_method.yaml"
    config.write_text(f"method: {method}\n")
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["method"] == method and printed["model"]["lr"] == default_lr


def test_fmn_records_every_cross_attention_layer():
    module = method_class("fmn")(concepts=["circle"], prompt="a {concept}").attach(tiny_pipeline())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad(), module.recorded_attention() as probs:
        module.unet(torch.randn(1, 4, 8, 8, generator=g), 500, module.encoded("a circle"))
    assert len(probs) == len(module.cross_attention) > 0
    heads = module.cross_attention[0].heads
    for p in probs:
        assert p.shape[0] == heads and p.shape[-1] == 16
        assert torch.allclose(p.sum(-1), torch.ones(()))
    count = len(probs)
    with torch.no_grad():
        module.unet(torch.randn(1, 4, 8, 8, generator=g), 500, module.encoded("a circle"))
    assert len(probs) == count, "the hooks are removed on exit"
    assert module.positions == [[2]]
    pooled = method_class("fmn")(concepts=["circle"], prompt="a {concept}", use_pooler=True).attach(tiny_pipeline())
    eos = pooled.tokenizer.eos_token_id
    assert pooled.positions == [[2, 3]] and tokenize(pooled.tokenizer, ["a circle"])[0, 3] == eos
