"""The `Scan`: one validated ptychography data set with units in its names.

Conventions (see ``docs/data_contract.md``):

* ``diffraction``: float32 ``(n, N, N)`` diffraction AMPLITUDES (square root of
  the photon counts when ``amplitude_units == "sqrt_counts"``), with the zero
  frequency at the array centre ``[N // 2, N // 2]``.
* ``positions_px``: float64 ``(n, 2)``, the probe centre of each pattern as
  ``[y, x]`` = ``[row, column]`` in object pixels. The N x N patch seen there
  covers rows ``[y - N/2, y + N/2)`` and columns ``[x - N/2, x + N/2)``.
* ``probe``: complex64 ``(M, N, N)``: M >= 1 incoherent modes.
* Physics: ``sum_m |fftshift(fft2(probe_m * patch, norm="ortho"))|**2`` are the
  expected counts.

Validation refuses what cannot be a scan (`DataError` naming the source and the
field) and logs a warning for what is legal but suspect (most of the detector
masked, positions that look like they are not in pixels).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import InitVar, dataclass, field
from typing import Literal

import numpy as np

from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

AmplitudeUnits = Literal["sqrt_counts", "arbitrary"]
AMPLITUDE_UNITS: tuple[str, ...] = ("sqrt_counts", "arbitrary")


XY = " (xcoords/ycoords in an NPZ file)"
"""What the positions are called in a file, beside the field's name, when the scan
does not say (`Scan.positions_key`)."""

MAX_CANVAS_PX = 2**16
"""Largest side, in pixels, of the object canvas the patches may span (positions'
range + N): a 65536 x 65536 complex64 object is 32 GiB. Real scans span hundreds to
thousands of pixels; positions in metres times 1e7, or in nanometres with a
micrometre pixel, span far more and would otherwise fail deep in the physics with
an impossible allocation."""

MAX_AMPLITUDE = 1e18
"""Largest amplitude a scan may hold: its square (1e36 counts) still fits float32
(3.4e38), where the physics computes the counts; a real pixel counts far below 1e12."""

_PLAUSIBLE = {
    "pixel_size_m": (1e-12, 1e-3, "is it in metres (not nanometres or micrometres)?"),
    "photon_energy_ev": (1.0, 1e7, "is it in electronvolts (not joules or keV)?"),
    "detector_distance_m": (1e-3, 100.0, "is it in metres (not millimetres)?"),
}
"""Generous ranges of the physical scalars; outside, a warning asks about the unit (they
do not enter the reconstruction, only scale bars, reports and Ptychodus's geometry, so
nothing is refused)."""

MIN_MEAN_STEP_PX = 0.1
"""Below this mean distance (px) from a position to its nearest distinct neighbour,
the positions are probably not in pixels: a warning is logged."""

_STEP_SAMPLE = 20_000
"""At most this many positions (an even stride through the scan) are used to estimate
the mean nearest-neighbour step; a sparser sample can only raise it."""

MEASURED_POSITIONS_KEY = "measured_positions_px"
"""`Scan.metadata` key of a scan whose positions were corrected (a probe retrieval with
positions): its positions before the correction, ``(n, 2)`` in its frame. In memory only
(not saved by `save_npz`); a reconstruction of the scan keeps them
(``measured_positions_px``) so that `evaluate` recognises the measured scan."""


def check_distinct_positions(scan: Scan) -> None:
    """`DataError` for a scan of several patterns all at one position (legal to hold and
    inspect, with a warning, but nothing to train on or reconstruct: no overlap)."""
    p = scan.positions_px
    if len(p) > 1 and np.all(p == p[0]):
        key = scan.positions_key or "positions_px (xcoords/ycoords in an NPZ file)"
        raise DataError(
            f"{scan.source}: '{key}': all {len(p)} positions are the same point [y, x] = "
            f"[{p[0, 0]:.6g}, {p[0, 1]:.6g}]; expected overlapping but distinct positions to "
            "train on or reconstruct."
        )


def _fail(source: str, key: str, expected: str, found: str) -> DataError:
    return DataError(f"{source}: '{key}' must be {expected}; found {found}.")


def _describe(arr: np.ndarray) -> str:
    return f"shape {tuple(arr.shape)} dtype {arr.dtype}"


def _array(value: object, source: str, key: str) -> np.ndarray:
    """``np.asarray(value)``, with a `DataError` for ragged or unconvertible input."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise _fail(source, key, "a rectangular array of numbers",
                    f"a {type(value).__name__} that numpy cannot convert ({exc})") from exc


def _is_real(arr: np.ndarray) -> bool:
    """Integer or floating point (not bool, complex, string or object)."""
    return arr.dtype.kind in "iuf"


def _positive_scalar(value: object, source: str, key: str) -> float:
    arr = _array(value, source, key)
    if arr.ndim != 0:
        raise _fail(source, key, "a positive number or None", f"an array of shape {arr.shape}")
    if not _is_real(arr):
        raise _fail(source, key, "a positive number or None",
                    f"{value!r} ({type(value).__name__})")
    v = float(arr)
    if not (np.isfinite(v) and v > 0):
        raise _fail(source, key, "a positive number or None", repr(value))
    return v


def _mean_nearest_step(p: np.ndarray) -> float | None:
    """Mean distance (px) from each distinct position to its nearest distinct neighbour
    (among an even stride of at most `_STEP_SAMPLE` positions); None with fewer than two."""
    distinct = np.unique(p[:: -(-len(p) // _STEP_SAMPLE)], axis=0)
    if len(distinct) < 2:
        return None
    from scipy.spatial import cKDTree

    d, _ = cKDTree(distinct).query(distinct, k=2)
    return float(np.mean(d[:, 1]))


def _pattern_index(index: object, n_patterns: int, source: str) -> np.ndarray:
    """``index`` as an integer array of pattern positions, or a `DataError` saying
    what was expected and what was found."""
    arr = np.asarray(index)
    where = f"{source}: Scan.subset"
    if arr.ndim != 1:
        raise DataError(f"{where} takes a 1-D index of patterns; found shape {arr.shape}")
    if arr.dtype == bool:
        if arr.size != n_patterns:
            raise DataError(f"{where}: a boolean mask must have one entry per pattern "
                            f"({n_patterns}); found {arr.size}")
        arr = np.flatnonzero(arr)
    elif arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{where} takes integer pattern positions or a boolean mask; "
                        f"found dtype {arr.dtype}")
    if arr.size == 0:
        raise DataError(f"{where}: the index selects no pattern (the scan has {n_patterns})")
    arr = arr.astype(np.int64, copy=False)
    bad = arr[(arr >= n_patterns) | (arr < -n_patterns)]
    if bad.size:
        raise DataError(f"{where}: pattern position {int(bad[0])} is out of range for a scan "
                        f"of {n_patterns} patterns")
    return arr


@dataclass(frozen=True, eq=False)
class Scan:
    """A validated ptychographic scan.

    Parameters
    ----------
    diffraction
        ``(n, N, N)`` float32 amplitudes, zero frequency centred.
    positions_px
        ``(n, 2)`` probe centres ``[y, x]`` in object pixels.
    probe
        ``(N, N)`` or ``(M, N, N)`` complex probe (stored as ``(M, N, N)``).
    object
        Optional ``(H, W)`` complex ground-truth or initial object whose pixel
        frame the positions refer to.
    scan_index
        Optional ``(n,)`` integers: which scan each pattern belongs to.
    bad_pixel_mask
        Optional ``(N, N)`` booleans (or 0/1), ``True`` = bad detector pixel.
    amplitude_units
        ``"sqrt_counts"`` (amplitudes are square roots of photon counts, so the
        Poisson likelihood is exact) or ``"arbitrary"`` (an intensity scale is
        learned or estimated).
    source
        Where the scan came from (a file name); starts every error message.
    positions_key
        What the positions are called in the source file (``"scan"`` in a tike
        archive, the HDF5 path of the translations in a CXI file); named in the
        errors and warnings about positions. None: ``xcoords``/``ycoords`` of an
        NPZ file.
    """

    diffraction: np.ndarray
    positions_px: np.ndarray
    probe: np.ndarray
    object: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    bad_pixel_mask: np.ndarray | None = None
    amplitude_units: str = "sqrt_counts"
    pixel_size_m: float | None = None
    photon_energy_ev: float | None = None
    detector_distance_m: float | None = None
    source: str = "<memory>"
    metadata: dict = field(default_factory=dict)
    positions_key: str | None = None
    _warn_about: InitVar[frozenset[str] | None] = None
    """Private (`Scan.replace` / `subset`): the fields whose warnings are said again (the
    changed ones), so that a scan's warnings are logged once, not at every copy; None
    (a new scan): all of them."""

    def __post_init__(self, _warn_about: frozenset[str] | None) -> None:
        src = self.source
        recheck = _warn_about
        if self.positions_key is not None and not isinstance(self.positions_key, str):
            raise _fail(src, "positions_key", "a string or None", repr(self.positions_key))
        pos_name = "positions_px" + (
            XY if self.positions_key is None else f" ({self.positions_key} in the file)"
        )
        d = _array(self.diffraction, src, "diffraction")
        if d.ndim != 3:
            raise _fail(src, "diffraction", "a 3-D (n, N, N) array", _describe(d))
        if not _is_real(d):
            raise _fail(src, "diffraction", "real numbers", _describe(d))
        if d.shape[1] != d.shape[2]:
            raise _fail(src, "diffraction", "square patterns (n, N, N)", _describe(d))
        if d.shape[0] == 0:
            raise _fail(src, "diffraction", "at least one pattern", _describe(d))
        d = d.astype(np.float32, copy=False)
        # NaN/Inf propagate into a float64 sum: no full-size temporary for big scans
        total = np.sum(d, dtype=np.float64)
        if not np.isfinite(total):
            bad = int(np.count_nonzero(~np.isfinite(d)))
            raise _fail(src, "diffraction", "finite values", f"{bad} NaN/Inf values")
        if d.min() < 0:
            raise _fail(src, "diffraction", "non-negative amplitudes", f"minimum {d.min():.4g}")
        if total == 0:  # non-negative values summing to 0
            raise _fail(src, "diffraction", "non-zero amplitudes (measured patterns)",
                        f"only zeros in all {d.shape[0]} patterns")
        if total > MAX_AMPLITUDE and d.max() > MAX_AMPLITUDE:  # the sum bounds the max
            raise _fail(src, "diffraction",
                        f"amplitudes (square roots of counts) at most {MAX_AMPLITUDE:.0e}, "
                        "whose squares (the counts) float32 holds",
                        f"maximum {d.max():.4g}")
        n, npix = d.shape[0], d.shape[1]

        p = _array(self.positions_px, src, "positions_px")
        if p.ndim != 2 or p.shape[1] != 2:
            raise _fail(src, pos_name, "an (n, 2) array of [y, x]", _describe(p))
        if p.shape[0] != n:
            raise _fail(src, pos_name, f"{n} positions (one per pattern)", f"{p.shape[0]}")
        if not _is_real(p):
            raise _fail(src, pos_name, "real numbers (pixels)", f"dtype {p.dtype}")
        p = p.astype(np.float64, copy=False)
        if not np.all(np.isfinite(p)):
            raise _fail(src, pos_name, "finite values", "NaN/Inf")
        # per column: a reduction along axis 0 of an (n, 2) array is ~30x slower
        lo = np.array([p[:, 0].min(), p[:, 1].min()]) - npix / 2
        hi = np.array([p[:, 0].max(), p[:, 1].max()]) + npix / 2
        if np.any(hi - lo > MAX_CANVAS_PX):
            raise _fail(
                src,
                pos_name,
                f"positions in object pixels whose patches (N={npix}) span at most "
                f"{MAX_CANVAS_PX} px per side",
                f"patches spanning {hi[0] - lo[0]:.4g} x {hi[1] - lo[1]:.4g} px (rows x "
                f"columns; positions from [y, x] = [{lo[0] + npix / 2:.4g}, {lo[1] + npix / 2:.4g}]"
                f" to [{hi[0] - npix / 2:.4g}, {hi[1] - npix / 2:.4g}]); the positions are probably "
                "not in pixels: divide positions in metres by pixel_size_m",
            )
        if recheck is None or "positions_px" in recheck:
            self._warn_positions(p, pos_name)

        pr = _array(self.probe, src, "probe")
        if not np.iscomplexobj(pr):
            raise _fail(src, "probe", "a complex array", f"real {_describe(pr)}")
        if pr.ndim == 2:
            pr = pr[None]
        if pr.ndim != 3 or pr.shape[1:] != (npix, npix):
            raise _fail(src, "probe", f"(N, N) or (M, N, N) with N={npix}", _describe(pr))
        pr = pr.astype(np.complex64, copy=False)
        if not np.all(np.isfinite(pr)):
            raise _fail(src, "probe", "finite values", "NaN/Inf")
        if not np.any(np.abs(pr) > 0):
            raise _fail(src, "probe", "a non-zero probe", "all zeros")

        obj = self.object
        if obj is not None:
            obj = _array(obj, src, "object")
            if obj.ndim != 2:
                raise _fail(src, "object", "a 2-D (H, W) array", _describe(obj))
            if not (_is_real(obj) or np.iscomplexobj(obj)):
                raise _fail(src, "object", "a complex (or real) array of numbers", _describe(obj))
            if not np.all(np.isfinite(obj)):
                raise _fail(src, "object", "finite values", "NaN/Inf")
            obj = obj.astype(np.complex64, copy=False)
            if lo.min() < 0 or hi[0] > obj.shape[0] or hi[1] > obj.shape[1]:
                raise _fail(
                    src,
                    pos_name,
                    f"patches inside the object {obj.shape} (rows and columns "
                    f"[pos - N/2, pos + N/2) with N={npix})",
                    f"patches spanning rows [{lo[0]:.1f}, {hi[0]:.1f}) and "
                    f"columns [{lo[1]:.1f}, {hi[1]:.1f})",
                )

        mask = self.bad_pixel_mask
        if mask is not None:
            mask = self._checked_mask(_array(mask, src, "bad_pixel_mask"), npix)
            if recheck is None or "bad_pixel_mask" in recheck:
                bad = int(np.count_nonzero(mask))
                if bad > mask.size / 2:
                    log.warning(
                        "%s: 'bad_pixel_mask' marks %d of the %d detector pixels (%.0f %%) bad; "
                        "only the others are fitted. True means bad in the data contract (a CXI "
                        "mask's 0 means good): check that the mask is not inverted.",
                        src, bad, mask.size, 100.0 * bad / mask.size,
                    )

        idx = self.scan_index
        if idx is not None:
            idx = _array(idx, src, "scan_index")
            if idx.size != n or np.squeeze(idx).ndim > 1:
                raise _fail(src, "scan_index", f"{n} entries (one per pattern)", _describe(idx))
            if idx.dtype.kind == "f":
                whole = np.isfinite(idx) & (idx == np.round(idx))
                if not np.all(whole):
                    first = float(idx.reshape(-1)[~whole.reshape(-1)][0])
                    raise _fail(src, "scan_index", "integers (which scan each pattern belongs "
                                "to)", f"non-integer values such as {first:g}")
            elif idx.dtype.kind not in "iu":
                raise _fail(src, "scan_index", "integers (which scan each pattern belongs to)",
                            f"dtype {idx.dtype}")
            idx = idx.astype(np.int64).reshape(-1)

        if not isinstance(self.amplitude_units, str) or self.amplitude_units not in AMPLITUDE_UNITS:
            raise _fail(
                src, "amplitude_units", f"one of {AMPLITUDE_UNITS}", repr(self.amplitude_units)
            )
        for name in ("pixel_size_m", "photon_energy_ev", "detector_distance_m"):
            v = getattr(self, name)
            if v is not None:
                v = _positive_scalar(v, src, name)
                object.__setattr__(self, name, v)
                low, high, unit = _PLAUSIBLE[name]
                if not low <= v <= high and (recheck is None or name in recheck):
                    log.warning("%s: %s = %.4g lies outside %.0e..%.0e; %s", src, name, v,
                                low, high, unit)
        if not isinstance(self.metadata, dict):
            raise _fail(src, "metadata", "a dict", type(self.metadata).__name__)

        object.__setattr__(self, "diffraction", d)
        object.__setattr__(self, "positions_px", p)
        object.__setattr__(self, "probe", pr)
        object.__setattr__(self, "object", obj)
        object.__setattr__(self, "bad_pixel_mask", mask)
        object.__setattr__(self, "scan_index", idx)

    def _checked_mask(self, mask: np.ndarray, npix: int) -> np.ndarray:
        """The mask as booleans: booleans, or numbers that are all 0 or 1."""
        src = self.source
        expected = "booleans (True = bad pixel) or numbers 0/1"
        if mask.dtype.kind != "b":
            if not _is_real(mask):
                raise _fail(src, "bad_pixel_mask", expected, _describe(mask))
            other = (mask != 0) & (mask != 1)
            if np.any(other):
                raise _fail(src, "bad_pixel_mask", expected,
                            f"{_describe(mask)} with other values such as {mask[other][0]:g}")
        mask = mask.astype(bool)
        if mask.shape != (npix, npix):
            raise _fail(src, "bad_pixel_mask", f"shape ({npix}, {npix})", _describe(mask))
        if mask.all():
            raise _fail(src, "bad_pixel_mask", "False (good) for some pixels",
                        f"all {mask.size} pixels marked bad")
        return mask

    def _warn_positions(self, p: np.ndarray, pos_name: str) -> None:
        """Warn about positions that are legal but look like they are not in pixels."""
        if len(p) < 2:
            return
        if np.all(p == p[0]):
            log.warning(
                "%s: '%s': all %d positions are the same point [y, x] = [%.6g, %.6g]; a "
                "ptychographic scan needs overlapping but distinct positions.",
                self.source, pos_name, len(p), p[0, 0], p[0, 1],
            )
            return
        step = _mean_nearest_step(p)
        if step is not None and step < MIN_MEAN_STEP_PX:
            log.warning(
                "%s: '%s': the mean distance from a position to its nearest neighbour is "
                "%.3g px (below %g px); the positions are probably not in pixels (metres or "
                "micrometres?): divide positions in metres by pixel_size_m.",
                self.source, pos_name, step, MIN_MEAN_STEP_PX,
            )

    # ------------------------------------------------------------------ views
    @property
    def n_patterns(self) -> int:
        return int(self.diffraction.shape[0])

    @property
    def patch_size(self) -> int:
        """N, the side of a diffraction pattern and of an object patch."""
        return int(self.diffraction.shape[1])

    @property
    def n_probe_modes(self) -> int:
        return int(self.probe.shape[0])

    @property
    def counts(self) -> np.ndarray:
        """Photon counts (amplitude squared)."""
        return np.square(self.diffraction, dtype=np.float32)

    def object_shape(self, margin: int = 0) -> tuple[int, int]:
        """Shape of the object frame: the object's when known, else one that
        holds every patch with ``margin`` pixels to spare (positions are then
        expected to start near ``N/2 + margin``; see `in_object_frame`)."""
        if self.object is not None:
            return tuple(self.object.shape)  # type: ignore[return-value]
        n = self.patch_size
        hi = self.positions_px.max(axis=0) + n / 2 + margin
        return (int(np.ceil(hi[0])), int(np.ceil(hi[1])))

    def in_object_frame(self, margin: int = 0) -> Scan:
        """Return a scan whose positions lie inside a canvas starting at 0.

        Scans with an object are returned unchanged. Otherwise positions are
        shifted by an integer so the lowest patch edge sits ``margin`` pixels
        from the origin (integer shift: sub-pixel offsets are preserved).
        """
        if self.object is not None:
            return self
        n = self.patch_size
        lo = self.positions_px.min(axis=0) - n / 2
        shift = np.floor(lo) - margin
        if np.all(shift == 0):
            return self
        return self._copy(frozenset(), positions_px=self.positions_px - shift)

    def replace(self, **changes: object) -> Scan:
        """A copy with some fields replaced (validated again; the warnings about the
        fields left as they are are not said again)."""
        return self._copy(frozenset(changes), **changes)

    def subset(self, index: np.ndarray) -> Scan:
        """The scan restricted to the patterns at ``index``: integer positions in
        ``[-n_patterns, n_patterns)`` (numpy's meaning) or a boolean mask of length
        ``n_patterns``; at least one pattern must be selected."""
        index = _pattern_index(index, self.n_patterns, self.source)
        return self._copy(
            frozenset(),
            diffraction=self.diffraction[index],
            positions_px=self.positions_px[index],
            scan_index=None if self.scan_index is None else self.scan_index[index],
        )

    def _copy(self, recheck: frozenset[str], **changes: object) -> Scan:
        """`dataclasses.replace`, saying again only the warnings about ``recheck``."""
        return dataclasses.replace(self, _warn_about=recheck, **changes)
