"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file the package writes (model bundles, NPZ scans and reconstructions,
configs, metrics and history JSON, figures) goes through `atomic_open`: the
content goes to a uniquely named temporary file in the target's folder, is
flushed to disk, and replaces the target with one rename. If writing fails
(an exception, Ctrl-C) the temporary file is removed and an existing target is
left as it was. The file gets the permissions of any new file (``0o666`` less
the umask), not the owner-only ones of `tempfile.mkstemp`, so a bundle written
on a shared beamline disk is readable by the group as usual.

A path that cannot be used (a folder where a file is to be written, a file where a
folder is needed) is an `OutputPathError` naming it, raised before anything is
written: `check_output_file` and `ensure_dir` let a command check its outputs before
its work.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ptychopinn.errors import OutputPathError


def _file_in_the_way(p: Path) -> Path | None:
    """The nearest of ``p`` and its parents that exists, if it is not a folder."""
    for q in (p, *p.parents):
        if q.exists():
            return None if q.is_dir() else q
    return None


def check_output_file(
    path: str | os.PathLike, what: str = "output file", example: str | None = None
) -> Path:
    """``path`` as a `Path` if a file can be written there (its folder existing or not);
    `OutputPathError` naming ``what`` (e.g. ``"simulate OUTPUT"``) if it is a folder or
    a file stands where one of its folders would be. ``example``: a file name the
    message suggests inside the folder."""
    p = Path(path)
    if p.is_dir():
        hint = "" if example is None else f" (e.g. {p / example})"
        raise OutputPathError(
            f"{what} {p}: is a folder; expected the path of a file to write{hint}."
        )
    blocker = _file_in_the_way(p.parent)
    if blocker is not None:
        raise OutputPathError(
            f"{what} {p}: {blocker} is a file, not a folder; expected a path whose folders "
            "are folders (or do not exist yet)."
        )
    return p


def ensure_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create the folder ``path`` and its parents (an existing folder is fine); returns it.
    `OutputPathError` naming ``what`` (e.g. ``"--output-dir"``) if ``path`` or one of its
    parents is a file."""
    p = check_output_dir(path, what)
    p.mkdir(parents=True, exist_ok=True)
    return p


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """`ensure_dir` without creating anything: ``path`` as a `Path` if it is a folder or
    can be created as one, else `OutputPathError` naming ``what``."""
    p = Path(path)
    blocker = _file_in_the_way(p)
    if blocker == p:
        raise OutputPathError(
            f"{what} {p}: is an existing file, not a folder; expected a folder to write into "
            "(new or existing)."
        )
    if blocker is not None:
        raise OutputPathError(
            f"{what} {p}: {blocker} is a file, not a folder; expected a folder to write into "
            "(new or existing)."
        )
    return p


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path`` for writing (``"wb"``, or ``"w"``: UTF-8, newlines written as
    given) through a temporary file that replaces it when the ``with`` block ends
    without an error."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w'; found {mode!r}")
    p = check_output_file(path)
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
