"""Pretrained weights of the real-model evaluators, from a local file or the torch hub cache only."""

from __future__ import annotations

import importlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


def require(module: str):
    """Import an optional evaluator dependency, or fail with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is not installed; install the evaluation extra: pip install 'advanchor[eval]'"
        ) from err


def weights_file(filename: str, what: str, explicit: str | os.PathLike | None = None) -> Path:
    """`explicit` if given, else `<torch hub dir>/checkpoints/<filename>`; a clear error when it is absent."""
    path = Path(explicit) if explicit else Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} weights not found at {path}; nothing is downloaded at run time: copy {filename} there "
            "(or pass its path)"
        )
    return path


@contextmanager
def hub_with(filename: str, what: str, explicit: str | os.PathLike | None = None) -> Iterator[Path]:
    """While active, the torch hub cache holds `filename`, so libraries that load it by URL find it offline."""
    path = weights_file(filename, what, explicit)
    if path.parent == Path(torch.hub.get_dir()) / "checkpoints" and path.name == filename:
        yield path
        return
    previous = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        (Path(tmp) / "checkpoints" / filename).symlink_to(path.resolve())
        torch.hub.set_dir(tmp)
        try:
            yield path
        finally:
            torch.hub.set_dir(previous)
