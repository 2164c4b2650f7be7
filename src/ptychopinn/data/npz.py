"""Read and write scans in the NPZ data contract (``docs/data_contract.md``).

Accepts files in the original PtychoPINN layout: ``diffraction`` (legacy key
``diff3d``) amplitudes, ``probeGuess``, ``xcoords``/``ycoords``, optional
``objectGuess``, ``scan_index``, ``xcoords_start``/``ycoords_start``. Photon
counts may be given instead under ``intensity`` (never guessed from values).
Patterns whose zero order is not at the array centre are loaded with a logged
warning (`ptychopinn.data.centring`).
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
from ptychopinn.data.scan import AMPLITUDE_UNITS, Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_META_KEYS = ("pixel_size_m", "photon_energy_ev", "detector_distance_m")


def _scalar(data: dict, key: str, path: str) -> float | None:
    if key not in data:
        return None
    arr = np.asarray(data[key])
    if arr.size != 1:
        raise DataError(f"{path}: '{key}' must be a scalar; found shape {arr.shape}.")
    try:
        return float(arr.reshape(()))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: '{key}' must be a number; found dtype {arr.dtype}.") from exc


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{path}: not an NPZ file (expected a zip archive written by numpy.savez); "
            "use `ptychopinn convert` for CXI or tike files."
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


def _diffraction_stack(arr: np.ndarray, key: str, path: str, n_pos: int | None) -> np.ndarray:
    if arr.ndim != 3:
        raise DataError(f"{path}: '{key}' must be 3-D (n, N, N); found shape {arr.shape}.")
    if np.iscomplexobj(arr):
        raise DataError(f"{path}: '{key}' must be real; found dtype {arr.dtype}.")
    if arr.shape[1] != arr.shape[2] and arr.shape[0] == arr.shape[1]:
        if n_pos is None or arr.shape[2] == n_pos:
            log.warning(
                "%s: '%s' has the legacy (N, N, n) layout %s; transposing to (n, N, N).",
                path,
                key,
                arr.shape,
            )
            arr = np.transpose(arr, (2, 0, 1))
    return arr


def load_npz(path: str | os.PathLike, *, amplitude_units: str | None = None,
             check_centring: bool = True) -> Scan:
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
    """
    p = Path(path)
    data = _open_npz(p)
    src = str(p)
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

    units = None
    if "intensity" in data:
        if "diffraction" in data or "diff3d" in data:
            raise DataError(
                f"{src}: holds both 'intensity' and 'diffraction'; keep exactly one "
                "('intensity' = photon counts, 'diffraction' = amplitudes)."
            )
        inten = _diffraction_stack(np.asarray(data["intensity"]), "intensity", src, x.size)
        if np.issubdtype(inten.dtype, np.number) and np.nanmin(inten) < 0:
            raise DataError(
                f"{src}: 'intensity' must be non-negative counts; found minimum {np.nanmin(inten):.4g}."
            )
        diffraction = np.sqrt(inten.astype(np.float32))
        units = "sqrt_counts"
    else:
        key = "diffraction" if "diffraction" in data else ("diff3d" if "diff3d" in data else None)
        if key is None:
            raise DataError(
                f"{src}: missing key 'diffraction' (amplitudes; legacy 'diff3d') or 'intensity' "
                f"(photon counts). Keys found: {sorted(data)}."
            )
        diffraction = _diffraction_stack(np.asarray(data[key]), key, src, x.size)

    if "probeGuess" not in data and "probe" not in data:
        raise DataError(
            f"{src}: missing key 'probeGuess' (complex (N, N) probe). Keys: {sorted(data)}."
        )
    probe = np.asarray(data["probeGuess"] if "probeGuess" in data else data["probe"])
    obj = data.get("objectGuess")
    if units is None:
        if "amplitude_units" in data:
            units = str(np.asarray(data["amplitude_units"]).reshape(()))
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
        try:
            meta = json.loads(str(np.asarray(data["metadata_json"]).reshape(())))
        except json.JSONDecodeError as exc:
            raise DataError(f"{src}: 'metadata_json' is not valid JSON ({exc}).") from exc
    for k in ("xcoords_start", "ycoords_start"):
        if k in data:
            meta[k] = np.asarray(data[k]).astype(np.float64).reshape(-1).tolist()
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
    meta = {k: v for k, v in scan.metadata.items() if k not in ("xcoords_start", "ycoords_start")}
    for k in ("xcoords_start", "ycoords_start"):
        if k in scan.metadata:
            arrays[k] = np.asarray(scan.metadata[k], dtype=np.float64)
    if meta:
        arrays["metadata_json"] = np.asarray(json.dumps(meta))
    return atomic_savez(path, arrays)
