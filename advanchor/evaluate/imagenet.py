"""Object accuracy with ImageNet ResNet-50 top-1 and the AdvAnchor paper's class ids."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .weights import require, weights_file

# The paper's nine objects and their ImageNet class ids.
OBJECT_CLASSES = {
    "chain saw": 491,
    "church": 497,
    "gas pump": 571,
    "tench": 0,
    "garbage truck": 569,
    "english springer": 217,
    "golf ball": 574,
    "parachute": 701,
    "french horn": 566,
}
RESNET50_FILE = "resnet50-0676ba61.pth"  # torchvision's IMAGENET1K_V1, the weights `pretrained=True` loads
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def object_class(concept: str) -> int:
    key = concept.lower().strip()
    if key not in OBJECT_CLASSES:
        raise ValueError(f"no ImageNet class for {concept!r}; objects with one: {', '.join(OBJECT_CLASSES)}")
    return OBJECT_CLASSES[key]


def imagenet_preprocess(images: torch.Tensor) -> torch.Tensor:
    """torchvision's evaluation transform for (N, 3, H, W) in [0, 1]: resize 256, centre crop 224, normalise."""
    h, w = images.shape[-2:]
    scale = 256 / min(h, w)
    x = F.interpolate(images, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    x = x[..., top : top + 224, left : left + 224]
    mean, std = torch.tensor(MEAN, device=x.device), torch.tensor(STD, device=x.device)
    return (x - mean[:, None, None]) / std[:, None, None]


class ObjectJudge:
    """ResNet-50 top-1 on (N, 3, H, W) batches in [0, 1]; calling it answers "is this the concept?" per image."""

    def __init__(self, concept: str, weights: str | os.PathLike | None = None, device: str = "cpu"):
        self.target = object_class(concept)
        path = weights_file(RESNET50_FILE, "ImageNet ResNet-50", weights)
        models = require("torchvision.models")
        self.model = models.resnet50()
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.eval().to(device)

    @torch.no_grad()
    def top1(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet class ids (N,)."""
        x = imagenet_preprocess(images.float().to(next(self.model.parameters()).device))
        return self.model(x).argmax(-1).cpu()

    def __call__(self, images: torch.Tensor) -> list[bool]:
        return (self.top1(images) == self.target).tolist()
