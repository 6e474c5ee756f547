"""The method interface: the registry, choosing a method in Python and on the command line."""

import pytest

import advanchor
from advanchor.cli import main, selected_method
from advanchor.methods import METHODS, AdvAnchor, ErasureMethod, Unlearner, method_class


def test_registry_names_the_methods():
    assert method_class("advanchor") is AdvAnchor is Unlearner
    assert METHODS["advanchor"].paper.startswith("Zhao et al. 2024")
    with pytest.raises(ValueError, match=r"unknown method 'esdx'; available: .*advanchor"):
        method_class("esdx")


def test_a_taken_name_fails_at_definition():
    with pytest.raises(TypeError, match="method name 'advanchor' is taken by AdvAnchor"):

        class Again(ErasureMethod):
            name = "advanchor"

    assert METHODS["advanchor"] is AdvAnchor


def test_erase_rejects_unknown_methods_and_options():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        advanchor.erase("toy", "circle", method="nope")
    with pytest.raises(ValueError, match=r"takes no option 'eta'; its options: .*preservation_weight"):
        advanchor.erase("toy", "circle", eta=1.0)


def test_method_comes_from_the_flag_then_the_configs(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("method: one\nmodel:\n  lr: 1.0\n")
    second.write_text("model:\n  lr: 2.0\n")
    assert selected_method([], []) == "advanchor"
    assert selected_method([], [str(first), str(second)]) == "one"
    assert selected_method(["--method=two"], [str(first)]) == "two"
    assert selected_method(["--method", "three"], [str(first)]) == "three"
    with pytest.raises(FileNotFoundError, match="config file .*missing.yaml does not exist"):
        selected_method([], [str(tmp_path / "missing.yaml")])


def test_unknown_method_on_the_command_line_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--method=nope", "--print_config"])
    assert str(exit_info.value) == "error: unknown method 'nope'; available: advanchor"
