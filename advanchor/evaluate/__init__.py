"""Generation, judges, metrics and attacks for edited models; `evaluate(...)` is the entry point."""

from .attack import AttackOptions
from .run import EvalOptions, evaluate

__all__ = ["AttackOptions", "EvalOptions", "evaluate"]
