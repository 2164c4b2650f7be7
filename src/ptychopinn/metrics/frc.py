"""Fourier ring correlation (FRC) and the resolution it implies.

Frequencies are in cycles per pixel (0 to 0.5); a cutoff ``f`` is a resolution
of ``1 / f`` pixels. Rings are ``1 / min(H, W)`` wide so non-square images are
handled; both images are windowed (Hann by default) before the FFT so that the
image borders do not add spurious high-frequency correlation.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.signal import windows

from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

#: The fixed threshold for the "FRC = 0.5" criterion.
FRC_HALF = 0.5


def _radius(shape: tuple[int, int]) -> np.ndarray:
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    return np.sqrt(fy * fy + fx * fx)


def _n_bins(shape: tuple[int, int], n_bins: int | None) -> int:
    nb = min(shape) // 2 if n_bins is None else int(n_bins)
    if nb < 2:
        raise DataError(f"FRC needs at least 2 rings; images of shape {shape} give {nb}.")
    return nb


def _ring_index(shape: tuple[int, int], n_bins: int) -> np.ndarray:
    """Ring of every FFT pixel (``n_bins`` rings of width 0.5/n_bins; -1 beyond 0.5)."""
    idx = np.floor(_radius(shape) / (0.5 / n_bins)).astype(np.int64)
    idx[idx >= n_bins] = -1
    return idx


def ring_frequencies(shape: tuple[int, int], n_bins: int | None = None) -> np.ndarray:
    """Centre frequency (cycles/pixel) of each ring for images of ``shape``."""
    nb = _n_bins(shape, n_bins)
    return (np.arange(nb) + 0.5) * (0.5 / nb)


def ring_pixel_counts(shape: tuple[int, int], n_bins: int | None = None) -> np.ndarray:
    """Number of Fourier pixels in each ring (the ``n`` of the half-bit threshold)."""
    nb = _n_bins(shape, n_bins)
    idx = _ring_index(shape, nb)
    return np.bincount(idx[idx >= 0], minlength=nb).astype(np.int64)


def _window(shape: tuple[int, int], window: str | None) -> np.ndarray:
    if window is None or window == "none":
        return np.ones(shape)
    if window == "hann":
        return np.outer(windows.hann(shape[0], sym=False), windows.hann(shape[1], sym=False))
    if window == "tukey":
        return np.outer(windows.tukey(shape[0], 0.5), windows.tukey(shape[1], 0.5))
    raise DataError(f"FRC 'window' must be 'hann', 'tukey' or None; found {window!r}.")


def fourier_ring_correlation(
    a: np.ndarray,
    b: np.ndarray,
    n_bins: int | None = None,
    *,
    window: str | None = "hann",
) -> tuple[np.ndarray, np.ndarray]:
    """FRC of two real or complex 2-D images of the same shape.

    ``FRC(r) = Re sum_ring A conj(B) / sqrt(sum_ring |A|^2 * sum_ring |B|^2)``
    with ``A, B`` the FFTs of the windowed, mean-free images.

    Parameters
    ----------
    a, b
        Images, already aligned.
    n_bins
        Number of rings between 0 and 0.5 cycles/pixel; default ``min(H, W) // 2``.
    window
        ``"hann"`` (default), ``"tukey"`` (alpha 0.5) or ``None``.

    Returns
    -------
    freq : ndarray
        Ring centre frequencies in cycles/pixel.
    frc : ndarray
        Correlation per ring (0 for a ring where either image has no power).
    """
    x, y = np.asarray(a), np.asarray(b)
    if x.ndim != 2 or x.shape != y.shape:
        raise DataError(
            f"FRC takes two 2-D images of the same shape; found {x.shape} and {y.shape}."
        )
    shape = (int(x.shape[0]), int(x.shape[1]))
    nb = _n_bins(shape, n_bins)
    w = _window(shape, window)
    fa = np.fft.fft2((x - x.mean()) * w)
    fb = np.fft.fft2((y - y.mean()) * w)
    idx = _ring_index(shape, nb)
    keep = idx >= 0
    ii = idx[keep]
    cross = np.bincount(ii, weights=np.real(fa * np.conj(fb))[keep], minlength=nb)
    pa = np.bincount(ii, weights=(np.abs(fa) ** 2)[keep], minlength=nb)
    pb = np.bincount(ii, weights=(np.abs(fb) ** 2)[keep], minlength=nb)
    den = np.sqrt(pa * pb)
    frc = np.divide(cross, den, out=np.zeros(nb), where=den > 0)
    return ring_frequencies(shape, nb), frc


def half_bit_threshold(n_pixels_per_ring: np.ndarray | int) -> np.ndarray:
    """Van Heel & Schatz (2005) half-bit threshold for rings of ``n`` pixels.

    ``T = (0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))``.
    """
    n = np.maximum(np.asarray(n_pixels_per_ring, dtype=np.float64), 1.0)
    s = np.sqrt(n)
    return (0.2071 + 1.9102 / s) / (1.2071 + 0.9102 / s)


def _first_crossing(freq: np.ndarray, frc: np.ndarray, thr: np.ndarray) -> float | None:
    below = np.nonzero(frc < thr)[0]
    if below.size == 0:
        return None
    i = int(below[0])
    if i == 0:
        return float(freq[0])
    d0 = frc[i - 1] - thr[i - 1]
    d1 = frc[i] - thr[i]
    t = d0 / (d0 - d1) if d0 != d1 else 0.0
    return float(freq[i - 1] + t * (freq[i] - freq[i - 1]))


def resolution_cutoffs(
    freq: np.ndarray, frc: np.ndarray, n_per_ring: np.ndarray
) -> dict[str, float | None]:
    """First crossings of the FRC below the half-bit and 0.5 thresholds.

    The crossing frequency is interpolated linearly between the two rings
    around it. ``None`` means the FRC stays above the threshold up to
    0.5 cycles/pixel (resolution limited by the pixel size).

    Returns
    -------
    dict
        ``frc_half_bit`` and ``frc_0.5`` in cycles/pixel, and
        ``frc_half_bit_resolution_px`` and ``frc_0.5_resolution_px`` (``1 / f``).
    """
    f = np.asarray(freq, dtype=np.float64)
    c = np.asarray(frc, dtype=np.float64)
    n = np.asarray(n_per_ring)
    if not (f.shape == c.shape == n.shape) or f.ndim != 1:
        raise DataError(
            f"freq, frc and n_per_ring must be 1-D of one length; found {f.shape}, "
            f"{c.shape}, {n.shape}."
        )
    half_bit = _first_crossing(f, c, half_bit_threshold(n))
    half = _first_crossing(f, c, np.full(f.shape, FRC_HALF))
    return {
        "frc_half_bit": half_bit,
        "frc_0.5": half,
        "frc_half_bit_resolution_px": None if not half_bit else 1.0 / half_bit,
        "frc_0.5_resolution_px": None if not half else 1.0 / half,
    }
