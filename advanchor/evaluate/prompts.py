"""Prompt sets in the I2P CSV format: `prompt, evaluation_seed, case_number` (+ optional guidance)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("prompt", "evaluation_seed", "case_number")


@dataclass(frozen=True)
class PromptCase:
    """One row: the prompt, the seed to generate it with, its id, and its guidance scale if the CSV has one."""

    prompt: str
    seed: int
    case: int
    guidance: float | None = None


def load_prompt_csv(path: str | Path) -> list[PromptCase]:
    """Read an I2P-format CSV; a clear error names a missing file, a missing column or a bad row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt CSV {path} does not exist; pass a CSV with columns {', '.join(REQUIRED)}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"prompt CSV {path} lacks column(s) {', '.join(missing)}; the I2P format needs {REQUIRED}")
        cases = []
        for line, row in enumerate(reader, start=2):
            try:
                guidance = row.get("evaluation_guidance") or None
                cases.append(
                    PromptCase(
                        row["prompt"],
                        int(float(row["evaluation_seed"])),
                        int(float(row["case_number"])),
                        float(guidance) if guidance is not None else None,
                    )
                )
            except ValueError as err:
                raise ValueError(
                    f"prompt CSV {path} line {line}: {err}; seeds and case numbers must be integers"
                ) from err
    if not cases:
        raise ValueError(f"prompt CSV {path} has no rows")
    return cases
