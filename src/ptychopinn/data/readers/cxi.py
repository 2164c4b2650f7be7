"""Read CXI (HDF5) ptychography files into a `Scan`.

Datasets read (first found wins; a missing one is a `DataError` naming the
file and the HDF5 path expected):

* frames: ``/entry_1/data_1/data`` or ``/entry_1/instrument_1/detector_1/data``,
  ``(n, H, W)`` photon counts, zero frequency at the frame centre (CXI);
* translations: ``/entry_1/sample_1/geometry_1/translation`` or
  ``/entry_1/data_1/translation``, ``(n, 3)`` (or ``(n, 2)``) sample positions
  ``(x, y, z)`` in metres, lab frame;
* detector: ``detector_1/{x,y}_pixel_size`` (m), ``detector_1/distance`` (m),
  optional ``detector_1/mask`` (0 = good, nonzero = bad), optional
  ``detector_1/basis_vectors``;
* source: ``/entry_1/instrument_1/source_1/energy`` in JOULES (CXI), else
  ``source_1/wavelength`` in metres.

Geometry (far field): object pixel ``dx = wavelength * distance / (N * p)``.

Positions: the probe sits on the sample at ``-t`` (the SAMPLE moves by ``t``).
A lab displacement ``d`` maps to array rows/columns along the detector basis
vectors ``r`` (rows) and ``c`` (columns): ``row = d . r_hat / dx``. CXI files
(like PETRA P25's) usually have ``r = -y`` and ``c = -x``, which gives
``positions_px = [t_y, t_x] / dx`` (y from ``translation[:, 1]``, x from
``translation[:, 0]``); the same is assumed when ``basis_vectors`` is absent.
Positions are then shifted by an integer into a canvas starting at 0.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ptychopinn.data.readers.tike import read_npz_arrays, shift_into_canvas
from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

DATA_PATHS = ("/entry_1/data_1/data", "/entry_1/instrument_1/detector_1/data")
TRANSLATION_PATHS = ("/entry_1/sample_1/geometry_1/translation", "/entry_1/data_1/translation")
DETECTOR = "/entry_1/instrument_1/detector_1"
SOURCE = "/entry_1/instrument_1/source_1"
ELEMENTARY_CHARGE_C = 1.602176634e-19  # J per eV
PLANCK_C_JM = 6.62607015e-34 * 299792458.0  # h * c in J m


def _dataset(f, paths: tuple[str, ...], src: str, what: str):
    for p in paths:
        if p in f:
            return f[p]
    raise DataError(f"{src}: missing {what}; expected the HDF5 dataset {' or '.join(paths)}.")


def _scalar(f, path: str, src: str, what: str, required: bool = True) -> float | None:
    if path not in f:
        if required:
            raise DataError(f"{src}: missing {what}; expected the HDF5 dataset {path}.")
        return None
    arr = np.asarray(f[path][()], dtype=np.float64).reshape(-1)
    if arr.size < 1 or not np.isfinite(arr[0]) or arr[0] <= 0:
        raise DataError(f"{src}: {path} ({what}) must be a positive number; found {arr[:3]}.")
    return float(arr[0])


def load_probe(probe: np.ndarray | str | os.PathLike, n_pix: int, src: str) -> np.ndarray:
    """A probe from an array or a file (``.npz`` with ``probeGuess``/``probe``, or ``.npy``)."""
    if isinstance(probe, (str, os.PathLike)):
        pp = Path(probe)
        if pp.suffix.lower() == ".npy":
            try:
                arr = np.load(pp, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"{pp}: cannot read the probe ({exc}).") from exc
        else:
            arrays = read_npz_arrays(pp)
            key = next((k for k in ("probeGuess", "probe") if k in arrays), None)
            if key is None:
                raise DataError(
                    f"{pp}: missing key 'probeGuess' (complex (N, N) probe); "
                    f"keys found: {sorted(arrays)}."
                )
            arr = arrays[key]
        where = str(pp)
    else:
        arr, where = np.asarray(probe), "the probe given"
    if not np.iscomplexobj(arr):
        raise DataError(f"{where}: the probe must be complex; found dtype {arr.dtype}.")
    if arr.shape[-2:] != (n_pix, n_pix) or arr.ndim not in (2, 3):
        raise DataError(
            f"{where}: the probe for {src} must be (N, N) or (M, N, N) with N={n_pix}; "
            f"found shape {arr.shape}."
        )
    return arr.astype(np.complex64)


def estimate_probe(counts: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Initial probe: inverse FFT of the root of the mean (centred) pattern.

    Normalised so ``sum |probe|**2`` = mean counts per pattern; centred in its
    array (a real, flat-phase far field gives a probe peaked at ``[N/2, N/2]``).
    """
    mean = counts.mean(axis=0)
    if mask is not None:
        mean = np.where(mask, 0.0, mean)
    far = np.sqrt(mean).astype(np.complex128)
    probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(far), norm="ortho"))
    target = float(counts.sum(axis=(1, 2)).mean())
    power = float(np.sum(np.abs(probe) ** 2))
    if power > 0:
        probe *= np.sqrt(target / power)
    return probe.astype(np.complex64)


def _basis_signs(f, src: str) -> tuple[np.ndarray, str]:
    """2x2 matrix mapping lab (x, y) displacements to (row, col) unit steps."""
    path = f"{DETECTOR}/basis_vectors"
    default = np.array([[0.0, -1.0], [-1.0, 0.0]])  # rows along -y, columns along -x
    if path not in f:
        return default, "basis_vectors absent: assumed rows along -y, columns along -x"
    b = np.asarray(f[path][()], dtype=np.float64)
    if b.ndim == 3:
        b = b[0]
    if b.shape == (3, 2):
        b = b.T
    if b.shape != (2, 3):
        log.warning("%s: %s has shape %s; assuming the CXI default.", src, path, b.shape)
        return default, f"{path} unreadable: assumed rows along -y, columns along -x"
    rows = []
    for v in b:
        xy = v[:2]
        norm = np.linalg.norm(xy)
        if norm == 0:
            log.warning("%s: %s has no in-plane component; assuming the default.", src, path)
            return default, f"{path} degenerate: assumed rows along -y, columns along -x"
        rows.append(xy / norm)
    return np.array(rows), f"from {path}"


def load_cxi(
    path: str | os.PathLike,
    *,
    probe: np.ndarray | str | os.PathLike | None = None,
    patch_size: int | None = None,
    margin_px: int = 0,
) -> Scan:
    """Load a CXI file as a `Scan` (amplitudes = sqrt of counts).

    Parameters
    ----------
    path
        The ``.cxi`` / ``.h5`` file.
    probe
        A complex ``(N, N)``/``(M, N, N)`` array or a file holding one; if None
        a probe is estimated from the data (``metadata["probe_estimated"]``).
    patch_size
        Centre-crop the frames to this size (default: the largest square).
    margin_px
        Free pixels between the canvas origin and the lowest patch edge.
    """
    import h5py

    p = Path(path)
    src = str(p)
    if not p.exists():
        raise DataError(f"{src}: file not found.")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DataError(f"{src}: not a readable HDF5/CXI file ({exc}).") from exc
    meta: dict = {"reader": "cxi"}
    with f:
        dset = _dataset(f, DATA_PATHS, src, "the diffraction frames")
        if dset.ndim != 3:
            raise DataError(f"{src}: {dset.name} must be (n, H, W); found shape {dset.shape}.")
        n, h, w = dset.shape
        side = min(h, w) if patch_size is None else int(patch_size)
        if side > min(h, w) or side < 2:
            raise DataError(
                f"{src}: patch_size={patch_size} must be between 2 and the frame side "
                f"{min(h, w)} (frames are {h} x {w})."
            )
        r0, c0 = h // 2 - side // 2, w // 2 - side // 2
        if (side, side) != (h, w):
            log.info(
                "%s: frames %dx%d centre-cropped to %dx%d (rows %d:%d, columns %d:%d).",
                src, h, w, side, side, r0, r0 + side, c0, c0 + side,
            )
            meta["cropped_from"] = [int(h), int(w)]
            meta["crop_origin"] = [int(r0), int(c0)]
        counts = np.asarray(dset[:, r0 : r0 + side, c0 : c0 + side], dtype=np.float32)
        trans = np.asarray(
            _dataset(f, TRANSLATION_PATHS, src, "the sample translations")[()], dtype=np.float64
        )
        if trans.ndim != 2 or trans.shape[1] not in (2, 3) or trans.shape[0] != n:
            raise DataError(
                f"{src}: translations must be ({n}, 3) (x, y, z in metres, one per frame); "
                f"found shape {trans.shape}."
            )
        px_x = _scalar(f, f"{DETECTOR}/x_pixel_size", src, "the detector pixel size (m)")
        px_y = _scalar(f, f"{DETECTOR}/y_pixel_size", src, "the detector pixel size (m)",
                       required=False) or px_x
        distance = _scalar(f, f"{DETECTOR}/distance", src, "the detector distance (m)")
        energy_j = _scalar(f, f"{SOURCE}/energy", src, "the photon energy (J)", required=False)
        if energy_j is None:
            wavelength = _scalar(
                f, f"{SOURCE}/wavelength", src, "the photon energy (J) or wavelength (m) "
                f"({SOURCE}/energy or {SOURCE}/wavelength)"
            )
            energy_j = PLANCK_C_JM / wavelength
        mask = None
        if f"{DETECTOR}/mask" in f:
            m = np.asarray(f[f"{DETECTOR}/mask"][()])
            if m.ndim == 3:
                m = np.any(m != 0, axis=0)
            if m.shape != (h, w):
                raise DataError(
                    f"{src}: {DETECTOR}/mask must be ({h}, {w}) like the frames; "
                    f"found shape {m.shape}."
                )
            mask = m[r0 : r0 + side, c0 : c0 + side] != 0
        to_rc, basis_note = _basis_signs(f, src)

    if not np.all(np.isfinite(counts)):
        raise DataError(f"{src}: the frames hold {int((~np.isfinite(counts)).sum())} NaN/Inf.")
    neg = counts < 0
    if neg.any():
        bad = np.any(neg, axis=0)
        log.warning(
            "%s: %d negative counts (in %d pixels) set to 0 and marked bad.",
            src, int(neg.sum()), int(bad.sum()),
        )
        counts = np.where(neg, 0.0, counts).astype(np.float32)
        mask = bad if mask is None else (mask | bad)

    energy_ev = energy_j / ELEMENTARY_CHARGE_C
    wavelength = PLANCK_C_JM / energy_j
    if not np.isclose(px_x, px_y, rtol=1e-3):
        log.warning("%s: non-square detector pixels %.3g x %.3g m; using their geometric mean.",
                    src, px_x, px_y)
    det_px = float(np.sqrt(px_x * px_y))
    dx = wavelength * distance / (side * det_px)
    # The probe sits on the sample at -t; project it on the (row, col) axes.
    positions = (-trans[:, :2]) @ to_rc.T / dx
    meta.update(
        detector_pixel_size_m=det_px,
        object_pixel_size_formula="wavelength * distance / (N * detector_pixel) (far field)",
        position_convention=f"positions_px = project(-translation) / pixel_size_m; {basis_note}",
        geometry_note=(
            "pixel_size_m uses the far-field formula; it is wrong for near-field "
            "(holographic / cone-beam) data, which need the magnified pixel size."
        ),
    )
    if "near" in p.name.lower():
        meta["geometry_note"] = "file name says NEAR-field: " + meta["geometry_note"]
        log.warning("%s: looks like near-field data; the far-field model does not apply.", src)

    if probe is not None:
        probe_arr = load_probe(probe, side, src)
        meta["probe_estimated"] = False
    else:
        probe_arr = estimate_probe(counts, mask)
        meta["probe_estimated"] = True
        log.info("%s: no probe given; estimated one from the mean pattern.", src)

    scan = Scan(
        diffraction=np.sqrt(counts),
        positions_px=positions,
        probe=probe_arr,
        bad_pixel_mask=mask,
        amplitude_units="sqrt_counts",
        pixel_size_m=dx,
        photon_energy_ev=energy_ev,
        detector_distance_m=distance,
        source=src,
        metadata=meta,
    )
    return shift_into_canvas(scan, margin_px)
