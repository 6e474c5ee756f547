"""Erasure methods behind one interface (`ErasureMethod`), registered by name."""

from .advanchor import AdvAnchor, PromptOptions, Unlearner
from .base import METHODS, ErasureMethod


def method_class(name: str) -> type[ErasureMethod]:
    """The method registered as `name`, or a one-line error listing the registered ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = ["METHODS", "AdvAnchor", "ErasureMethod", "PromptOptions", "Unlearner", "method_class"]
