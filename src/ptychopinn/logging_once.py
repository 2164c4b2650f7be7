"""Say a thing once per call: a log filter scoped to one `train` run.

A training run builds the scan's physics prior twice: for the training data, and
again for the reconstruction of the training scan after training. Both log the
same decisions about the same scan (the low-dose warning, the whole-scan passes),
so without this a user reads every such line twice. `each_message_once` drops a
record whose level and text a named logger has already passed during the block;
a message that differs (a prior that ran other passes at inference) still shows.
The filter lives only for the block and is removed after it, on error too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _SeenFilter(logging.Filter):
    """Passes a record the first time its (level, message) is seen."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


@contextmanager
def each_message_once(*logger_names: str) -> Iterator[None]:
    """While the block runs, each of the named loggers passes a given (level, message)
    once; the filter is shared, so a message one of them passed is dropped from the
    others too."""
    seen = _SeenFilter()
    loggers = [logging.getLogger(name) for name in logger_names]
    for lg in loggers:
        lg.addFilter(seen)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(seen)
