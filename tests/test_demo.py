"""The demo app, driven through gradio_client as a browser would drive it, with no browser."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from peft import LoraConfig
from PIL import Image

from advanchor.demo.__main__ import main
from advanchor.demo.app import build_app, launch, to_pil
from advanchor.evaluate.generate import generate_pairs
from advanchor.export import save_lora
from advanchor.models import load_pipeline

STEPS = 4
MARKER = "<h1>report-marker</h1>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose lora/ has a visible effect: peft's random init instead of the usual B = 0."""
    run = tmp_path_factory.mktemp("run")
    unet = load_pipeline("toy").unet
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=r".*attn2\.(to_k|to_v)", init_lora_weights=False)
    unet.add_adapter(config)
    save_lora(unet, run / "lora")
    return run


@pytest.fixture(scope="module")
def client(run_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    report = tmp_path_factory.mktemp("report") / "report.html"
    report.write_text(f"<html><body>{MARKER}</body></html>")
    app = build_app("toy", [str(run_dir)], report, device="cpu")
    url = launch(app, port=free_port(), block=False)
    try:
        yield Client(url, download_files=tmp_path_factory.mktemp("downloads"), verbose=False, analytics_enabled=False)
    finally:
        app.close()


def generate(client: Client, erasers: str, model: str = "toy") -> tuple:
    return client.predict(model, erasers, "a red circle", 3, STEPS, 4.0, api_name="/generate")


def test_generate_side_by_side(client: Client, run_dir: Path):
    original, edited, original_reading, edited_reading = generate(client, str(run_dir))
    images = [np.asarray(Image.open(path).convert("RGB")) for path in (original, edited)]
    assert all(image.shape == (32, 32, 3) for image in images)
    assert not np.array_equal(*images), "the eraser changed nothing"
    # The original is the base model's own image, with no eraser left on it.
    base = to_pil(generate_pairs(load_pipeline("toy"), ["a red circle"], [(0, 3)], 4.0, STEPS, progress=False)[0])
    assert np.array_equal(images[0], np.asarray(base))
    for reading in (original_reading, edited_reading):
        assert reading.startswith("shape ") and " · colour " in reading and " · texture " in reading
    assert original_reading.startswith("shape circle") and "colour red" in original_reading


def test_report_tab_shows_the_report(client: Client):
    values = [c.get("props", {}).get("value") for c in client.config["components"] if c.get("type") == "html"]
    frames = [v for v in values if isinstance(v, str) and "srcdoc=" in v]
    assert len(frames) == 1 and "&lt;h1&gt;report-marker&lt;/h1&gt;" in frames[0]


@pytest.mark.parametrize(
    ("erasers", "model", "message"),
    [
        ("/no/such/run", "toy", "eraser '/no/such/run' does not exist"),
        ("", "/no/such/model", "model path /no/such/model does not exist"),
    ],
)
def test_bad_input_is_one_line(client: Client, erasers: str, model: str, message: str):
    with pytest.raises(AppError) as err:
        generate(client, erasers, model)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path):
    with pytest.raises(SystemExit) as err:
        main(["--report", str(tmp_path / "missing.html")])
    assert str(err.value).startswith("error: report ") and "\n" not in str(err.value)
