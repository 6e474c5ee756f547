"""The notebooks in notebooks/ run top to bottom on the toy model, warn about nothing, write nothing outside
their temporary folders, and are committed without outputs."""

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from traitlets import default

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = ("quickstart.ipynb", "anchors.ipynb", "methods.ipynb")
CELL_TIMEOUT_S = 600
WARNING = re.compile(r"\b\w*Warning\b")  # how Python's warnings module prints one: "...: UserWarning: ..."


class ThisInterpreter(KernelManager):
    """Finds no kernel folder, so that jupyter_client falls back to ipykernel's built-in python3 spec: this
    interpreter (sys.executable). A python3 kernelspec elsewhere (~/.local, a system Jupyter) can never run the
    notebooks with another environment's packages."""

    @default("kernel_spec_manager")
    def _no_kernel_folders(self) -> KernelSpecManager:
        return KernelSpecManager(kernel_dirs=[])


def test_the_kernel_is_this_interpreter():
    assert ThisInterpreter(kernel_name="python3").kernel_spec.argv[0] == sys.executable


def test_every_notebook_is_tested():
    assert sorted(p.name for p in FOLDER.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    notebook = nbformat.read(FOLDER / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runs_top_to_bottom(name, tmp_path):
    notebook = nbformat.read(FOLDER / name, as_version=4)
    before = sorted(FOLDER.rglob("*"))
    # The notebooks' temporary folders go under tmp_path; the concept-image cache of a run that was not given
    # one would go to the default cache, which must stay untouched.
    default_cache = tmp_path / "default-cache"
    env = {**os.environ, "TMPDIR": str(tmp_path), "ADVANCHOR_CACHE": str(default_cache)}
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        kernel_manager_class=ThisInterpreter,  # the client owns it: the kernel is shut down after the notebook
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(FOLDER)}},  # run where Jupyter would: beside the notebook
    )
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, on any error

    streams = [out.text for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs if "text" in out]
    warned = [line for text in streams for line in text.splitlines() if WARNING.search(line)]
    assert not warned, f"{name} warns: {warned}"
    assert sorted(FOLDER.rglob("*")) == before, f"{name} wrote into notebooks/"
    assert not default_cache.exists(), f"{name} cached concept images outside its temporary folder"
