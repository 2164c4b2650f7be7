"""A training stopped by a signal: `TrainingInterrupted` (SIGINT, or a batch scheduler's
SIGTERM), what it says, and SIGTERM handling for a loop without Lightning."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """A training stopped by a signal before it ended: SIGINT (Ctrl-C) or SIGTERM (a
    batch scheduler's stop). No model bundle was written; the run's last checkpoint (its
    last finished epoch) continues it with ``--resume``. A `KeyboardInterrupt`, so code
    that handles Ctrl-C handles both; ``exit_status`` is the shell's for the signal
    (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_status = 128 + self.signum


def interrupted_message(signum: int, checkpoint: Path, epochs_done: int | None) -> str:
    """What `TrainingInterrupted` says: the signal, and how to continue."""
    name = signal.Signals(signum).name
    if epochs_done is None:
        return (f"training interrupted ({name}) before its first epoch ended: no checkpoint "
                "and no model bundle were written; start it again (without --resume).")
    return (f"training interrupted ({name}): no model bundle was written; its checkpoint "
            f"{checkpoint} holds {epochs_done} finished epoch{'s' * (epochs_done != 1)}: "
            "continue with --resume (the same options).")


def _stopping_signal(exc: SystemExit) -> int | None:
    """The signal that made Lightning's fit end in ``exc``: it raises `SIGTERMException`
    (a SystemExit without a code) at a batch's end after a SIGTERM, and turns a
    KeyboardInterrupt (SIGINT) into ``sys.exit(1)``; None for any other exit."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if isinstance(exc, SIGTERMException):
        return signal.SIGTERM
    if isinstance(exc.__context__, KeyboardInterrupt):  # a TrainingInterrupted keeps its own
        return getattr(exc.__context__, "signum", signal.SIGINT)
    return None


def _raise_on_sigterm(signum: int, frame) -> None:  # noqa: ANN001
    raise TrainingInterrupted(signum, "training interrupted (SIGTERM)")


@contextlib.contextmanager
def sigterm_interrupts():
    """While a training loop without Lightning runs (the TensorFlow backend): SIGTERM
    raises `TrainingInterrupted` as SIGINT raises KeyboardInterrupt, instead of ending
    the process with no word (only where signals can be handled: the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
