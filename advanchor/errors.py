"""Bad input at the command line: one line on stderr that names the value and the fix, exit status 1.

Every command runs its checks before any expensive work and reports what they raise through `reported`;
`--debug` (or ADVANCHOR_DEBUG=1) shows the whole traceback instead.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# What the checks raise. OSError covers a path that cannot be read or written (FileNotFoundError,
# NotADirectoryError, PermissionError); ImportError an optional dependency the chosen setting needs.
INPUT_ERRORS = (ValueError, OSError, ImportError)
DEBUG_FLAG = "--debug"


def take_debug(argv: list[str]) -> tuple[list[str], bool]:
    """`argv` without `--debug`, and whether it (or ADVANCHOR_DEBUG=1) asked for tracebacks."""
    rest = [a for a in argv if a != DEBUG_FLAG]
    return rest, len(rest) < len(argv) or os.environ.get("ADVANCHOR_DEBUG") == "1"


def one_line(err: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


@contextmanager
def reported(debug: bool = False, errors: tuple[type[BaseException], ...] = INPUT_ERRORS) -> Iterator[None]:
    """Turn one of `errors` raised inside into `error: <message>` and exit 1; re-raise it with `debug`."""
    try:
        yield
    except errors as err:
        if debug:
            raise
        sys.exit(f"error: {one_line(err)}")


def suggestion(word: str, choices: list[str]) -> str:
    """ "; did you mean X?" for the closest of `choices`, or nothing."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def argument_message(message: str, options: list[str]) -> str:
    """jsonargparse's parse error on one line: the unknown option with the closest known one, or the
    innermost reason of a nested (dataclass) value's failure."""
    unknown = re.match(r"unrecognized arguments: (\S+)", message)
    if unknown:
        flag = unknown.group(1).split("=", 1)[0]
        return f"unknown option {flag}{suggestion(flag, options)} (--help lists the options)"
    key = re.match(r'Parser key "([^"]+)"', message)
    reasons = [
        line.strip(" -")
        for line in message.splitlines()[1:]
        if line.strip() and "NoneType" not in line and not re.match(r"\s*(Problem with|Subtypes|Errors|Given)", line)
    ]
    reasons = [r for r in reasons if not r.startswith("Does not validate")] or reasons
    reason = " ".join((reasons[-1] if reasons else message).split())
    return f"{key.group(1)}: {reason}" if key else reason


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage block) and `--debug`, for advanchor's commands."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of an error")

    def error(self, message: str):
        sys.exit(f"error: {message} (--help lists the options)")


def check_writable(path: str | os.PathLike, option: str) -> None:
    """Raise if `path` could not be created and written, without creating anything: its nearest existing
    ancestor must be a writable directory."""
    target = os.path.abspath(path)
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"{option} {path} cannot be written: {existing} is a file; choose another {option}")
    if not os.access(existing, os.W_OK):
        raise PermissionError(f"{option} {path} cannot be written: {existing} is read-only; choose another {option}")
