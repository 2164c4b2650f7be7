"""Image-similarity scores between a reconstruction and a reference.

Thin, explicit wrappers: every score that depends on a dynamic range takes it
as an argument (never guessed from the dtype), and the complex error is the
normalised root-mean-square error of already aligned complex images.
"""

from __future__ import annotations

import logging

import numpy as np

from ptychopinn.errors import DataError

log = logging.getLogger(__name__)


def _pair(a: np.ndarray, b: np.ndarray, complex_ok: bool = False) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        raise DataError(
            f"images to compare must have the same shape; found {x.shape} and {y.shape}."
        )
    if x.size == 0:
        raise DataError("images to compare must not be empty.")
    if not complex_ok and (np.iscomplexobj(x) or np.iscomplexobj(y)):
        raise DataError(
            "this score takes real images (amplitude or phase); found a complex array."
        )
    return x, y


def _range(data_range: float) -> float:
    r = float(data_range)
    if not np.isfinite(r) or r <= 0:
        raise DataError(f"'data_range' must be a positive finite number; found {data_range!r}.")
    return r


def ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Structural similarity of two real 2-D images (1 for identical images).

    ``b`` is the reference. Uses ``skimage.metrics.structural_similarity`` with
    its default 7 x 7 window (shrunk to the largest odd size that fits).
    """
    from skimage.metrics import structural_similarity

    x, y = _pair(a, b)
    if x.ndim != 2:
        raise DataError(f"ssim takes 2-D images; found shape {x.shape}.")
    win = min(7, min(x.shape) if min(x.shape) % 2 else min(x.shape) - 1)
    if win < 3:
        raise DataError(f"ssim needs images of at least 3 x 3 pixels; found {x.shape}.")
    return float(
        structural_similarity(
            y.astype(np.float64), x.astype(np.float64), data_range=_range(data_range),
            win_size=win,
        )
    )


def psnr(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical images); ``b`` is the reference."""
    x, y = _pair(a, b)
    mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(_range(data_range) ** 2 / mse))


def mae(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference (works for real or complex images)."""
    x, y = _pair(a, b, complex_ok=True)
    return float(np.mean(np.abs(x - y)))


def complex_nrmse(recon: np.ndarray, truth: np.ndarray) -> float:
    """``||recon - truth|| / ||truth||`` of aligned complex images."""
    x, y = _pair(recon, truth, complex_ok=True)
    den = float(np.linalg.norm(y))
    if den == 0:
        raise DataError("complex_nrmse: the reference ('truth') is all zero.")
    return float(np.linalg.norm(x - y) / den)


def wrapped_difference(phase_a: np.ndarray, phase_b: np.ndarray) -> np.ndarray:
    """``phase_a - phase_b`` wrapped into ``(-pi, pi]``."""
    x, y = _pair(phase_a, phase_b)
    return np.angle(np.exp(1j * (x - y)))
