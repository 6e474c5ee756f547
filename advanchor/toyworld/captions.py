"""Caption templates of the toy world: several phrasings, paraphrases and empty captions."""

from __future__ import annotations

import numpy as np

from .render import Scene
from .vocab import PARAPHRASES

# Each template names a subset of the scene's attributes; unnamed attributes are free, which is
# what lets "a circle" mean a circle of any colour and texture.
TEMPLATES = (
    "a {shape}",
    "a {color} {shape}",
    "a {color} {shape}",
    "a {shape} in {style} style",
    "a {style} {shape}",
    "a {style} {color} {shape}",
    "a {color} {shape} in {style} style",
    "a picture of a {color} {shape}",
    "{shape} painting",
    "{color} {shape} painting",
    "a {style} painting of a {shape}",
)
EMPTY_RATE = 0.1
PARAPHRASE_RATE = 0.25


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A random caption of `scene`: empty 10% of the time (for classifier-free guidance)."""
    if rng.random() < EMPTY_RATE:
        return ""
    shape = PARAPHRASES[scene.shape] if rng.random() < PARAPHRASE_RATE else scene.shape
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    return template.format(shape=shape, color=scene.color, style=scene.style)
