"""The demo's Gradio app: a prompt through the original and the erased model side by side."""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from ..errors import INPUT_ERRORS, one_line
from ..evaluate.generate import generate_pairs
from ..models import load_pipeline, resolve_path
from ..stack import load_erasers, resolve
from ..toyworld import pipeline_path
from ..toyworld.classifier import Classifier, load_classifier
from ..toyworld.quality import GUIDANCE_SCALE, STEPS

# Offline: gradio's calls home outside a Blocks (its version check) read this variable, not analytics_enabled.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
try:
    import gradio as gr
except ImportError as err:
    raise ImportError("the demo needs gradio: pip install 'advanchor[demo]'") from err

REAL_GUIDANCE = 7.5  # Stable Diffusion's usual scale; the toy model was tuned at GUIDANCE_SCALE
TOY_PROMPT = "a red circle"
READINGS = (("shape", "shape"), ("color", "colour"), ("style", "texture"))  # classifier head, label
# System fonts only: the page must not fetch anything from outside the machine.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "Consolas", "monospace"]
)
# Toy images are 32x32: the browser shows them at that size unless told to fill the frame, and blurs them
# when it scales them up (nearest-neighbour would alias a real model's images, scaled down).
CSS = ".fill img { width: 100%; height: 100%; object-fit: contain; } .pixelated img { image-rendering: pixelated; }"
ERASER_HINT = "one per line: a run folder, its lora/ directory, or a unet_delta.safetensors file"


def is_toy(model: str) -> bool:
    """Whether `model` is the shipped toy pipeline, the only model whose images the classifier can read."""
    return Path(resolve_path(model)).expanduser().resolve() == Path(pipeline_path()).resolve()


def parse_erasers(text: str) -> tuple[str, ...]:
    """The eraser paths of the textbox, one per line, blank lines skipped."""
    return tuple(str(Path(line.strip()).expanduser()) for line in text.splitlines() if line.strip())


class Pipelines:
    """The original and the edited pipeline of the last (base, erasers) asked for: a repeated click reuses them.

    The edited model is a second load of the base, not the same pipeline with its erasers switched off: UNet
    deltas change weights in place, and a LoRA may carry text-encoder weights too. Only the last pair is
    kept, since a real model's pipeline takes gigabytes.
    """

    def __init__(self, device: str):
        self.device = device
        self._base: tuple[str, StableDiffusionPipeline] | None = None
        self._edited: tuple[tuple[str, ...], StableDiffusionPipeline] | None = None

    def get(self, model: str, erasers: tuple[str, ...]) -> tuple[StableDiffusionPipeline, StableDiffusionPipeline]:
        base_stale = self._base is None or self._base[0] != model
        if erasers and (base_stale or self._edited is None or self._edited[0] != erasers):
            for source in erasers:
                resolve(source)  # a bad path fails here, before any pipeline loads for it
        if base_stale:
            self._base = self._edited = None  # freed before the next load, not after it
            self._base = (model, load_pipeline(model).to(self.device))
        if not erasers:
            return self._base[1], self._base[1]
        if self._edited is None or self._edited[0] != erasers:
            self._edited = None
            pipe = load_pipeline(model)
            load_erasers(pipe, list(erasers))
            self._edited = (erasers, pipe.to(self.device))
        return self._base[1], self._edited[1]


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) floats in [0, 1] -> a PIL image."""
    return Image.fromarray((image.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy())


def reading_text(reading: dict) -> str:
    """The classifier's reading of one image, e.g. `shape circle (0.99) · colour red (1.00) · texture solid (0.97)`."""
    return " · ".join(f"{label} {reading[head]} ({reading['probs'][head]:.2f})" for head, label in READINGS)


@functools.cache
def toy_classifier() -> Classifier:
    return load_classifier()


def report_frame(report: str | os.PathLike | None) -> str:
    """The benchmark report in an iframe, whose own styles then stay off the app's page."""
    if report is None:
        return (
            "<p>No report given. Start the demo with <code>--report DIR/report.html</code>, the file that "
            "<code>python -m advanchor.benchmark</code> writes.</p>"
        )
    path = Path(report)
    if not path.is_file():
        raise FileNotFoundError(f"report {str(report)!r} does not exist; pass the report.html of a benchmark run")
    page = path.read_text(encoding="utf-8")
    return f'<iframe srcdoc="{html.escape(page)}" style="width: 100%; height: 80vh; border: 0"></iframe>'


Comparison = tuple[Image.Image, Image.Image, str, str]  # original, edited, and the classifier's reading of each


def compare(
    pipelines: Pipelines, model: str, eraser_text: str, prompt: str, seed: float, steps: float, guidance: float
) -> Comparison:
    """One prompt and seed through the base model and the base model with the erasers."""
    model = model.strip() or "toy"
    original, edited = pipelines.get(model, parse_erasers(eraser_text))
    args = ([prompt], [(0, int(seed))], float(guidance), int(steps))
    images = [generate_pairs(pipe, *args, progress=False)[0] for pipe in (original, edited)]
    if is_toy(model):
        readings = [reading_text(r) for r in toy_classifier().predict(torch.stack(images))]
    else:
        readings = ["the classifier reads the toy model's images only"] * 2
    return to_pil(images[0]), to_pil(images[1]), readings[0], readings[1]


def build_app(
    model: str = "toy",
    erasers: list[str] | None = None,
    report: str | os.PathLike | None = None,
    prompt: str | None = None,
    device: str | None = None,
    generate_at_start: bool = False,
) -> gr.Blocks:
    """The demo's Blocks app with its fields prefilled; `generate_at_start` also fills the outputs, by
    comparing once now, so that the page opens with them."""
    toy = is_toy(model)
    pipelines = Pipelines(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    eraser_text = "\n".join(erasers or [])
    prompt = TOY_PROMPT if prompt is None and toy else prompt or ""
    guidance_scale = GUIDANCE_SCALE if toy else REAL_GUIDANCE
    first = (
        compare(pipelines, model, eraser_text, prompt, 0, STEPS, guidance_scale) if generate_at_start else (None,) * 4
    )
    image = {
        "type": "pil",
        "format": "png",
        "height": 320,
        "elem_classes": ["fill", "pixelated"] if toy else ["fill"],
        "buttons": ["download", "fullscreen"],  # no share button: it posts to the hub
    }

    def generate(model: str, eraser_text: str, prompt: str, seed: float, steps: float, guidance: float) -> Comparison:
        try:
            return compare(pipelines, model, eraser_text, prompt, seed, steps, guidance)
        except INPUT_ERRORS as err:
            raise gr.Error(one_line(err), print_exception=False) from err

    with gr.Blocks(title="advanchor demo", analytics_enabled=False) as app:
        gr.Markdown("# advanchor demo\nOne prompt and seed through the base model and the base model with erasers.")
        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column(scale=2):
                    model_box = gr.Textbox(model, label="base model", info='"toy", a diffusers directory or a hub id')
                    eraser_box = gr.Textbox(eraser_text, label="erasers", info=ERASER_HINT, lines=3)
                    prompt_box = gr.Textbox(prompt, label="prompt")
                    with gr.Row():
                        seed = gr.Number(0, label="seed", precision=0, minimum=0)
                        steps = gr.Number(STEPS, label="steps", precision=0, minimum=1, maximum=1000)
                        guidance = gr.Number(guidance_scale, label="guidance scale")
                    button = gr.Button("Generate", variant="primary")
                with gr.Column(scale=3), gr.Row():
                    with gr.Column():
                        original = gr.Image(first[0], label="original", **image)
                        original_reading = gr.Textbox(first[2], label="classifier reading", interactive=False)
                    with gr.Column():
                        edited = gr.Image(first[1], label="with erasers", **image)
                        edited_reading = gr.Textbox(first[3], label="classifier reading", interactive=False)
        with gr.Tab("Benchmark report"):
            gr.HTML(report_frame(report))
        inputs = [model_box, eraser_box, prompt_box, seed, steps, guidance]
        button.click(generate, inputs, [original, edited, original_reading, edited_reading], api_name="generate")
    return app


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, block: bool = True) -> str:
    """Serve `app` and return its local URL: no share link, and no server-side rendering (it needs Node)."""
    _, url, _ = app.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        prevent_thread_lock=not block,
        theme=THEME,
        css=CSS,
    )
    return url
