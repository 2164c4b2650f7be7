"""Load any supported ptychography file as a `Scan` (format dispatch).

Formats: ``npz`` (our contract, `ptychopinn.data.npz.load_npz`; also ``.npz.bz2``),
``tike`` (``.npz``/``.npz.bz2`` holding ``data``/``scan``/``probe``) and ``cxi``
(``.cxi``/``.h5``/``.hdf5``). With ``fmt=None`` the format is detected from the
content (magic bytes: HDF5 -> cxi; zip or bz2 -> NPZ, whatever the suffix, with a
log line where the suffix says otherwise), then the extension; the NPZ keys decide
contract vs tike (``data`` + ``scan`` without ``diffraction``/``diff3d``/``intensity``).
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ptychopinn.data.centring import centring_warning, scan_centring
from ptychopinn.data.readers.cxi import check_patch_size, load_cxi, load_probe
from ptychopinn.data.readers.tike import load_tike_npz, read_npz_arrays, read_npz_bytes
from ptychopinn.data.scan import AMPLITUDE_UNITS, Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

SUPPORTED_FORMATS: tuple[str, ...] = ("npz", "tike", "cxi")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CONTRACT_KEYS = ("diffraction", "diff3d", "intensity")
_TIKE_SIGNATURE = ("data", "scan")
"""Keys that make an NPZ a tike archive (with none of `_CONTRACT_KEYS`); a missing
``probe`` is then reported by the tike reader."""
_HDF5_SUFFIXES = (".cxi", ".h5", ".hdf5")

__all__ = [
    "SUPPORTED_FORMATS",
    "detect_format",
    "load_cxi",
    "load_scan",
    "load_tike_npz",
    "read_npz_arrays",
]


def _npz_keys(path: Path, raw: io.BytesIO | None) -> list[str]:
    try:
        if raw is not None:
            raw.seek(0)
        with zipfile.ZipFile(path if raw is None else raw) as zf:
            return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist()]
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: not a readable NPZ archive ({exc}); truncated, corrupt or another format."
        ) from exc


def _not_a_folder(p: Path) -> None:
    if p.is_dir():
        raise DataError(
            f"{p}: is a folder; expected a data file ({', '.join(SUPPORTED_FORMATS)}: .npz, "
            ".npz.bz2, .cxi, .h5, .hdf5)."
        )


def _detect(p: Path) -> tuple[str, io.BytesIO | None]:
    """The format and, for NPZ archives, their (decompressed) bytes."""
    if not p.exists():
        raise DataError(f"{p}: file not found.")
    _not_a_folder(p)
    with open(p, "rb") as fh:
        head = fh.read(8)
    suffix = p.suffix.lower()
    is_hdf5, is_npz = head.startswith(_HDF5_MAGIC), head.startswith((b"BZh", b"PK"))
    if is_hdf5 and suffix in (".npz", ".bz2"):
        log.info("%s: an HDF5 file despite its suffix %r; read as CXI.", p, suffix)
    if is_npz and suffix in _HDF5_SUFFIXES:
        log.info("%s: a %s archive despite its suffix %r; read as NPZ.", p,
                 "bz2-compressed (.npz.bz2)" if head.startswith(b"BZh") else "zip (NPZ)", suffix)
    if is_hdf5 or (not is_npz and suffix in _HDF5_SUFFIXES):
        return "cxi", None
    if is_npz or suffix in (".bz2", ".npz"):
        raw = read_npz_bytes(p) if head.startswith(b"BZh") else None
        keys = _npz_keys(p, raw)
        if all(k in keys for k in _TIKE_SIGNATURE) and not any(k in keys for k in _CONTRACT_KEYS):
            return "tike", raw
        return "npz", raw
    raise DataError(
        f"{p}: unknown file format (suffix {suffix!r}); supported formats are "
        f"{', '.join(SUPPORTED_FORMATS)} (.npz, .npz.bz2, .cxi, .h5, .hdf5)."
    )


def detect_format(path: str | os.PathLike) -> str:
    """The format of ``path``: one of `SUPPORTED_FORMATS` (from extension and content)."""
    return _detect(Path(path))[0]


def _load_contract(path: Path, amplitude_units: str | None, raw: io.BytesIO | None) -> Scan:
    from ptychopinn.data.npz import load_npz

    with open(path, "rb") as fh:
        compressed = fh.read(3) == b"BZh"
    if not compressed:
        return load_npz(path, amplitude_units=amplitude_units, check_centring=False)
    raw = read_npz_bytes(path) if raw is None else raw
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / (path.stem if path.suffix.lower() == ".bz2" else path.name)
        plain.write_bytes(raw.getvalue())
        try:  # messages and warnings name the file given, not the temporary copy
            return load_npz(plain, amplitude_units=amplitude_units, check_centring=False,
                            source=str(path))
        except DataError as exc:
            raise DataError(str(exc).replace(str(plain), str(path))) from exc


def load_scan(
    path: str | os.PathLike,
    *,
    fmt: str | None = None,
    amplitude_units: str | None = None,
    probe: np.ndarray | str | None = None,
    patch_size: int | None = None,
    check_centring: bool = True,
) -> Scan:
    """Load a scan from any supported file.

    Parameters
    ----------
    path
        The data file.
    fmt
        One of `SUPPORTED_FORMATS`, or None to detect it.
    amplitude_units
        Override the amplitude units ("sqrt_counts" or "arbitrary").
    probe
        A complex probe (array or ``.npz``/``.npy`` file) replacing the file's
        (or the estimated one, for CXI).
    patch_size
        CXI: centre-crop frames to this size. Other formats: must equal N.
    check_centring
        Log `ptychopinn.data.centring`'s warning when the patterns (as read, in any
        format) are not centred; ``ptychopinn inspect`` prints it in its summary instead.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"load_scan(path): path must be a file name (str or os.PathLike); found "
            f"{type(path).__name__}."
        )
    p = Path(path)
    _not_a_folder(p)
    if fmt is not None and not isinstance(fmt, str):
        raise DataError(
            f"{p}: fmt must be one of {', '.join(SUPPORTED_FORMATS)} (a string) or None to "
            f"detect the format; found {fmt!r} ({type(fmt).__name__})."
        )
    patch_size = check_patch_size(patch_size, str(p))
    raw = None
    if fmt is None:
        fmt, raw = _detect(p)
    fmt = fmt.lower()
    if fmt not in SUPPORTED_FORMATS:
        raise DataError(
            f"{p}: unknown format {fmt!r}; supported formats are {', '.join(SUPPORTED_FORMATS)}."
        )
    if amplitude_units is not None and amplitude_units not in AMPLITUDE_UNITS:
        raise DataError(
            f"{p}: amplitude_units must be one of {AMPLITUDE_UNITS}; found {amplitude_units!r}."
        )
    if fmt == "cxi":
        scan = load_cxi(p, probe=probe, patch_size=patch_size)
    else:
        if fmt == "tike":
            scan = load_tike_npz(p, raw=raw)
        else:
            scan = _load_contract(p, amplitude_units, raw)
        if patch_size is not None and patch_size != scan.patch_size:
            raise DataError(
                f"{p}: patch_size={patch_size} differs from the file's N={scan.patch_size}; "
                f"only CXI frames can be cropped on reading."
            )
        if probe is not None:
            scan = scan.replace(probe=load_probe(probe, scan.patch_size, str(p)))
            log.info("%s: probe replaced by the one given.", p)
    if amplitude_units is not None and scan.amplitude_units != amplitude_units:
        scan = scan.replace(amplitude_units=amplitude_units)
    log.info("%s: loaded %d pattern%s of %dx%d (%s).", p, scan.n_patterns,
             "" if scan.n_patterns == 1 else "s", scan.patch_size, scan.patch_size, fmt)
    if check_centring and (warning := centring_warning(scan_centring(scan), str(p))):
        log.warning("%s", warning)
    return scan
