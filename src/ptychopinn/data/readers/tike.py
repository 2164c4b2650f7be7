"""Read tike-style ptychography archives (``.npz`` or ``.npz.bz2``) into a `Scan`.

A tike archive holds three arrays (the layout of tike's test fixtures, e.g. the
measured Siemens star ``siemens-star-small.npz.bz2``):

* ``data``  ``(..., n, N, N)`` float: diffraction INTENSITIES in photon counts,
  zero frequency at the array CORNER ``[0, 0]`` (not fftshifted);
* ``scan``  ``(..., n, 2)`` float: positions ``[row, col]`` in object pixels;
* ``probe`` ``(..., M, N, N)`` complex: the probe (M shared incoherent modes).

Conventions checked against tike's source (``tike.operators`` Propagation,
Convolution and Patch):

* tike's far-field model is ``|fft2(probe * patch, norm="ortho")|**2`` with no
  shift, so the zero frequency sits at ``[0, 0]``. ``fftshift`` of a modulus is
  the modulus of the ``fftshift``, so ``np.fft.fftshift(data, axes=(-2, -1))``
  follows our ``|fftshift(fft2(probe * patch, norm="ortho"))|**2``.
* tike's ``scan`` is "the minimum corner of the probe grid for each
  measurement", vertical coordinate first. The patch of a measurement covers
  rows ``[scan_r, scan_r + N)``; our positions are probe CENTRES, whose patch
  covers ``[y - N/2, y + N/2)``, hence ``positions_px = scan + N/2``.

tike coordinates have an arbitrary origin (the Siemens star is centred on 0,
roughly +-165 px), so positions are then shifted by an INTEGER (sub-pixel
offsets are preserved) so every patch lies in a canvas starting at 0; the shift
is recorded in ``metadata["position_shift_px"]`` (``[dy, dx]``, added).
"""

from __future__ import annotations

import bz2
import io
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from ptychopinn.data.centring import FAR_FRACTION, mean_counts, measure_centring
from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

TIKE_KEYS: tuple[str, ...] = ("data", "scan", "probe")


def read_npz_bytes(path: Path, what: str | None = None) -> io.BytesIO:
    """The bytes of an ``.npz`` (decompressed when it is bz2), in memory.

    ``what`` (e.g. ``"reconstruction"``) is named in the errors beside the file.
    """
    name = f"{path} ({what})" if what else str(path)
    if not path.exists():
        raise DataError(f"{name}: file not found.")
    if path.is_dir():
        raise DataError(f"{name}: is a folder; expected an NPZ file.")
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(3) == b"BZh"
        if compressed:
            with bz2.open(path, "rb") as fh:
                return io.BytesIO(fh.read())
        return io.BytesIO(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise DataError(f"{name}: cannot be read or decompressed ({exc}).") from exc


def read_npz_arrays(path: str | os.PathLike, raw: io.BytesIO | None = None,
                    what: str | None = None) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` or bz2-compressed ``.npz.bz2``: a `DataError` naming the
    file (and ``what`` it should be) when it is missing, a folder, not an NPZ, truncated
    or corrupt, or holds pickled object arrays (never loaded).

    ``raw`` (from `read_npz_bytes`) avoids decompressing the file twice.
    """
    path = Path(path)
    name = f"{path} ({what})" if what else str(path)
    raw = read_npz_bytes(path, what) if raw is None else raw
    raw.seek(0)
    if not zipfile.is_zipfile(raw):
        raise DataError(
            f"{name}: not an NPZ archive (expected a zip written by numpy.savez); truncated, "
            "corrupt or another format."
        )
    raw.seek(0)
    try:
        with np.load(raw, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(
                f"{name}: holds object (pickled) arrays, which are never loaded for safety."
            ) from exc
        raise DataError(f"{name}: unreadable NPZ ({exc}).") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{name}: truncated or corrupt NPZ ({exc}).") from exc


def _squeeze_leading(arr: np.ndarray, keep: int, key: str, src: str, what: str) -> np.ndarray:
    """Drop leading axes of length 1 so ``arr`` has ``keep`` dimensions."""
    if arr.ndim < keep:
        raise DataError(
            f"{src}: '{key}' must have at least {keep} dimensions ({what}); "
            f"found shape {arr.shape}."
        )
    lead = arr.shape[: arr.ndim - keep]
    if int(np.prod(lead)) != 1:
        raise DataError(
            f"{src}: '{key}' has leading axes {lead} (several angles, or position-dependent "
            f"probes), which are not supported; expected {what} with leading axes of length 1; "
            f"found shape {arr.shape}."
        )
    return arr.reshape(arr.shape[arr.ndim - keep :])


def _zero_order_at_centre(data: np.ndarray) -> bool:
    """True when tike ``data`` (corner-centred by tike's convention) clearly holds its
    zero order at the array centre instead: fftshifted as tike's, it would sit at the
    corners (`ptychopinn.data.centring`)."""
    mean = mean_counts(data.reshape(-1, *data.shape[-2:]), amplitudes=False)
    shifted = measure_centring(np.fft.fftshift(mean))
    far = FAR_FRACTION * shifted.n
    return shifted.looks_shifted and min(abs(d) for d in shifted.com_px) > far


def load_tike_npz(
    path: str | os.PathLike,
    *,
    margin_px: int = 0,
    normalize_probe: bool = True,
    raw: io.BytesIO | None = None,
) -> Scan:
    """Load a tike archive (keys ``data``, ``scan``, ``probe``) as a `Scan`.

    Parameters
    ----------
    path
        ``.npz`` or ``.npz.bz2`` file.
    margin_px
        Free pixels kept between the canvas origin and the lowest patch edge.
    normalize_probe
        Rescale the probe so ``sum |probe|**2`` equals the median counts per
        pattern (a transparent object then reproduces the measured counts).
        tike probe guesses are often in arbitrary units (the Siemens star's is
        ~9e3 times too weak); the factor applied to ``|probe|**2`` is kept in
        ``metadata["probe_power_scale"]``.
    raw
        The file's (decompressed) bytes when already read (see `read_npz_bytes`).
    """
    p = Path(path)
    src = str(p)
    arrays = read_npz_arrays(p, raw)
    missing = [k for k in TIKE_KEYS if k not in arrays]
    if missing:
        raise DataError(
            f"{src}: missing tike key(s) {missing}; a tike archive holds 'data' (intensities, "
            f"zero frequency at the corner), 'scan' (corner positions [row, col]) and 'probe'. "
            f"Keys found: {sorted(arrays)}."
        )
    data = _squeeze_leading(np.asarray(arrays["data"]), 3, "data", src, "(n, N, N) intensities")
    scan = _squeeze_leading(np.asarray(arrays["scan"]), 2, "scan", src, "(n, 2) positions")
    if scan.dtype.kind not in "iuf":
        raise DataError(
            f"{src}: 'scan' must be real numbers (patch corners [row, col] in pixels); found "
            f"dtype {scan.dtype}."
        )
    probe = np.asarray(arrays["probe"])
    if not np.iscomplexobj(probe):
        raise DataError(
            f"{src}: 'probe' must be a complex array (tike's probe: complex (..., M, N, N)); "
            f"found real shape {probe.shape} dtype {probe.dtype}."
        )
    probe = _squeeze_leading(probe[None] if probe.ndim == 2 else probe, 3, "probe", src,
                             "(M, N, N) modes")
    if np.iscomplexobj(data) or not np.issubdtype(data.dtype, np.number):
        raise DataError(f"{src}: 'data' must be real intensities; found dtype {data.dtype}.")
    if data.shape[-1] != data.shape[-2]:
        raise DataError(f"{src}: 'data' must hold square patterns; found shape {data.shape}.")
    if scan.shape[-1] != 2 or scan.shape[0] != data.shape[0]:
        raise DataError(
            f"{src}: 'scan' must be ({data.shape[0]}, 2) (one [row, col] per pattern); "
            f"found shape {scan.shape}."
        )
    data = data.astype(np.float32, copy=False)
    finite = np.isfinite(data)
    if not finite.all():
        raise DataError(f"{src}: 'data' holds {int((~finite).sum())} NaN/Inf values.")
    if data.min() < 0:
        raise DataError(
            f"{src}: 'data' must be non-negative photon counts; found minimum {data.min():.4g}."
        )
    n_pix = data.shape[-1]
    # tike: zero frequency at [0, 0]; ours: at [N//2, N//2]. A file whose patterns are
    # already centred (written by another tool) is read as it is, and said so.
    stored_centred = _zero_order_at_centre(data)
    if stored_centred:
        log.warning(
            "%s: 'data' holds its zero order at the array centre, not at the corner [0, 0] "
            "where tike writes it; read as centred (not fftshifted). If the file really is "
            "tike's, check what wrote it.", src)
        amplitudes = np.sqrt(data)
    else:
        amplitudes = np.sqrt(np.fft.fftshift(data, axes=(-2, -1)))
    # tike: minimum corner of the patch; ours: probe centre.
    positions = scan.astype(np.float64) + n_pix / 2.0

    meta: dict = {
        "reader": "tike",
        "zero_frequency_as_stored": "centre" if stored_centred else "corner",
        "position_convention": "positions_px = tike scan (patch minimum corner [row, col])"
        " + N/2 + position_shift_px",
    }
    probe = probe.astype(np.complex64)
    power = float(np.sum(np.abs(probe) ** 2))
    median_counts = float(np.median(data.sum(axis=(-2, -1))))
    if power > 0:
        meta["probe_counts_ratio_raw"] = median_counts / power
    if normalize_probe and power > 0 and median_counts > 0:
        scale = median_counts / power
        probe = (probe * np.float32(np.sqrt(scale))).astype(np.complex64)
        meta["probe_power_scale"] = scale
        log.info("%s: probe rescaled so sum|probe|^2 = median counts (x%.4g in power).", src, scale)

    scan_obj = Scan(
        diffraction=amplitudes,
        positions_px=positions,
        probe=probe,
        amplitude_units="sqrt_counts",
        source=src,
        metadata=meta,
        positions_key="scan",
    )
    return shift_into_canvas(scan_obj, margin_px)


def shift_into_canvas(scan: Scan, margin_px: int = 0) -> Scan:
    """Shift positions by an integer into a canvas starting at 0; record the shift."""
    shifted = scan.in_object_frame(margin=margin_px)
    shift = np.rint(shifted.positions_px[0] - scan.positions_px[0]).astype(int)
    meta = dict(shifted.metadata)
    meta["position_shift_px"] = [int(shift[0]), int(shift[1])]
    return shifted.replace(metadata=meta)
