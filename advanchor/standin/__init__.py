"""Stable Diffusion 1.4 offline: its real tokenizer and a random-weight stand-in pipeline."""

from .pipeline import build_standin, write_standin
from .tokenizer import write_clip_tokenizer

__all__ = ["build_standin", "write_clip_tokenizer", "write_standin"]
