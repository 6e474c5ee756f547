"""The toy world's ground-truth reader: a small CNN with one head per attribute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from .vocab import COLORS, SHAPES, STYLES

HEADS = {"shape": SHAPES, "color": COLORS, "style": STYLES}


class ToyClassifier(nn.Module):
    """Input: (N, 3, 32, 32) floats in [0, 1]; output: one logit tensor per head."""

    def __init__(self, width: int = 32):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.width = width
        self.features = nn.Sequential(
            block(3, width), block(width, 2 * width), block(2 * width, 4 * width), nn.AdaptiveAvgPool2d(1)
        )
        self.heads = nn.ModuleDict({k: nn.Linear(4 * width, len(v)) for k, v in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images * 2 - 1).flatten(1)  # (N, 4w, 1, 1) -> (N, 4w)
        return {k: head(h) for k, head in self.heads.items()}


def to_tensor(images: list[Image.Image] | torch.Tensor) -> torch.Tensor:
    """PIL images or a float batch in [0, 1] -> (N, 3, 32, 32) float tensor in [0, 1]."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a (N, 3, H, W) image batch, got shape {tuple(images.shape)}")
        return images.float()
    arrays = [np.asarray(img.convert("RGB").resize((32, 32), Image.BILINEAR)) for img in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0  # (N,H,W,3)->(N,3,H,W)


class Classifier:
    """`predict(images)` -> one `{"shape", "color", "style", "probs"}` dict per image."""

    def __init__(self, model: ToyClassifier):
        self.model = model.eval()

    @torch.no_grad()
    def probabilities(self, images: list[Image.Image] | torch.Tensor) -> dict[str, torch.Tensor]:
        x = to_tensor(images)
        if x.shape[-1] != 32 or x.shape[-2] != 32:
            x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
        return {k: v.softmax(-1) for k, v in self.model(x.clamp(0, 1)).items()}

    def predict(self, images: list[Image.Image] | torch.Tensor) -> list[dict]:
        probs = self.probabilities(images)
        n = next(iter(probs.values())).shape[0]
        out = []
        for i in range(n):
            row = {k: HEADS[k][int(p[i].argmax())] for k, p in probs.items()}
            row["probs"] = {k: float(p[i].max()) for k, p in probs.items()}
            out.append(row)
        return out


def save_classifier(model: ToyClassifier, directory: Path) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"width": model.width, "heads": HEADS}, indent=2))


def load_classifier(directory: str | Path | None = None) -> Classifier:
    """Load the shipped classifier (or one saved by `save_classifier` in `directory`)."""
    from .assets import classifier_path

    path = Path(directory) if directory is not None else classifier_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"no toy classifier at {path}; run `python -m advanchor.toyworld.build` to create it")
    config = json.loads((path / "config.json").read_text())
    model = ToyClassifier(width=config["width"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return Classifier(model)
