"""Bring a reconstruction into the frame, phase and scale of a reference object.

Ptychography recovers an object only up to a translation, a global phase, a
linear phase ramp (a shift of the diffraction patterns) and, with arbitrary
intensity units, an amplitude scale. This module owns the operations that remove
these ambiguities before scores are computed: the crop to the well-illuminated
region, sub-pixel registration, global-phase and phase-ramp removal and the
least-squares amplitude scale.

Shifts follow ``skimage.registration.phase_cross_correlation``: ``shift_yx`` is
the translation that, applied to the moving image, registers it with the
reference (``aligned[y, x] = moving[y - sy, x - sx]``).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage
from scipy.signal.windows import tukey

from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

_PAD_EXTRA_PX = 8


def _as_2d(arr: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise DataError(f"'{name}' must be a 2-D image; found shape {a.shape}.")
    if a.size == 0:
        raise DataError(f"'{name}' must not be empty; found shape {a.shape}.")
    return a


def _same_shape(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise DataError(
            f"'{na}' and '{nb}' must have the same shape; found {a.shape} and {b.shape}."
        )


def illuminated_region(
    shape: tuple[int, int],
    positions_px: np.ndarray,
    N: int,
    margin_px: float | None = None,
) -> tuple[slice, slice]:
    """Bounding box of the well-illuminated part of the object.

    The box of the probe centres expanded by ``margin_px`` on every side
    (default ``N / 4``), clipped to ``shape``. A pixel inside is covered by the
    central half of at least one probe footprint, so only well-illuminated,
    over-determined pixels are scored; the scan border, seen by the probe tails
    only, is left out.

    Parameters
    ----------
    shape
        ``(H, W)`` of the object frame the positions refer to.
    positions_px
        ``(n, 2)`` probe centres ``[y, x]`` in object pixels.
    N
        Patch (probe) side in pixels.
    margin_px
        Expansion of the box of centres, in pixels; ``None`` for ``N / 4``.

    Returns
    -------
    tuple of slice
        ``(rows, cols)`` to index an ``(H, W)`` array with.
    """
    pos = np.asarray(positions_px, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise DataError(f"'positions_px' must be an (n, 2) array of [y, x]; found {pos.shape}.")
    if not np.all(np.isfinite(pos)):
        raise DataError("'positions_px' must hold finite values; found NaN/Inf.")
    if N <= 0:
        raise DataError(f"'patch_size' (N) must be a positive integer; found {N}.")
    m = N / 4 if margin_px is None else float(margin_px)
    lo = pos.min(axis=0) - m
    hi = pos.max(axis=0) + m
    out = []
    for k in range(2):
        a = max(0, int(math.ceil(lo[k])))
        b = min(int(shape[k]), int(math.floor(hi[k])) + 1)
        if b - a < 2:
            raise DataError(
                f"the scanned region (probe centres {pos.min(axis=0)}..{pos.max(axis=0)} "
                f"expanded by {m:g} px) does not overlap the object of shape {tuple(shape)}."
            )
        out.append(slice(a, b))
    return out[0], out[1]


def shift_image(image: np.ndarray, shift_yx: np.ndarray | tuple[float, float]) -> np.ndarray:
    """Translate ``image`` by a sub-pixel ``shift_yx`` with a Fourier shift.

    The image is reflect-padded first so that the periodic wrap of the Fourier
    shift, and its ringing, stay outside the returned frame. The result is
    complex for complex input, else real.
    """
    img = _as_2d(image, "image")
    s = np.asarray(shift_yx, dtype=np.float64).reshape(2)
    if not np.any(s):
        return img.copy()
    pads = [int(math.ceil(abs(v))) + _PAD_EXTRA_PX for v in s]
    pads = [min(p, n - 1) for p, n in zip(pads, img.shape, strict=True)]
    padded = np.pad(img, [(pads[0], pads[0]), (pads[1], pads[1])], mode="reflect")
    out = np.fft.ifftn(ndimage.fourier_shift(np.fft.fftn(padded), s))
    out = out[pads[0] : pads[0] + img.shape[0], pads[1] : pads[1] + img.shape[1]]
    return out if np.iscomplexobj(img) else out.real


def _prepare(img: np.ndarray) -> np.ndarray:
    """Mean-free, Tukey-windowed copy used for the cross-correlation."""
    w = np.outer(tukey(img.shape[0], 0.5), tukey(img.shape[1], 0.5))
    return (img - img.mean()) * w


def estimate_shift(
    reference: np.ndarray, moving: np.ndarray, upsample_factor: int = 20
) -> np.ndarray:
    """Sub-pixel shift registering ``moving`` with ``reference`` (one pass).

    Plain (unnormalised) cross-correlation of the mean-free, windowed images,
    refined by an upsampled DFT; robust to blur and noise in ``moving``.
    """
    from skimage.registration import phase_cross_correlation

    ref = _as_2d(reference, "reference")
    mov = _as_2d(moving, "moving")
    _same_shape(ref, mov, "reference", "moving")
    shift, _, _ = phase_cross_correlation(
        _prepare(ref), _prepare(mov), upsample_factor=int(upsample_factor), normalization=None
    )
    return np.asarray(shift, dtype=np.float64)


def register(
    reference: np.ndarray,
    moving: np.ndarray,
    upsample_factor: int = 20,
    *,
    region: tuple[slice, slice] | None = None,
    n_iter: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel register ``moving`` to ``reference``.

    Parameters
    ----------
    reference, moving
        Images of the same shape (complex or real).
    upsample_factor
        Precision of the shift: ``1 / upsample_factor`` pixels.
    region
        Compare only ``reference[region]`` with ``moving[region]`` (e.g. the
        illuminated region); the whole of ``moving`` is shifted, so content
        from outside the region enters it instead of wrapped-around pixels.
    n_iter
        Refinement passes: each re-estimates the residual shift after applying
        the shift found so far, which removes the bias of content entering and
        leaving the compared region.

    Returns
    -------
    aligned : ndarray
        ``moving`` shifted by ``shift_yx`` (same shape).
    shift_yx : ndarray
        ``(2,)`` shift ``[dy, dx]`` in pixels applied to ``moving``.
    """
    ref = _as_2d(reference, "reference")
    mov = _as_2d(moving, "moving")
    _same_shape(ref, mov, "reference", "moving")
    reg = region if region is not None else (slice(None), slice(None))
    total = np.zeros(2)
    aligned = mov
    for _ in range(max(1, int(n_iter))):
        step = estimate_shift(ref[reg], aligned[reg], upsample_factor)
        if not np.any(np.abs(step) > 0):
            break
        total = total + step
        aligned = shift_image(mov, total)
        if np.max(np.abs(step)) < 1.0 / upsample_factor:
            break
    log.debug("registration shift [dy, dx] = %s px", total)
    return aligned, total


def remove_global_phase(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``recon * exp(-i phi)`` with ``phi = angle(sum(recon * conj(truth)))``."""
    r = _as_2d(recon, "recon")
    t = _as_2d(truth, "truth")
    _same_shape(r, t, "recon", "truth")
    phi = float(np.angle(np.sum(r * np.conj(t))))
    return r * np.exp(-1j * phi)


def phase_plane(
    shape: tuple[int, int], coeffs: np.ndarray | tuple[float, float, float],
    origin: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """The plane ``a*y + b*x + c`` on a grid whose first pixel is at ``origin``."""
    a, b, c = (float(v) for v in coeffs)
    y = np.arange(shape[0], dtype=np.float64)[:, None] + origin[0]
    x = np.arange(shape[1], dtype=np.float64)[None, :] + origin[1]
    return a * y + b * x + c


def _lstsq_plane(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    yy, xx = np.indices(values.shape, dtype=np.float64)
    w = np.sqrt(weights.ravel())
    keep = w > 0
    if np.count_nonzero(keep) < 3:
        raise DataError("a phase plane needs at least 3 pixels with non-zero weight.")
    design = np.stack([yy.ravel(), xx.ravel(), np.ones(values.size)], axis=1)
    coef, *_ = np.linalg.lstsq(
        design[keep] * w[keep, None], values.ravel()[keep] * w[keep], rcond=None
    )
    return coef


def remove_phase_ramp(phase: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Fit ``a*y + b*x + c`` to an (unwrapped) real phase map and subtract it.

    Parameters
    ----------
    phase
        Real ``(H, W)`` phase in radians.
    mask
        Optional boolean ``(H, W)``: only ``True`` pixels take part in the fit
        (the plane is removed everywhere).
    """
    ph = _as_2d(phase, "phase")
    if np.iscomplexobj(ph):
        raise DataError("'phase' must be a real phase map in radians; found a complex array.")
    w = np.ones(ph.shape) if mask is None else np.asarray(mask, dtype=bool).astype(np.float64)
    _same_shape(ph, w, "phase", "mask")
    coef = _lstsq_plane(ph.astype(np.float64), w)
    return ph - phase_plane(ph.shape, coef)


def fit_phase_plane(
    field: np.ndarray, weights: np.ndarray | None = None, *, oversample: int = 4
) -> np.ndarray:
    """Wrap-safe fit of a phase plane to a complex field.

    Fits ``angle(field) ~ a*y + b*x + c`` (pixel indices from 0) even when the
    phase wraps: a coarse ramp from the peak of the zero-padded FFT of the
    field, then two weighted least-squares refinements of the (small, wrapped)
    residual. Weights default to ``|field|``.

    Returns
    -------
    ndarray
        ``[a, b, c]``: radians per pixel along y and x, and a constant.
    """
    f = _as_2d(field, "field").astype(np.complex128)
    w = np.abs(f) if weights is None else np.asarray(weights, dtype=np.float64)
    _same_shape(f, w, "field", "weights")
    shape = (f.shape[0] * oversample, f.shape[1] * oversample)
    spec = np.abs(np.fft.fft2(f * w / np.maximum(np.abs(f), 1e-30), s=shape))
    ky, kx = np.unravel_index(int(np.argmax(spec)), spec.shape)
    # zero padding keeps the sample spacing: bin k is at k / (oversample * n) cycles/px
    fy = np.fft.fftfreq(shape[0])[ky]
    fx = np.fft.fftfreq(shape[1])[kx]
    coef = np.array([2 * np.pi * fy, 2 * np.pi * fx, 0.0])
    for _ in range(2):
        rest = f * np.exp(-1j * phase_plane(f.shape, coef))
        c0 = float(np.angle(np.sum(w * rest)))
        resid = np.angle(rest * np.exp(-1j * c0))
        coef = coef + _lstsq_plane(resid, w) + np.array([0.0, 0.0, c0])
    coef[2] = float(np.angle(np.exp(1j * coef[2])))
    return coef


def remove_relative_phase_ramp(
    recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Remove from ``recon`` the phase plane of ``angle(recon * conj(truth))``.

    Returns the corrected reconstruction and the plane ``[a, b, c]`` removed
    (radians per pixel along y and x, constant).
    """
    r = _as_2d(recon, "recon")
    t = _as_2d(truth, "truth")
    _same_shape(r, t, "recon", "truth")
    d = r * np.conj(t)
    w = np.abs(d)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        _same_shape(r, m, "recon", "mask")
        w = w * m
    coef = fit_phase_plane(d, w)
    return r * np.exp(-1j * phase_plane(r.shape, coef)), coef


def match_amplitude_scale(amp: np.ndarray, ref_amp: np.ndarray) -> float:
    """Least-squares scale ``s`` minimising ``||s * amp - ref_amp||``.

    Returns ``sum(amp * ref_amp) / sum(amp**2)`` (1.0 when ``amp`` is all zero).
    """
    a = np.abs(np.asarray(amp, dtype=np.complex128 if np.iscomplexobj(amp) else np.float64))
    r = np.abs(np.asarray(ref_amp))
    _same_shape(a, r, "amp", "ref_amp")
    den = float(np.sum(a * a))
    if den <= 0:
        log.warning("amplitude is all zero; amplitude scale left at 1.")
        return 1.0
    return float(np.sum(a * r) / den)
