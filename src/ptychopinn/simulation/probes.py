"""Illumination (probe) generators: defocused disk, Gaussian, zone plate, file.

All probes are complex64 ``(N, N)`` arrays centred on pixel ``[N//2, N//2]``
(the patch centre), with maximum amplitude 1 before `simulate_scan` scales
them to the photon budget. Lengths are in object pixels.

Models
------
* ``disk``: a soft-edged circular aperture of diameter D (amplitude
  ``0.5 * erfc((r - D/2) / (sqrt(2) * w))`` with edge width
  ``w = 0.5 + 0.02 D`` pixels), propagated by the paraxial Fresnel transfer
  function ``exp(-i pi lambda z |q|^2)`` (q in cycles per pixel). The defocus is
  given as the Fresnel number ``F = (D/2)^2 / (lambda z)``: F = 4 gives a few
  Fresnel rings and a curved phase while staying about D wide.
* ``gaussian``: a Gaussian beam whose 1/e^2 intensity diameter is D, propagated
  by the same Fresnel number.
* ``zoneplate``: the defocused focus of a zone plate: an annular pupil (outer
  radius 0.2 cycles per pixel, central stop 35 % of it) with a defocus chosen so
  that the geometric cone is D wide at the sample (lambda z = D / 0.4). It has
  the sharp doughnut edges and speckly interior of real defocused probes.
* ``file``: a probe read from an NPZ (``probeGuess``) or .npy file, centre
  cropped/padded to N when its energy fits (same pixel size), else resampled.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.special import erfc

from ptychopinn.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ZONEPLATE_OUTER_FREQ = 0.2
ZONEPLATE_STOP_FRACTION = 0.35
MAX_FRESNEL_GRID = 8192
"""Largest side of the grid of a Fresnel propagation (8192^2 complex128 is 1 GiB per array)."""
MAX_LAMBDA_Z = MAX_FRESNEL_GRID / 1.25
"""Largest lambda z (px^2) that `_pad_size` propagates without aliasing."""
MAX_PROBE_FILE_PX = 4096
"""Largest side of a probe read from a file (it is squared, cropped or resampled to N)."""


def _radius(n: int) -> np.ndarray:
    c = np.arange(n) - n // 2
    return np.hypot(c[:, None], c[None, :])


def _freq2(n: int) -> np.ndarray:
    """|q|^2 in (cycles per pixel)^2 on an fftshifted n x n grid."""
    q = sfft.fftshift(sfft.fftfreq(n))
    return q[:, None] ** 2 + q[None, :] ** 2


def _pad_size(N: int, lambda_z: float) -> int:
    """A grid big enough that the Fresnel transfer function is not aliased
    (lambda z <= L for unit pixels) and the wrap-around is kept away."""
    size = 2 * N
    while size < 1.25 * lambda_z:
        if size >= MAX_FRESNEL_GRID:
            raise ConfigError(
                f"defocus_fresnel_number: the probe's Fresnel propagation (lambda z = "
                f"{lambda_z:.4g} px^2) needs a grid wider than {MAX_FRESNEL_GRID} px; expected "
                f"lambda z = (probe_diameter_px / 2)^2 / defocus_fresnel_number <= "
                f"{MAX_LAMBDA_Z:g} px^2. Use a larger defocus_fresnel_number or a smaller "
                "probe_diameter_px."
            )
        size *= 2
    return size


def _crop_centre(a: np.ndarray, n: int) -> np.ndarray:
    s0 = a.shape[0] // 2 - n // 2
    s1 = a.shape[1] // 2 - n // 2
    return a[s0 : s0 + n, s1 : s1 + n]


def _pad_centre(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, n), dtype=a.dtype)
    s0 = n // 2 - a.shape[0] // 2
    s1 = n // 2 - a.shape[1] // 2
    out[s0 : s0 + a.shape[0], s1 : s1 + a.shape[1]] = a
    return out


def fresnel_propagate(field: np.ndarray, lambda_z_px2: float) -> np.ndarray:
    """Paraxial Fresnel propagation of a centred square field (unit pixels)."""
    n = field.shape[0]
    size = _pad_size(n, lambda_z_px2)
    big = _pad_centre(field.astype(np.complex128), size)
    h = np.exp(-1j * np.pi * lambda_z_px2 * _freq2(size))
    spec = sfft.fftshift(sfft.fft2(sfft.ifftshift(big)))
    out = sfft.fftshift(sfft.ifft2(sfft.ifftshift(spec * h)))
    return _crop_centre(out, n)


def _normalise(p: np.ndarray) -> np.ndarray:
    m = np.abs(p).max()
    return (p / m).astype(np.complex64) if m > 0 else p.astype(np.complex64)


def disk_probe(N: int, diameter_px: float, fresnel_number: float | None) -> np.ndarray:
    """Soft-edged aperture of ``diameter_px`` propagated to Fresnel number F."""
    a = diameter_px / 2
    w = 0.5 + 0.02 * diameter_px
    field = 0.5 * erfc((_radius(N) - a) / (np.sqrt(2) * w))
    if fresnel_number is not None:
        field = fresnel_propagate(field, a * a / fresnel_number)
    return _normalise(field)


def gaussian_probe(N: int, diameter_px: float, fresnel_number: float | None) -> np.ndarray:
    """Gaussian beam with 1/e^2 intensity diameter ``diameter_px``."""
    w0 = diameter_px / 2
    field = np.exp(-((_radius(N) / w0) ** 2)).astype(np.complex128)
    if fresnel_number is not None:
        field = fresnel_propagate(field, w0 * w0 / fresnel_number)
    return _normalise(field)


def zoneplate_probe(N: int, diameter_px: float) -> np.ndarray:
    """Defocused zone-plate focus whose geometric cone is ``diameter_px`` wide."""
    lambda_z = diameter_px / (2 * ZONEPLATE_OUTER_FREQ)
    size = _pad_size(N, lambda_z)
    q2 = _freq2(size)
    qr = np.sqrt(q2)
    soft = 1.0 / size
    pupil = 0.5 * erfc((qr - ZONEPLATE_OUTER_FREQ) / soft) * 0.5 * erfc(
        (ZONEPLATE_STOP_FRACTION * ZONEPLATE_OUTER_FREQ - qr) / soft
    )
    spec = pupil * np.exp(-1j * np.pi * lambda_z * q2)
    field = sfft.fftshift(sfft.ifft2(sfft.ifftshift(spec)))
    return _normalise(_crop_centre(field, N))


def fit_probe_to_size(probe: np.ndarray, N: int, source: str = "probe") -> np.ndarray:
    """Bring a square complex probe to ``N x N``.

    Same size: unchanged. Otherwise a centred crop (or zero pad) keeps the pixel
    size when at least 99 % of the energy stays inside; else the probe is
    resampled (bilinear on real and imaginary parts). Either way a log line
    says what was done.
    """
    p = np.asarray(probe, dtype=np.complex128)
    if p.shape == (N, N):
        return p.astype(np.complex64)
    m = max(p.shape)
    if m > MAX_PROBE_FILE_PX:
        raise DataError(
            f"{source}: expected a probe of at most {MAX_PROBE_FILE_PX} px per side (probe_file "
            f"is fitted to {N}x{N}); found shape {p.shape}. Crop or resample it to about "
            f"{N}x{N} first."
        )
    sq = _pad_centre(p, m) if p.shape[0] != p.shape[1] else p
    if m < N:
        log.info("%s: probe %s zero-padded to %dx%d (same pixel size).", source, p.shape, N, N)
        return _pad_centre(sq, N).astype(np.complex64)
    cropped = _crop_centre(sq, N)
    kept = np.sum(np.abs(cropped) ** 2) / np.sum(np.abs(sq) ** 2)
    if kept >= 0.99:
        log.info(
            "%s: probe %s cropped to the central %dx%d (%.1f%% of its energy kept).",
            source, p.shape, N, N, 100 * kept,
        )
        return cropped.astype(np.complex64)
    zoom = N / m
    out = ndimage.zoom(sq.real, zoom, order=1) + 1j * ndimage.zoom(sq.imag, zoom, order=1)
    log.info(
        "%s: probe %s resampled to %dx%d (a crop would keep only %.1f%% of its energy).",
        source, p.shape, N, N, 100 * kept,
    )
    return _pad_centre(_crop_centre(out, min(N, out.shape[0])), N).astype(np.complex64)


def load_probe_file(path: str | Path, N: int) -> np.ndarray:
    """The probe of an NPZ ('probeGuess') or .npy file, fitted to ``N x N``."""
    from ptychopinn.simulation.objects import load_complex_2d

    return fit_probe_to_size(load_complex_2d(path, "probeGuess", "probe"), N, source=str(path))


def make_probe(
    kind: str,
    N: int,
    *,
    diameter_px: float,
    fresnel_number: float | None = 4.0,
    probe_file: str | None = None,
) -> np.ndarray:
    """A complex64 ``(N, N)`` probe of the given kind (see the module docs)."""
    if kind == "disk":
        return disk_probe(N, diameter_px, fresnel_number)
    if kind == "gaussian":
        return gaussian_probe(N, diameter_px, fresnel_number)
    if kind == "zoneplate":
        return zoneplate_probe(N, diameter_px)
    if kind == "file":
        if probe_file is None:
            raise ConfigError("probe_kind='file' needs probe_file (NPZ or .npy path).")
        return load_probe_file(probe_file, N)
    raise ConfigError(
        f"probe_kind: expected 'disk', 'gaussian', 'zoneplate' or 'file'; found {kind!r}."
    )
