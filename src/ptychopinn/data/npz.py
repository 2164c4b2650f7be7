"""Read and write scans in the NPZ data contract (``docs/data_contract.md``).

Accepts files in the original PtychoPINN layout: ``diffraction`` (legacy key
``diff3d``) amplitudes, ``probeGuess`` (legacy ``probe``), ``xcoords``/``ycoords``,
optional ``objectGuess``, ``scan_index``, ``xcoords_start``/``ycoords_start``, and
a legacy ``(N, N, n)`` stack (transposed; refused when ``n == N`` and the file does
not declare ``format_version``). Photon counts may be given instead under
``intensity`` (never guessed from values: whole-number ``diffraction`` is read as
amplitudes, with a warning). Patterns whose zero order is not at the array centre
are loaded with a logged warning (`ptychopinn.data.centring`).
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from ptychopinn.atomic import atomic_open
from ptychopinn.data.centring import centring_warning, scan_centring
from ptychopinn.data.scan import AMPLITUDE_UNITS, MEASURED_POSITIONS_KEY, Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_META_KEYS = ("pixel_size_m", "photon_energy_ev", "detector_distance_m")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}
_WHOLE_CHUNK = 256
"""Patterns per step of the whole-number scan of `_warn_if_counts`."""


def _check_format_version(value: object, src: str) -> None:
    """`DataError` unless ``format_version`` is a whole number this version reads (1 to
    `FORMAT_VERSION`): a newer file's keys may mean what this reader does not know."""
    v = np.asarray(value)
    if v.ndim != 0 or not np.issubdtype(v.dtype, np.integer):
        raise DataError(f"{src}: 'format_version' must be a whole number (1); found "
                        f"{v.tolist()!r} ({v.dtype}).")
    if not 1 <= int(v) <= FORMAT_VERSION:
        newer = int(v) > FORMAT_VERSION
        raise DataError(
            f"{src}: 'format_version' is {int(v)}; this ptychopinn reads 1 to {FORMAT_VERSION}"
            + (" (the file was written by a newer version: upgrade ptychopinn)." if newer
               else ".")
        )


def _scalar(data: dict, key: str, path: str) -> float | None:
    if key not in data:
        return None
    arr = np.asarray(data[key])
    if arr.size != 1:
        raise DataError(f"{path}: '{key}' must be a scalar; found shape {arr.shape}.")
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{path}: '{key}' must be a number; found dtype {arr.dtype}.")
    return float(arr.reshape(()))


def _string(data: dict, key: str, path: str, what: str) -> str:
    """The single string stored under ``key`` (str or UTF-8 bytes)."""
    arr = np.asarray(data[key])
    if arr.size != 1 or arr.dtype.kind not in "US":
        raise DataError(
            f"{path}: '{key}' must be a single string ({what}); found {arr.size} element"
            f"{'' if arr.size == 1 else 's'}, shape {arr.shape} dtype {arr.dtype}."
        )
    value = arr.reshape(())[()]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: '{key}' must be UTF-8 text ({what}); found {exc}.") from exc
    return str(value)


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; expected an NPZ file.")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head.startswith(b"BZh"):
            advice = (
                "it is bz2-compressed: read it with ptychopinn.data.readers.load_scan (or "
                "ptychopinn.load_scan), which reads .npz.bz2 contract files and tike archives "
                "(so do the CLI commands), or decompress it first (bunzip2 -k)"
            )
        elif head.startswith(_HDF5_MAGIC):
            advice = (
                "it is an HDF5 (CXI) file: read it with ptychopinn.data.readers.load_scan, or "
                "convert it once with `ptychopinn convert`"
            )
        else:
            advice = "use `ptychopinn convert` for CXI or tike files"
        raise DataError(
            f"{path}: not an NPZ file (expected a zip archive written by numpy.savez); {advice}."
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(
                f"{path}: holds object (pickled) arrays, which are never loaded for safety; "
                "store plain numeric arrays."
            ) from exc
        raise DataError(f"{path}: unreadable NPZ ({exc}).") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: truncated or corrupt NPZ ({exc}).") from exc


def _diffraction_stack(arr: np.ndarray, key: str, path: str, n_pos: int | None,
                       declared: bool) -> np.ndarray:
    """The ``(n, N, N)`` stack under ``key``; a legacy ``(N, N, n)`` stack is transposed.

    ``declared``: the file holds ``format_version`` (its writer follows the contract,
    so an ``(N, N, N)`` stack is ``(n, N, N)``).
    """
    if arr.ndim != 3:
        raise DataError(f"{path}: '{key}' must be 3-D (n, N, N); found shape {arr.shape}.")
    if np.iscomplexobj(arr):
        raise DataError(f"{path}: '{key}' must be real; found dtype {arr.dtype}.")
    if arr.dtype.kind not in "iuf":
        raise DataError(
            f"{path}: '{key}' must be real numbers; found shape {arr.shape} dtype {arr.dtype}."
        )
    a, b, c = arr.shape
    if a == b == c and n_pos == c and not declared:
        raise DataError(
            f"{path}: '{key}' has shape {arr.shape} with {n_pos} positions, so its layout is "
            f"ambiguous: the contract's (n, N, N) or the legacy (N, N, n) (patterns on the last "
            f"axis). Store the stack as (n, N, N) (a legacy one as np.transpose(stack, (2, 0, 1)))"
            f" and add format_version=1 to the file (ptychopinn.data.save_npz writes it), which "
            f"declares the contract's layout."
        )
    if b != c and a == b and (n_pos is None or c == n_pos):
        log.warning(
            "%s: '%s' has the legacy (N, N, n) layout %s; transposing to (n, N, N).",
            path,
            key,
            arr.shape,
        )
        arr = np.transpose(arr, (2, 0, 1))
    return arr


def _check_counts(arr: np.ndarray, key: str, path: str) -> None:
    """``intensity``: finite, non-negative, not all zero (named as the file names it)."""
    if not np.isfinite(np.sum(arr, dtype=np.float64)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise DataError(f"{path}: '{key}' must be finite counts; found {bad} NaN/Inf values.")
    if np.min(arr) < 0:
        raise DataError(
            f"{path}: '{key}' must be non-negative counts; found minimum {np.min(arr):.4g}."
        )
    if not np.max(arr) > 0:
        raise DataError(
            f"{path}: '{key}' must hold some non-zero counts; found only zeros in all "
            f"{arr.shape[0]} patterns."
        )


def _whole_numbers(arr: np.ndarray) -> bool:
    """Whether every value is a whole number (float32 rounding allowed), some between 1
    and 2**23 (above it every float32 is whole: no evidence)."""
    small = False
    for s in range(0, arr.shape[0], _WHOLE_CHUNK):
        block = np.asarray(arr[s:s + _WHOLE_CHUNK], dtype=np.float64)
        if np.any(np.abs(block - np.round(block)) > 1e-4 + 1e-6 * np.abs(block)):
            return False
        small = small or bool(np.any((block > 1) & (block < 2**23)))
    return small


def _warn_if_counts(arr: np.ndarray, key: str, path: str) -> None:
    """Warn when amplitudes under ``key`` look like photon counts (never converted)."""
    integer = arr.dtype.kind in "iu"
    top = float(np.max(arr))
    if not integer and not (np.isfinite(top) and top > 1 and _whole_numbers(arr)):
        return
    what = f"integer dtype {arr.dtype}" if integer else "only whole numbers"
    log.warning(
        "%s: '%s' holds %s (up to %.6g): it looks like photon counts, but the data contract "
        "expects amplitudes, the square root of the counts. It is read as amplitudes as it is; "
        "if it holds counts, store np.sqrt(counts) under '%s', or store the counts under "
        "'intensity' instead (read as sqrt(intensity), amplitude_units 'sqrt_counts').",
        path, key, what, top, key,
    )


def _legacy_duplicate(data: dict, key: str, legacy: str, path: str) -> None:
    """Say which of two keys for the same array is used when both are present."""
    if key in data and legacy in data:
        if not np.array_equal(np.asarray(data[key]), np.asarray(data[legacy])):
            log.warning(
                "%s: holds both '%s' and its legacy name '%s' with different contents; '%s' is "
                "used and '%s' ignored.", path, key, legacy, key, legacy,
            )


def _start_positions(data: dict, n: int, path: str) -> dict[str, list[float]]:
    out = {}
    for k in ("xcoords_start", "ycoords_start"):
        if k not in data:
            continue
        v = np.asarray(data[k])
        if v.dtype.kind not in "iuf":
            raise DataError(
                f"{path}: '{k}' must be real numbers (nominal positions, object pixels); "
                f"found dtype {v.dtype}."
            )
        if v.ndim > 1 or v.size != n:
            raise DataError(
                f"{path}: '{k}' must be a 1-D array of {n} nominal positions (one per pattern); "
                f"found shape {v.shape}."
            )
        out[k] = v.astype(np.float64).reshape(-1).tolist()
    return out


def load_npz(path: str | os.PathLike, *, amplitude_units: str | None = None,
             check_centring: bool = True, source: str | None = None) -> Scan:
    """Load a scan from an NPZ file following the data contract.

    Parameters
    ----------
    path
        The NPZ file.
    amplitude_units
        Override the file's ``amplitude_units`` ("sqrt_counts" or "arbitrary").
    check_centring
        Log `ptychopinn.data.centring`'s warning when the patterns are not centred
        (`ptychopinn.data.readers.load_scan` checks every format itself).
    source
        The name that messages and ``Scan.source`` give the file (default: ``path``),
        e.g. the ``.npz.bz2`` a temporary ``path`` was decompressed from.
    """
    p = Path(path)
    data = _open_npz(p)
    src = str(p) if source is None else source
    xk = "xcoords" if "xcoords" in data else None
    yk = "ycoords" if "ycoords" in data else None
    if xk is None or yk is None:
        missing = [k for k in ("xcoords", "ycoords") if k not in data]
        raise DataError(
            f"{src}: missing key(s) {missing}; expected probe-centre coordinates "
            f"'xcoords' (column) and 'ycoords' (row) in object pixels. Keys found: {sorted(data)}."
        )
    x = np.asarray(data[xk]).reshape(-1) if np.asarray(data[xk]).ndim <= 1 else None
    y = np.asarray(data[yk]).reshape(-1) if np.asarray(data[yk]).ndim <= 1 else None
    if x is None or y is None:
        raise DataError(f"{src}: 'xcoords'/'ycoords' must be 1-D arrays.")
    if x.shape != y.shape:
        raise DataError(
            f"{src}: 'xcoords' and 'ycoords' must have the same length; found {x.size} and {y.size}."
        )
    for k, v in ((xk, x), (yk, y)):
        if not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
            raise DataError(f"{src}: '{k}' must be real numbers; found dtype {v.dtype}.")

    declared = "format_version" in data
    if declared:
        _check_format_version(data["format_version"], src)
    units = None
    amplitudes = None
    if "intensity" in data:
        if "diffraction" in data or "diff3d" in data:
            raise DataError(
                f"{src}: holds both 'intensity' and 'diffraction'; keep exactly one "
                "('intensity' = photon counts, 'diffraction' = amplitudes)."
            )
        inten = _diffraction_stack(np.asarray(data["intensity"]), "intensity", src, x.size,
                                   declared)
        _check_counts(inten, "intensity", src)
        diffraction = np.sqrt(inten.astype(np.float32))
        units = "sqrt_counts"
    else:
        key = "diffraction" if "diffraction" in data else ("diff3d" if "diff3d" in data else None)
        if key is None:
            raise DataError(
                f"{src}: missing key 'diffraction' (amplitudes; legacy 'diff3d') or 'intensity' "
                f"(photon counts). Keys found: {sorted(data)}."
            )
        _legacy_duplicate(data, "diffraction", "diff3d", src)
        diffraction = _diffraction_stack(np.asarray(data[key]), key, src, x.size, declared)
        amplitudes = (diffraction, key)

    if "probeGuess" not in data and "probe" not in data:
        raise DataError(
            f"{src}: missing key 'probeGuess' (complex (N, N) probe). Keys: {sorted(data)}."
        )
    _legacy_duplicate(data, "probeGuess", "probe", src)
    probe = np.asarray(data["probeGuess"] if "probeGuess" in data else data["probe"])
    obj = data.get("objectGuess")
    if units is None:
        if "amplitude_units" in data:
            units = _string(data, "amplitude_units", src, f"one of {AMPLITUDE_UNITS}")
            if units not in AMPLITUDE_UNITS:
                raise DataError(
                    f"{src}: 'amplitude_units' must be one of {AMPLITUDE_UNITS}; found {units!r}."
                )
        else:
            units = "sqrt_counts"
    if amplitude_units is not None:
        units = amplitude_units
    meta: dict = {}
    if "metadata_json" in data:
        text = _string(data, "metadata_json", src, "a JSON object")
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{src}: 'metadata_json' is not valid JSON ({exc}).") from exc
        if not isinstance(meta, dict):
            raise DataError(
                f"{src}: 'metadata_json' must be a JSON object ({{\"name\": value, ...}}); "
                f"found a JSON {_JSON_KINDS.get(type(meta), 'value')}: {text[:60]!r}."
            )
    meta.update(_start_positions(data, x.size, src))
    mask = data.get("bad_pixel_mask")
    scan = Scan(
        diffraction=diffraction,
        positions_px=np.stack([y, x], axis=1).astype(np.float64),
        probe=probe,
        object=obj,
        scan_index=data.get("scan_index"),
        bad_pixel_mask=mask,
        amplitude_units=units,
        pixel_size_m=_scalar(data, "pixel_size_m", src),
        photon_energy_ev=_scalar(data, "photon_energy_ev", src),
        detector_distance_m=_scalar(data, "detector_distance_m", src),
        source=src,
        metadata=meta,
    )
    if amplitudes is not None:
        _warn_if_counts(*amplitudes, src)
    if check_centring and (warning := centring_warning(scan_centring(scan), src)):
        log.warning("%s", warning)
    return scan
def atomic_savez(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write an NPZ atomically (temporary file in the same folder, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(p, "wb") as fh:
        np.savez(fh, **arrays)
    return p


def save_npz(scan: Scan, path: str | os.PathLike) -> Path:
    """Write a scan in the NPZ data contract (atomic)."""
    arrays: dict[str, np.ndarray] = {
        "diffraction": scan.diffraction.astype(np.float32),
        "xcoords": scan.positions_px[:, 1].astype(np.float64),
        "ycoords": scan.positions_px[:, 0].astype(np.float64),
        "probeGuess": scan.probe[0] if scan.n_probe_modes == 1 else scan.probe,
        "amplitude_units": np.asarray(scan.amplitude_units),
        "format_version": np.asarray(FORMAT_VERSION),
    }
    if scan.object is not None:
        arrays["objectGuess"] = scan.object
    if scan.scan_index is not None:
        arrays["scan_index"] = scan.scan_index
    if scan.bad_pixel_mask is not None:
        arrays["bad_pixel_mask"] = scan.bad_pixel_mask
    for k in _META_KEYS:
        v = getattr(scan, k)
        if v is not None:
            arrays[k] = np.asarray(v, dtype=np.float64)
    meta = {k: v for k, v in scan.metadata.items()
            if k not in ("xcoords_start", "ycoords_start", MEASURED_POSITIONS_KEY)}
    for k in ("xcoords_start", "ycoords_start"):
        if k in scan.metadata:
            arrays[k] = np.asarray(scan.metadata[k], dtype=np.float64)
    if meta:
        arrays["metadata_json"] = np.asarray(json.dumps(meta))
    return atomic_savez(path, arrays)
