"""benchmarks/tune.py: the grid it expands and its one-line error for a malformed grid."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny import load_benchmark  # noqa: E402


def test_grid_cells_and_names():
    tune = load_benchmark("tune")
    cells = tune.cells(["model.lr=1e-4,1e-3", "model.mask=rbm"])
    assert cells == [{"model.lr": "1e-4", "model.mask": "rbm"}, {"model.lr": "1e-3", "model.mask": "rbm"}]
    assert tune.cell_name(cells[0]) == "lr=1e-4_mask=rbm"
    assert tune.cells(["model.preserve=[a,b],[c]"]) == [{"model.preserve": "[a,b]"}, {"model.preserve": "[c]"}]
    with pytest.raises(SystemExit, match="--grid 'model.lr' is not key=v1,v2"):
        tune.cells(["model.lr"])
