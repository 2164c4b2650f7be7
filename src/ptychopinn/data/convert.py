"""Convert any supported ptychography file into the NPZ data contract."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ptychopinn.data.npz import save_npz
from ptychopinn.data.readers import load_scan
from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same resolved path (``b`` need not exist
    yet: ``nodir/../in.npz`` is ``in.npz``), or a hard or symbolic link to it."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def convert(
    src_path: str | os.PathLike,
    dst_path: str | os.PathLike,
    *,
    fmt: str | None = None,
    **reader_kw: object,
) -> Scan:
    """Read ``src_path`` (see `load_scan`) and write it as a contract NPZ.

    Parameters
    ----------
    src_path
        Any supported file (npz, tike, cxi).
    dst_path
        The NPZ to write (atomically); must differ from ``src_path``.
    fmt
        Source format, or None to detect it.
    **reader_kw
        Passed to `load_scan` (``amplitude_units``, ``probe``, ``patch_size``).

    Returns
    -------
    The scan that was written.
    """
    src, dst = Path(src_path), Path(dst_path)
    if _same_file(src, dst):
        raise DataError(
            f"{dst}: the output must differ from the input; found the input file {src} "
            f"itself ({src.resolve()}). Give another output path."
        )
    scan = load_scan(src, fmt=fmt, **reader_kw)  # type: ignore[arg-type]
    save_npz(scan, dst)
    log.info("%s -> %s: %d patterns of %dx%d written.", src, dst, scan.n_patterns,
             scan.patch_size, scan.patch_size)
    return scan
