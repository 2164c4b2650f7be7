"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file the package writes (model bundles, NPZ scans and reconstructions,
configs, metrics and history JSON, figures) goes through `atomic_open`: the
content goes to a uniquely named temporary file in the target's folder, is
flushed to disk, and replaces the target with one rename. If writing fails
(an exception, Ctrl-C) the temporary file is removed and an existing target is
left as it was. The file gets the permissions of any new file (``0o666`` less
the umask), not the owner-only ones of `tempfile.mkstemp`, so a bundle written
on a shared beamline disk is readable by the group as usual.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` for writing (``"wb"``, or ``"w"``: UTF-8, newlines written as
    given) through a temporary file that replaces it when the ``with`` block ends
    without an error."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w'; found {mode!r}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        kw = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
        with os.fdopen(fd, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)
