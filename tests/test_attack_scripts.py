"""benchmarks/attack_control.py's option overrides and benchmarks/attack_signal.py's scoring."""

import sys
from math import comb
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from tiny import load_benchmark  # noqa: E402


def test_control_overrides_are_typed_attack_options():
    control = load_benchmark("attack_control")
    assert control.overrides(["schedule=low", "timestep_blocks=8", "lr=0.1"]) == {
        "schedule": "low",
        "timestep_blocks": 8,
        "lr": 0.1,
    }
    for bad in ("foo=1", "inversion=1", "method=soft"):
        with pytest.raises(SystemExit, match=f"--set {bad}: not an attack option"):
            control.overrides([bad])


def test_signal_auc_counts_lower_loss_as_success():
    signal = load_benchmark("attack_signal")
    assert signal.auc([0.1, 0.5, 0.3], [True, False, False]) == 1.0
    assert signal.auc([0.6, 0.5, 0.3], [True, False, False]) == 0.0
    assert signal.auc([0.3, 0.3], [True, False]) == 0.5
    assert signal.auc([0.1, 0.2], [True, True]) is None  # no draw failed: nothing to rank


def test_signal_summary_finds_the_informative_span():
    signal = load_benchmark("attack_signal")
    gen = torch.Generator().manual_seed(0)
    units = []
    for _ in range(3):
        back = [d < 2 for d in range(8)]  # 2 of 8 draws bring the concept back
        losses = torch.rand(8, 25, generator=gen)
        # Only the first fifth of sampling (the last 5 steps in timestep order) tells them apart.
        losses[:, 20:] = torch.tensor([0.0 if b else 1.0 for b in back])[:, None]
        units.append({"timesteps": list(range(0, 1000, 40)), "losses": losses.tolist(), "back": back})
    s = signal.summary(units, rounds=1)
    spans = {r["schedule"]: r for r in s["spans"]}
    assert spans["early"]["steps"] == "20-24" and spans["early"]["auc"] == 1.0
    assert spans["early"]["best"] == 3  # the lowest-loss draw brings every unit back
    assert spans["early"]["chance"] == pytest.approx(3 * (1 - comb(6, 1) / comb(8, 1)))
    assert spans["low"]["steps"] == "0-11" and spans["low"]["auc"] < 1.0
    assert [r["auc"] for r in s["per_step"][20:]] == [1.0] * 5
