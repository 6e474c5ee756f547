"""What the benchmark runs: the methods, the concepts, and each (method, concept) cell's config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..methods import METHODS
from ..toyworld.vocab import COLORS, SHAPES, STYLES, concept_kind

GROUPS = {"shapes": SHAPES, "styles": STYLES, "textures": STYLES, "colors": COLORS}
QUICK = ("circle", "striped")
# The style config of a method, used for every texture when it exists (the paper tunes per kind).
STYLE_SUFFIX = "-style"


def default_configs() -> Path:
    """configs/toy of the source tree this package runs from."""
    return Path(__file__).resolve().parents[2] / "configs" / "toy"


def parse_methods(spec: str | None) -> list[str]:
    """Comma-separated method names; None or "all" is every registered method."""
    if spec in (None, "all"):
        return sorted(METHODS)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method {(unknown or [spec])[0]!r}; use all or some of: {', '.join(sorted(METHODS))}")
    return list(dict.fromkeys(names))


def parse_concepts(spec: str | None) -> list[str]:
    """Comma-separated toy concepts or groups (shapes, styles/textures, colors); None is shapes + styles."""
    if spec is None:
        return list(SHAPES + STYLES)
    out: list[str] = []
    for word in (w.strip() for w in spec.split(",")):
        if word in GROUPS:
            out += GROUPS[word]
        elif word in SHAPES + STYLES + COLORS:
            out.append(word)
        else:
            known = ", ".join((*GROUPS, *SHAPES, *STYLES, *COLORS))
            raise ValueError(f"unknown concept {word!r}; use names or groups from: {known}")
    return list(dict.fromkeys(out))


def config_path(configs: Path, method: str, concept: str) -> Path:
    """<configs>/<method>-style.yaml for a texture when it exists, else <configs>/<method>.yaml."""
    if concept_kind(concept) == "style" and (configs / f"{method}{STYLE_SUFFIX}.yaml").is_file():
        return configs / f"{method}{STYLE_SUFFIX}.yaml"
    path = configs / f"{method}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no toy config for method {method!r}: {path} is missing; pass --configs DIR")
    return path


@dataclass(frozen=True)
class Cell:
    method: str
    concept: str
    train_seed: int

    def folder(self, out: Path) -> Path:
        return out / "cells" / self.method / self.concept / f"seed{self.train_seed}"
