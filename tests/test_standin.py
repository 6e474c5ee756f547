"""SD 1.4 offline: the real CLIP tokenizer, token positions under BPE, and the stand-in writer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from tiny import load_benchmark  # noqa: E402

from advanchor.cli import main  # noqa: E402
from advanchor.methods import AdvAnchor, PromptOptions  # noqa: E402
from advanchor.standin import write_clip_tokenizer, write_standin  # noqa: E402
from advanchor.standin.pipeline import TEXT_ENCODER, UNET, VAE  # noqa: E402
from advanchor.text import token_positions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# SD 1.4's architecture, narrowed so that it is written and loaded in seconds.
SMALL = {
    "unet": {**UNET, "block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "norm_num_groups": 8,
             "cross_attention_dim": 32, "attention_head_dim": 2},
    "vae": {**VAE, "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4},
    "text_encoder": {**TEXT_ENCODER, "hidden_size": 32, "intermediate_size": 64, "projection_dim": 32,
                     "num_hidden_layers": 2, "num_attention_heads": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return write_clip_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_standin(tmp_path_factory.mktemp("models") / "sd14", **SMALL)


def test_tokenizer_is_sd14s(tokenizer, tmp_path):
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.model_max_length == 77
    tokenizer.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again("A Photo of a CAT").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]  # CLIP lower-cases


def test_multi_token_concepts_find_all_positions(tokenizer):
    assert token_positions(tokenizer, "van gogh's painting", "van gogh") == [1, 2]  # "'s" is a token of its own
    assert len(tokenizer("kelly mckernan", add_special_tokens=False).input_ids) == 3  # "mckernan" splits in two
    assert token_positions(tokenizer, "kelly mckernan's painting", "kelly mckernan") == [1, 2, 3]
    assert token_positions(tokenizer, "Van Gogh, van gogh", "van gogh") == [1, 2, 4, 5]


def test_a_word_glued_to_letters_names_the_template(tokenizer):
    with pytest.raises(ValueError, match=r"does not occur in prompt 'van goghs painting'.*fix model.prompts.anchor"):
        token_positions(tokenizer, "van goghs painting", "van gogh", "model.prompts.anchor '{concept}s painting'")


def test_standin_loads_with_the_diffusers_loader(standin):
    pipe = StableDiffusionPipeline.from_pretrained(standin)
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.text_encoder.config.vocab_size == 49408
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert [type(b).__name__ for b in pipe.unet.down_blocks] == UNET["down_block_types"]
    assert pipe.safety_checker is None
    assert not list(standin.parent.glob(".sd14-*")), "the temporary folder must be gone"


def test_advanchor_on_the_standin_perturbs_every_concept_token(standin):
    pipe = StableDiffusionPipeline.from_pretrained(standin)
    module = AdvAnchor(concepts=["van gogh"], pretrained=str(standin)).attach(pipe)
    assert module.positions == [[1, 2]]
    assert module.deltas[0].shape == (2, 32)
    with torch.no_grad():
        anchor = module.anchor_embedding(0)
    assert anchor.shape == (1, 77, 32)
    glued = PromptOptions(anchor="{concept}s painting")
    with pytest.raises(ValueError, match=r"fix model.prompts.anchor '\{concept\}s painting'"):
        AdvAnchor(concepts=["van gogh"], pretrained=str(standin), prompts=glued).attach(
            StableDiffusionPipeline.from_pretrained(standin)
        )


def test_the_command_will_not_overwrite_by_accident(standin):
    done = subprocess.run([sys.executable, "-m", "advanchor.standin", str(standin)], capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: {standin} exists; pass --overwrite to replace it, or choose another folder"
    )
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["style", "object", "nudity"])
def test_sd14_configs_run_end_to_end_on_a_narrow_standin(standin, tmp_path, monkeypatch, name):
    """train.py with configs/sd14/<name>.yaml: concept images, LoRA training, export, the I2P evaluation, and
    the adapter through diffusers' loader (benchmarks/standin_e2e.py does the same at full size)."""
    e2e = load_benchmark("standin_e2e")
    monkeypatch.setenv("ADVANCHOR_CACHE", str(tmp_path / "cache"))
    config = ROOT / "configs" / "sd14" / f"{name}.yaml"
    concept = yaml.safe_load(config.read_text())["model"]["concepts"][0]
    run = main(
        ["--config", str(config), f"--model.pretrained={standin}", *e2e.OVERRIDES, "--trainer.logger=false",
         "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         f"--eval.prompts={e2e.prompt_csv(tmp_path / 'cases.csv', concept)}", f"--output_dir={tmp_path}",
         "--run_name=run"]
    )  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["after"][concept]["prompts"] == 2
    assert metrics["final"]["inner_steps"] == 2
    pipe = StableDiffusionPipeline.from_pretrained(standin)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = pipe.unet(z, 500, emb).sample
        pipe.load_lora_weights(run / "lora")
        assert not torch.equal(pipe.unet(z, 500, emb).sample, base)
