"""Every command in README.md is checked against the code: none can drift from what the code accepts.

- The two set-up commands: the test command is what `.ci/run` runs; the main command's `python train.py`
  is parsed like every other one below (and run whole by `.ci/run`).
- Every `python train.py ...` is parsed with `--print_config` (its flags, its config and method keys).
- Every `python -m advanchor.X ...` and `python benchmarks/X.py ...` runs until its argument parser has
  accepted the flags, and stops there: the long jobs (the benchmark, the toy world's build) are not run.
- Every `pip install` names an extra that pyproject.toml has, or is one of `.ci/run`'s installs.
- The console examples (`$ command` and its output) are run, and print what README says they print.
- Every Python block is run (on run folders made here), or is a cell of a notebook the tests execute.
Commands marked `# GPU only` are parsed as the others, never run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# Words README uses for "your own value": parsing needs a value of the right kind, not a real path.
PLACEHOLDERS = {"<run>": "run", "--method NAME": "--method esd", "--out DIR": "--out outputs/x", " ...": ""}


def fenced(*languages: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", README, re.S) if m.group(1) in languages]


def commands() -> list[str]:
    """Every command line of README's bash blocks and inline code, continuation lines joined."""
    found = []
    for block in fenced("bash"):
        lines = block.replace("\\\n", " ").splitlines()
        found += [re.sub(r"\s+#\s.*$", "", line).strip() for line in lines if line.strip()]
    prose = re.sub(r"```.*?```", "", README, flags=re.S).replace("\n", " ")
    inline = [m.group(1) for m in re.finditer(r"`((?:python|pip) [^`]+)`", prose)]
    # A bare `python -m advanchor.evaluate` in a sentence names the command; it is not one to run.
    found += [c for c in inline if not re.fullmatch(r"python -m [\w.]+", c)]
    return list(dict.fromkeys(found))


def argv_of(command: str) -> list[str]:
    for word, value in PLACEHOLDERS.items():
        command = command.replace(word, value)
    return shlex.split(command, comments=True)


SETUP = [c for c in commands() if c.startswith("python -m venv")]
PYTHON = [c for c in commands() if c.startswith("python ") and c not in SETUP]
PIP = [c for c in commands() if c.startswith("pip ")]


def test_readme_shows_the_two_setup_commands_and_ci_runs_the_test_one():
    assert len(SETUP) == 2, SETUP
    main, tests = SETUP
    assert main.endswith("&& python train.py")
    ci = [line.replace(" --quiet", "") for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    steps = [s.strip() for s in tests.split("&&")][2:]  # after the venv's creation and activation
    assert steps[-1] == "pytest -q"
    for step in steps:
        assert step in ci, f"README's test command runs {step!r}, .ci/run does not"
    assert "python train.py" in ci


@pytest.mark.parametrize("command", PIP + [s for c in SETUP for s in c.split("&&") if "pip install" in s])
def test_pip_commands_name_real_extras(command):
    extras = importlib.metadata.metadata("advanchor").get_all("Provides-Extra")
    for extra in re.findall(r'"\.\[(\w+)\]"', command):
        assert extra in extras, f"README installs extra {extra!r}, pyproject.toml has {sorted(extras)}"
    ci = (ROOT / ".ci" / "run").read_text().replace(" --quiet", "")
    assert re.search(r'"\.\[\w+\]"|-e \.$', command.strip()) or command.strip() in ci


class Parsed(Exception):
    """Raised by the patched parser once it has accepted the arguments: the command stops there."""


@pytest.mark.parametrize("command", [c for c in PYTHON if not c.startswith("python train.py")])
def test_module_and_script_commands_parse(command, monkeypatch):
    argv = argv_of(command)[1:]
    real = argparse.ArgumentParser.parse_args

    def parse(self, args=None, namespace=None):
        real(self, args, namespace)  # a flag the command does not take exits here, and fails the test
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
    monkeypatch.chdir(ROOT)
    if argv[0] == "-m":
        # Run as a fresh __main__, as the shell would: a copy imported by another test would make runpy warn.
        for name in (argv[1], f"{argv[1]}.__main__"):
            monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.setattr(sys, "argv", [argv[1], *argv[2:]])
        with pytest.raises(Parsed):
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        script = ROOT / argv[0]
        assert script.is_file(), f"README runs {argv[0]}, which does not exist"
        monkeypatch.setattr(sys, "argv", [str(script), *argv[1:]])
        with pytest.raises(Parsed):
            runpy.run_path(str(script), run_name="__main__")


@pytest.mark.parametrize("command", [c for c in PYTHON if c.startswith("python train.py")])
def test_train_commands_parse_with_their_configs(command, capsys, monkeypatch):
    from advanchor.cli import main

    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as info:
        main([*argv_of(command)[2:], "--print_config"])
    assert info.value.code in (0, None), capsys.readouterr().err


def console_examples() -> list[tuple[str, str]]:
    """(command, the line README says it prints) of every `$ ` line in a console or plain block."""
    pairs = []
    for block in fenced("console", ""):
        lines = block.splitlines()
        pairs += [(line[2:], lines[i + 1]) for i, line in enumerate(lines) if line.startswith("$ ")]
    return pairs


@pytest.mark.parametrize(("command", "expected"), console_examples())
def test_console_examples_print_what_readme_shows(command, expected, tmp_path):
    env = {**os.environ, "ADVANCHOR_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == expected


def notebook_cells() -> list[str]:
    cells = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        cells += ["".join(c["source"]).strip() for c in notebook["cells"] if c["cell_type"] == "code"]
    return cells


def lora_run(folder: Path, seed: int) -> None:
    """A run folder whose lora/ holds a random adapter (`init_lora_weights=False`) for the toy model."""
    from advanchor.export import save_lora
    from advanchor.models import load_pipeline

    unet = load_pipeline("toy").unet
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, target_modules=r".*attn2\.to_v"))
    save_lora(unet, folder / "lora")


@pytest.mark.parametrize("block", [b.strip() for b in fenced("python")])
def test_python_blocks_run(block, tmp_path, monkeypatch):
    if block in notebook_cells():
        return  # tests/test_notebooks.py executes it in its notebook
    for index, name in enumerate(sorted(set(re.findall(r'"outputs/([\w-]+-run)[/"]', block)))):
        lora_run(tmp_path / "outputs" / name, seed=index)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_citation_file_cites_this_version_and_the_paper():
    import yaml

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["title"].startswith("advanchor")
    assert citation["authors"] and citation["message"]
    assert citation["version"] == importlib.metadata.version("advanchor")
    assert any("arXiv:2501.00054" in i["value"] for r in citation["references"] for i in r["identifiers"])
    assert "CITATION.cff" in README
