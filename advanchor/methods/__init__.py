"""Erasure methods behind one interface (`ErasureMethod`), registered by name."""

from .ac import AblatingConcepts
from .advanchor import AdvAnchor, PromptOptions, Unlearner
from .base import METHODS, ErasureMethod
from .conceptprune import ConceptPrune
from .esd import ESD
from .fmn import ForgetMeNot
from .ft import FineTune
from .uce import UCE


def method_class(name: str) -> type[ErasureMethod]:
    """The method registered as `name`, or a one-line error listing the registered ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


__all__ = [
    "ESD",
    "METHODS",
    "AblatingConcepts",
    "AdvAnchor",
    "ConceptPrune",
    "ErasureMethod",
    "FineTune",
    "ForgetMeNot",
    "PromptOptions",
    "UCE",
    "Unlearner",
    "method_class",
]
