"""Where the shipped toy artifacts live inside the installed package."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"


def pipeline_path() -> str:
    """Directory of the shipped toy pipeline, for `StableDiffusionPipeline.from_pretrained`."""
    path = ASSETS / "pipeline"
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"no toy pipeline at {path}; run `python -m advanchor.toyworld.build`")
    return str(path)


def classifier_path() -> Path:
    return ASSETS / "classifier"
