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
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ptychopinn.errors import DataError

AmplitudeUnits = Literal["sqrt_counts", "arbitrary"]
AMPLITUDE_UNITS: tuple[str, ...] = ("sqrt_counts", "arbitrary")


XY = " (xcoords/ycoords in an NPZ file)"
"""What the positions are called in a file, beside the field's name."""


def _fail(source: str, key: str, expected: str, found: str) -> DataError:
    return DataError(f"{source}: '{key}' must be {expected}; found {found}.")


def _describe(arr: np.ndarray) -> str:
    return f"shape {tuple(arr.shape)} dtype {arr.dtype}"


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
    amplitude_units
        ``"sqrt_counts"`` (amplitudes are square roots of photon counts, so the
        Poisson likelihood is exact) or ``"arbitrary"`` (an intensity scale is
        learned or estimated).
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

    def __post_init__(self) -> None:
        src = self.source
        d = np.asarray(self.diffraction)
        if d.ndim != 3:
            raise _fail(src, "diffraction", "a 3-D (n, N, N) array", _describe(d))
        if not np.issubdtype(d.dtype, np.floating) and not np.issubdtype(d.dtype, np.integer):
            raise _fail(src, "diffraction", "real numbers", _describe(d))
        if d.shape[1] != d.shape[2]:
            raise _fail(src, "diffraction", "square patterns (n, N, N)", _describe(d))
        if d.shape[0] == 0:
            raise _fail(src, "diffraction", "at least one pattern", _describe(d))
        d = d.astype(np.float32, copy=False)
        # NaN/Inf propagate into a float64 sum: no full-size temporary for big scans
        if not np.isfinite(np.sum(d, dtype=np.float64)):
            bad = int(np.count_nonzero(~np.isfinite(d)))
            raise _fail(src, "diffraction", "finite values", f"{bad} NaN/Inf values")
        if d.min() < 0:
            raise _fail(src, "diffraction", "non-negative amplitudes", f"minimum {d.min():.4g}")
        n, npix = d.shape[0], d.shape[1]

        p = np.asarray(self.positions_px)
        if p.ndim != 2 or p.shape[1] != 2:
            raise _fail(src, "positions_px", "an (n, 2) array of [y, x]", _describe(p))
        if p.shape[0] != n:
            raise _fail(src, "positions_px" + XY, f"{n} positions (one per pattern)", f"{p.shape[0]}")
        p = p.astype(np.float64, copy=False)
        if not np.all(np.isfinite(p)):
            raise _fail(src, "positions_px" + XY, "finite values", "NaN/Inf")

        pr = np.asarray(self.probe)
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
            obj = np.asarray(obj)
            if obj.ndim != 2:
                raise _fail(src, "object", "a 2-D (H, W) array", _describe(obj))
            if not np.all(np.isfinite(obj)):
                raise _fail(src, "object", "finite values", "NaN/Inf")
            obj = obj.astype(np.complex64, copy=False)
            lo = p.min(axis=0) - npix / 2
            hi = p.max(axis=0) + npix / 2
            if lo.min() < 0 or hi[0] > obj.shape[0] or hi[1] > obj.shape[1]:
                raise _fail(
                    src,
                    "positions_px" + XY,
                    f"patches inside the object {obj.shape} (rows and columns "
                    f"[pos - N/2, pos + N/2) with N={npix})",
                    f"patches spanning rows [{lo[0]:.1f}, {hi[0]:.1f}) and "
                    f"columns [{lo[1]:.1f}, {hi[1]:.1f})",
                )

        mask = self.bad_pixel_mask
        if mask is not None:
            mask = np.asarray(mask).astype(bool)
            if mask.shape != (npix, npix):
                raise _fail(src, "bad_pixel_mask", f"shape ({npix}, {npix})", _describe(mask))

        idx = self.scan_index
        if idx is not None:
            idx = np.asarray(idx).astype(np.int64).reshape(-1)
            if idx.shape[0] != n:
                raise _fail(src, "scan_index", f"{n} entries", f"{idx.shape[0]}")

        if self.amplitude_units not in AMPLITUDE_UNITS:
            raise _fail(
                src, "amplitude_units", f"one of {AMPLITUDE_UNITS}", repr(self.amplitude_units)
            )
        for name in ("pixel_size_m", "photon_energy_ev", "detector_distance_m"):
            v = getattr(self, name)
            if v is not None and not (np.isfinite(v) and v > 0):
                raise _fail(src, name, "a positive number or None", repr(v))

        object.__setattr__(self, "diffraction", d)
        object.__setattr__(self, "positions_px", p)
        object.__setattr__(self, "probe", pr)
        object.__setattr__(self, "object", obj)
        object.__setattr__(self, "bad_pixel_mask", mask)
        object.__setattr__(self, "scan_index", idx)

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
        return self.replace(positions_px=self.positions_px - shift)

    def replace(self, **changes: object) -> Scan:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def subset(self, index: np.ndarray) -> Scan:
        """The scan restricted to the patterns at ``index``."""
        index = np.asarray(index)
        return self.replace(
            diffraction=self.diffraction[index],
            positions_px=self.positions_px[index],
            scan_index=None if self.scan_index is None else self.scan_index[index],
        )
