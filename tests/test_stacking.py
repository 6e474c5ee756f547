"""benchmarks/stacking.py end to end at tiny settings, and the several-concept scores it reports."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import load_benchmark  # noqa: E402

from advanchor.evaluate.toy import split_probes, stack_scores  # noqa: E402
from advanchor.toyworld.quality import probes  # noqa: E402

TINY = [
    "--train-seeds=0",
    "--seeds=1",
    "--eval-steps=2",
    "--set=trainer.max_steps=2",
    "--set=data.generation.images_per_concept=2",
    "--set=data.generation.steps=2",
]


def perfect_readings(shows: set[str]) -> dict[str, list[dict]]:
    """Every prompt's image shows what it asks for, except that the concepts in `shows` are never drawn."""
    readings = {}
    for probe in probes():
        pred = {"shape": "none", "color": "none", "style": "none", **probe.expect}
        readings[probe.prompt] = [{k: ("none" if v in shows else v) for k, v in pred.items()}]
    return readings


def test_stack_scores_read_each_concept_and_only_prompts_naming_none():
    scores = stack_scores(["circle", "striped"], perfect_readings({"circle"}))
    assert scores["erased_accuracy"]["circle"] == 0.0
    assert scores["erased_accuracy"]["striped"] == 1.0
    assert scores["retained_accuracy"] == 1.0
    kept = [p for p in split_probes("circle")[2] if p in split_probes("striped")[2]]
    assert scores["retained_prompts"] == len(kept) > 0
    assert not any({"circle", "striped"} & set(p.concept) for p in kept)


def test_stacking_script_runs_and_resumes(tmp_path, monkeypatch):
    stacking = load_benchmark("stacking")
    results = stacking.main(["--out", str(tmp_path), *TINY])
    models = {(r["set"], r["model"]) for r in results}
    for name, members in stacking.SETS.items():
        expected = {"original", "stacked", "multi", *(f"{c} alone" for c in members)}
        assert {m for s, m in models if s == name} == expected
    assert json.loads((tmp_path / "stacking.json").read_text()) == results
    table = (tmp_path / "stacking.md").read_text()
    assert "| circle+square+triangle | stacked | circle " in table
    # A second run trains and generates nothing: every run folder and reading is kept.
    for name in ("train", "probe_image_map"):
        monkeypatch.setattr(stacking, name, lambda *a, **k: pytest.fail("ran again"))
    assert stacking.main(["--out", str(tmp_path), *TINY]) == results
