"""The shipped toy world: offline loading, the classifier's accuracy, artifact size."""

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image

import advanchor.toyworld as toyworld
from advanchor.toyworld.assets import ASSETS
from advanchor.toyworld.render import render_dataset
from advanchor.toyworld.train_classifier import accuracy


def test_pipeline_loads_offline_and_generates():
    pipe = StableDiffusionPipeline.from_pretrained(toyworld.pipeline_path(), local_files_only=True)
    assert isinstance(pipe.unet, UNet2DConditionModel)
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    assert any(name.endswith("attn2") for name, _ in pipe.unet.named_modules())
    pipe.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=5, guidance_scale=4.0, output_type="pt")
    a = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kw).images
    b = pipe("a red circle", generator=torch.Generator().manual_seed(0), **kw).images
    assert a.shape == (1, 3, 32, 32)
    assert torch.equal(a, b)


def test_classifier_reads_fresh_renders():
    clf = toyworld.load_classifier()
    acc = accuracy(clf.model, 1000, seed=424242)
    assert all(v >= 0.99 for v in acc.values()), acc


def test_classifier_accepts_pil_and_tensors_alike():
    clf = toyworld.load_classifier()
    images, scenes = render_dataset(8, seed=99)
    pil = [Image.fromarray(img) for img in images]
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    from_pil, from_tensor = clf.predict(pil), clf.predict(tensor)
    assert [p["shape"] for p in from_pil] == [p["shape"] for p in from_tensor] == [s.shape for s in scenes]
    assert set(from_pil[0]) == {"shape", "color", "style", "probs"}


def test_shipped_artifacts_are_small():
    total = sum(p.stat().st_size for p in Path(ASSETS).rglob("*") if p.is_file())
    assert total <= 30 * 2**20, f"{total / 2**20:.1f} MB"
