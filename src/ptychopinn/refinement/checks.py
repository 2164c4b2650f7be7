"""Validation of the arrays handed to `ptychopinn.refinement.refine`.

Owns `check_inputs`: the starting object, the probe and the positions must
agree with the scan (patch size, number of patterns) and every patch must lie
inside the object; otherwise a `DataError` says what was expected and found.
"""

from __future__ import annotations

import numpy as np

from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError


def _desc(a: np.ndarray) -> str:
    return f"shape {tuple(a.shape)} dtype {a.dtype}"


def check_inputs(
    scan: Scan, obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray, who: str = "refine"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert: complex64 ``(H, W)``, complex64 ``(M, N, N)``, float64 ``(n, 2)``.

    ``who`` starts every error message (the function the arrays were handed to)."""
    src = scan.source
    n = scan.patch_size
    obj = np.asarray(obj)
    if obj.ndim != 2:
        raise DataError(f"{who} ({src}): the object must be 2-D (H, W); found {_desc(obj)}.")
    if not np.all(np.isfinite(obj)):
        raise DataError(f"{who} ({src}): the object holds NaN/Inf values.")
    obj = obj.astype(np.complex64)

    probe = np.asarray(probe)
    if not np.iscomplexobj(probe):
        raise DataError(f"{who} ({src}): the probe must be complex; found {_desc(probe)}.")
    if probe.ndim == 2:
        probe = probe[None]
    if probe.ndim != 3 or probe.shape[1:] != (n, n):
        raise DataError(
            f"{who} ({src}): the probe must be (N, N) or (M, N, N) with N={n} (the size of the "
            f"diffraction patterns); found {_desc(probe)}."
        )
    if not np.all(np.isfinite(probe)) or not np.any(probe != 0):
        raise DataError(f"{who} ({src}): the probe must be finite and non-zero.")
    probe = probe.astype(np.complex64)

    pos = np.asarray(positions_px, dtype=np.float64)
    if pos.shape != (scan.n_patterns, 2):
        raise DataError(
            f"{who} ({src}): positions_px must be ({scan.n_patterns}, 2) [y, x] (one per "
            f"pattern); found shape {pos.shape}."
        )
    if not np.all(np.isfinite(pos)):
        raise DataError(f"{who} ({src}): positions_px holds NaN/Inf values.")
    lo = pos.min(axis=0) - n / 2
    hi = pos.max(axis=0) + n / 2
    if lo.min() < 0 or hi[0] > obj.shape[0] or hi[1] > obj.shape[1]:
        raise DataError(
            f"{who} ({src}): every N={n} patch must lie inside the object of shape "
            f"{obj.shape} (rows and columns [pos - N/2, pos + N/2)); found patches spanning rows "
            f"[{lo[0]:.1f}, {hi[0]:.1f}) and columns [{lo[1]:.1f}, {hi[1]:.1f}). Pass the "
            "object and positions of one frame (e.g. a Reconstruction's object and positions_px)."
        )
    return obj, probe, pos
