"""The toy world: a procedurally rendered scene space, a Stable-Diffusion-architecture pipeline
trained on it, and a classifier that reads the ground truth back from any image."""

from .assets import pipeline_path
from .classifier import load_classifier

__all__ = ["pipeline_path", "load_classifier"]
