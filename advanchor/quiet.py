"""Library messages that a user of advanchor cannot act on, silenced on purpose, each with its reason."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _Drop(logging.Filter):
    """Drops a logger's records whose message contains `fragment`."""

    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def silence_import_notices() -> None:
    """Before diffusers and transformers are imported (advanchor/__init__.py)."""
    # transformers says at import that its image processors fall back to PIL without torchvision. advanchor
    # uses no image processor, and torchvision stays out of its installs: it does not import beside the
    # CPU torch build.
    logging.getLogger("transformers.utils.import_utils").addFilter(_Drop("requires torchvision (not installed)"))
    # Lightning advertises its LitLogger product whenever a Trainer is made: nothing about the run.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_Drop("Tip: For seamless cloud logging"))


@contextmanager
def dropped(logger: str, fragment: str) -> Iterator[None]:
    """While active, `logger`'s records that contain `fragment` are dropped."""
    drop = _Drop(fragment)
    logging.getLogger(logger).addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger(logger).removeFilter(drop)
