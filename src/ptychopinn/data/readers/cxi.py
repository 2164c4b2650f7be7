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

Checks (each a `DataError` naming the file and the dataset): frames must be real
numbers (complex frames are refused); an HDF5 group where a dataset belongs, or a
string where a number belongs, is named; energy, wavelength, distance, detector pixel,
the derived ``dx`` and the span of the positions must be plausible (`ENERGY_RANGE_J`
and the other ranges below, generous: only unit mistakes such as an energy in eV,
a distance in mm or translations in micrometres or pixels fall outside), and the
error names the unit the value looks like. Integer frames holding their dtype's
largest value (detectors' gap / dead-pixel marker, e.g. 2**32 - 1) have those
pixels set to 0 and marked bad (one warning with the count), like negative counts.

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
import operator
import os
from pathlib import Path

import numpy as np

from ptychopinn.data.readers.tike import read_npz_arrays, shift_into_canvas
from ptychopinn.data.scan import MAX_CANVAS_PX, Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

DATA_PATHS = ("/entry_1/data_1/data", "/entry_1/instrument_1/detector_1/data")
TRANSLATION_PATHS = ("/entry_1/sample_1/geometry_1/translation", "/entry_1/data_1/translation")
DETECTOR = "/entry_1/instrument_1/detector_1"
SOURCE = "/entry_1/instrument_1/source_1"
ELEMENTARY_CHARGE_C = 1.602176634e-19  # J per eV
PLANCK_C_JM = 6.62607015e-34 * 299792458.0  # h * c in J m

# Plausible ranges: generous (visible light to MeV electrons, table-top to 100 m
# beamlines), so only unit mistakes fall outside. The PETRA III P25 file: 2.03e-15 J
# (12.66 keV), 1.12 m, 55 um pixels, object pixel 20 nm, positions spanning ~1000 px.
ENERGY_RANGE_J = (1e-19, 1e-12)
"""Photon energy: 0.6 eV to 6 MeV. An energy written in eV (12660) or keV (12.66) is
far above."""
WAVELENGTH_RANGE_M = (1e-13, 1e-5)
"""Wavelength: 0.1 pm to 10 um (one written in angstroms or nanometres is far above)."""
DISTANCE_RANGE_M = (1e-3, 100.0)
"""Sample-detector distance: 1 mm to 100 m (one written in millimetres is above)."""
DETECTOR_PIXEL_RANGE_M = (1e-7, 2e-3)
"""Detector pixel: 0.1 um to 2 mm (micrometres or millimetres are above; the object
pixel size written instead, ~1e-8 m, is below)."""
OBJECT_PIXEL_RANGE_M = (1e-12, 1e-3)
"""The derived object pixel ``wavelength * distance / (N * detector_pixel)``."""
MAX_SPAN_PX = MAX_CANVAS_PX
"""Largest span of the positions, in object pixels (every Scan's limit; a 65536-pixel side is
already 32 GiB of complex64): translations in micrometres, nanometres or pixels read
as metres span far more."""


def _h5_dataset(f, path: str, src: str, what: str):
    """``f[path]`` when it is a dataset; a `DataError` when it is an HDF5 group."""
    import h5py

    obj = f[path]
    if not isinstance(obj, h5py.Dataset):
        raise DataError(
            f"{src}: {obj.name} ({what}) is an HDF5 group, not a dataset; expected the "
            f"dataset itself at {path}."
        )
    return obj


def _dataset(f, paths: tuple[str, ...], src: str, what: str):
    """The first of ``paths`` that holds a dataset (a group there is an error when no
    other path holds the dataset)."""
    present = [p for p in paths if p in f]
    for p in present:
        obj = f[p]
        if hasattr(obj, "dtype"):  # an h5py Dataset (a Group has no dtype)
            return obj
    if present:
        _h5_dataset(f, present[0], src, what)  # raises: a group
    raise DataError(f"{src}: missing {what}; expected the HDF5 dataset {' or '.join(paths)}.")


def _scalar(f, path: str, src: str, what: str, required: bool = True) -> float | None:
    if path not in f:
        if required:
            raise DataError(f"{src}: missing {what}; expected the HDF5 dataset {path}.")
        return None
    raw = np.asarray(_h5_dataset(f, path, src, what)[()])
    if raw.dtype.kind not in "iuf":
        value = raw.reshape(-1)[0] if raw.size else raw
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        raise DataError(
            f"{src}: {path} ({what}) must be a number; found {value!r} (dtype {raw.dtype})."
        )
    arr = raw.astype(np.float64).reshape(-1)
    if arr.size < 1 or not np.isfinite(arr[0]) or arr[0] <= 0:
        raise DataError(f"{src}: {path} ({what}) must be a positive number; found {arr[:3]}.")
    return float(arr[0])


def _check_plausible(
    value: float, path: str, src: str, what: str, valid: tuple[float, float],
    unit: str, guesses: tuple[tuple[float, str], ...],
) -> None:
    """A `DataError` when ``value`` (in ``unit``) lies outside ``valid``; it names the
    ``guesses`` (factor to ``unit``, unit name) that would make it plausible."""
    lo, hi = valid
    if lo <= value <= hi:
        return
    fits = [f"{name} ({value:.6g} {name} = {value * factor:.4g} {unit})"
            for factor, name in guesses if lo <= value * factor <= hi]
    hint = (f" It looks like {_either(fits)}; CXI stores it in {unit}." if fits
            else f" CXI stores it in {unit}; check the unit it was written in.")
    raise DataError(
        f"{src}: {path} ({what}) is {value:.6g}, outside the plausible range "
        f"{lo:g} to {hi:g} {unit}.{hint}"
    )


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def check_patch_size(patch_size: object, src: str) -> int | None:
    """``patch_size`` as an int (None stays None); a `DataError` for anything that is
    not a whole number (``64.7``, ``"64"``)."""
    if patch_size is None:
        return None
    if isinstance(patch_size, bool):
        raise DataError(f"{src}: patch_size must be a whole number of pixels; found {patch_size!r}.")
    try:
        return operator.index(patch_size)  # type: ignore[arg-type]
    except TypeError:
        raise DataError(
            f"{src}: patch_size must be a whole number of pixels (an int); found "
            f"{patch_size!r} ({type(patch_size).__name__})."
        ) from None


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
    b = np.asarray(_h5_dataset(f, path, src, "the detector basis vectors")[()])
    if b.dtype.kind not in "iuf":
        log.warning("%s: %s has dtype %s; assuming the CXI default.", src, path, b.dtype)
        return default, f"{path} unreadable: assumed rows along -y, columns along -x"
    b = b.astype(np.float64)
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


def _check_span(trans: np.ndarray, positions: np.ndarray, dx: float, tpath: str,
                src: str) -> None:
    """A `DataError` when the positions span more than `MAX_SPAN_PX` (translations in
    the wrong unit), naming the units that would make them plausible."""
    if not np.all(np.isfinite(trans[:, :2])):
        return  # the Scan names the NaN/Inf positions
    span_px = float(np.max(np.ptp(positions, axis=0)))
    if span_px <= MAX_SPAN_PX:
        return
    span = float(np.max(np.ptp(trans[:, :2], axis=0)))  # in the file's unit
    alternatives = [
        f"{name} ({span * factor / dx:.4g} px)"
        for factor, name in ((1e-6, "micrometres"), (1e-3, "millimetres"))
        if 1 <= span * factor / dx <= MAX_SPAN_PX
    ]
    if 1 <= span <= MAX_SPAN_PX:
        alternatives.append(f"pixels already ({span:.4g} px)")
    guess = (f"the values look like {_either(alternatives)}" if alternatives
             else "check the unit they were written in")
    raise DataError(
        f"{src}: {tpath} (the sample translations) spans {span:.4g} in the file's unit, "
        f"which at the object pixel size {dx:.4g} m is {span_px:.4g} px: implausibly large "
        f"(more than {MAX_SPAN_PX} px). CXI stores translations in metres; {guess}. Write "
        "them in metres."
    )


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
    if p.is_dir():
        raise DataError(f"{src}: is a folder; expected a CXI (HDF5) file.")
    patch_size = check_patch_size(patch_size, src)
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        with open(p, "rb") as fh:
            head = fh.read(4)
        if head.startswith((b"PK", b"BZh")):
            raise DataError(
                f"{src}: not an HDF5/CXI file: it is a zip (NPZ) archive"
                f"{' compressed with bz2' if head.startswith(b'BZh') else ''}; read it as "
                "npz or tike (leave the format to be detected, or give fmt='npz' / "
                "--format npz)."
            ) from exc
        raise DataError(f"{src}: not a readable HDF5/CXI file ({exc}).") from exc
    meta: dict = {"reader": "cxi"}
    with f:
        dset = _dataset(f, DATA_PATHS, src, "the diffraction frames")
        if dset.ndim != 3:
            raise DataError(f"{src}: {dset.name} must be (n, H, W); found shape {dset.shape}.")
        kind = dset.dtype.kind
        if kind == "c":
            raise DataError(
                f"{src}: {dset.name} holds complex values (dtype {dset.dtype}); expected real "
                "photon counts (the measured intensities; integers or floats)."
            )
        if kind not in "iuf":
            raise DataError(
                f"{src}: {dset.name} must hold photon counts (integers or floats); found "
                f"dtype {dset.dtype}."
            )
        n, h, w = dset.shape
        if n == 0:
            raise DataError(f"{src}: {dset.name} holds no frames; found shape {dset.shape}.")
        side = min(h, w) if patch_size is None else patch_size
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
        raw = np.asarray(dset[:, r0 : r0 + side, c0 : c0 + side])
        frames_name = dset.name
        tset = _dataset(f, TRANSLATION_PATHS, src, "the sample translations")
        tpath = tset.name
        trans = np.asarray(tset[()])
        if trans.dtype.kind not in "iuf":
            raise DataError(
                f"{src}: {tpath} (the sample translations) must be numbers in metres; found "
                f"dtype {trans.dtype}."
            )
        trans = trans.astype(np.float64)
        if trans.ndim != 2 or trans.shape[1] not in (2, 3) or trans.shape[0] != n:
            raise DataError(
                f"{src}: translations must be ({n}, 3) (x, y, z in metres, one per frame); "
                f"found shape {trans.shape}."
            )
        pix_x_path, pix_y_path = f"{DETECTOR}/x_pixel_size", f"{DETECTOR}/y_pixel_size"
        px_x = _scalar(f, pix_x_path, src, "the detector pixel size (m)")
        px_y = _scalar(f, pix_y_path, src, "the detector pixel size (m)", required=False)
        for value, where in ((px_x, pix_x_path), (px_y, pix_y_path)):
            if value is not None:
                _check_plausible(value, where, src, "the detector pixel size",
                                 DETECTOR_PIXEL_RANGE_M, "metres",
                                 ((1e-6, "micrometres"), (1e-3, "millimetres")))
        px_y = px_y or px_x
        dist_path = f"{DETECTOR}/distance"
        distance = _scalar(f, dist_path, src, "the detector distance (m)")
        _check_plausible(distance, dist_path, src, "the sample-detector distance",
                         DISTANCE_RANGE_M, "metres",
                         ((1e-3, "millimetres"), (1e-2, "centimetres")))
        energy_path = f"{SOURCE}/energy"
        energy_j = _scalar(f, energy_path, src, "the photon energy (J)", required=False)
        if energy_j is not None:
            _check_plausible(energy_j, energy_path, src, "the photon energy", ENERGY_RANGE_J,
                             "joules", ((ELEMENTARY_CHARGE_C, "eV"),
                                        (1e3 * ELEMENTARY_CHARGE_C, "keV")))
        else:
            energy_path = f"{SOURCE}/wavelength"
            wavelength = _scalar(
                f, energy_path, src, "the photon energy (J) or wavelength (m) "
                f"({SOURCE}/energy or {SOURCE}/wavelength)"
            )
            _check_plausible(wavelength, energy_path, src, "the wavelength",
                             WAVELENGTH_RANGE_M, "metres",
                             ((1e-10, "angstroms"), (1e-9, "nanometres")))
            energy_j = PLANCK_C_JM / wavelength
        mask = None
        if f"{DETECTOR}/mask" in f:
            m = np.asarray(_h5_dataset(f, f"{DETECTOR}/mask", src, "the bad-pixel mask")[()])
            if m.ndim == 3:
                m = np.any(m != 0, axis=0)
            if m.shape != (h, w):
                raise DataError(
                    f"{src}: {DETECTOR}/mask must be ({h}, {w}) like the frames; "
                    f"found shape {m.shape}."
                )
            mask = m[r0 : r0 + side, c0 : c0 + side] != 0
        to_rc, basis_note = _basis_signs(f, src)

    # Integer detectors mark gaps and dead pixels with the dtype's largest value
    # (Eiger: 2**32 - 1 in uint32 frames): those pixels are bad, not bright.
    if raw.dtype.kind in "iu":
        top = np.iinfo(raw.dtype).max
        marked = raw == top
        if marked.any():
            bad = np.any(marked, axis=0)
            log.warning(
                "%s: %d values of %s equal %d, the largest %s (a detector's gap / dead-pixel "
                "marker), in %d pixels: set to 0 and marked bad.",
                src, int(marked.sum()), frames_name, top, raw.dtype, int(bad.sum()),
            )
            raw = np.where(marked, 0, raw)
            mask = bad if mask is None else (mask | bad)
    counts = raw.astype(np.float32)
    del raw
    if not np.all(np.isfinite(counts)):
        raise DataError(
            f"{src}: {frames_name} (the frames) must be finite counts; found "
            f"{int((~np.isfinite(counts)).sum())} NaN/Inf values."
        )
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
    lo, hi = OBJECT_PIXEL_RANGE_M
    if not lo <= dx <= hi:
        raise DataError(
            f"{src}: the object pixel size wavelength * distance / (N * detector pixel) = "
            f"{wavelength:.4g} m * {distance:.4g} m / ({side} * {det_px:.4g} m) = {dx:.4g} m "
            f"is outside the plausible range {lo:g} to {hi:g} m; check the units of "
            f"{energy_path}, {dist_path} and {pix_x_path} (CXI: joules and metres)."
        )
    # The probe sits on the sample at -t; project it on the (row, col) axes.
    positions = (-trans[:, :2]) @ to_rc.T / dx
    _check_span(trans, positions, dx, tpath, src)
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
        positions_key=tpath,
    )
    return shift_into_canvas(scan, margin_px)
