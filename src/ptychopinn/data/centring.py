"""Where a scan's diffraction sits on the detector, and a warning when it is not centred.

The data contract puts the zero frequency at ``[N // 2, N // 2]``. Patterns stored in
FFT order (saved after ``np.fft.ifftshift``, or simulated with an unshifted FFT) put
the bright zero order at the array corners instead; nothing else about them looks
wrong, and a model fitted to them only shows a poor data fit. `measure_centring`
locates the mean pattern's intensity and `centring_warning` says when it sits far
from the centre.

The centre of mass is taken on the periodic grid of the FFT (a circular mean per
axis: the phase of the first Fourier coefficient of the row and column profiles).
A zero order split over the four corners then reads as ``(-N/2, -N/2)`` px from the
centre, where a plain centre of mass would average the corners back to about
``(0, 0)``; a flat background does not pull it towards the centre either. For a
compact centred pattern both agree.

Energies are fractions of the mean pattern's counts within ``N/4`` px (periodic
distance) of the array centre and of the corner ``[0, 0]`` (the four corner
quarter-discs; after ``ifftshift`` the central disc lands exactly on them).
Warn when both hold; on the data we measured the margins are wide either way
(centre of mass within 0.06 N of the centre and corner/centre counts below 1/250
for the measured Siemens star and PETRA III scans and for scans simulated with the
run1084 probe and the disk, Gaussian and zone-plate probes; beyond 0.66 N and
above 250 once ifftshifted):

* the centre of mass lies farther than ``N/4`` from the centre, and
* the counts near the centre of mass exceed twice the counts near the centre.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ptychopinn.data.scan import Scan

FAR_FRACTION = 0.25
"""Centre of mass farther than ``FAR_FRACTION * N`` px from the centre is suspect."""
DISC_FRACTION = 0.25
"""Radius of the central and corner discs, as a fraction of N."""
ENERGY_RATIO = 2.0
"""Counts near the centre of mass must exceed this many times those near the centre."""


@dataclass(frozen=True)
class Centring:
    """Where the mean diffraction pattern's counts sit.

    Attributes
    ----------
    n
        Pattern side N; the array centre is ``[N // 2, N // 2]``.
    com_px
        ``(dy, dx)``: periodic centre of mass of the mean counts relative to the
        array centre, in pixels, each in ``[-N/2, N/2)``.
    centre_fraction, corner_fraction, com_fraction
        Fractions of the mean counts within ``N/4`` px (periodic distance) of the
        array centre, of the corner ``[0, 0]`` and of the centre of mass.
    """

    n: int
    com_px: tuple[float, float]
    centre_fraction: float
    corner_fraction: float
    com_fraction: float

    @property
    def com_distance_px(self) -> float:
        return float(np.hypot(*self.com_px))

    @property
    def looks_shifted(self) -> bool:
        """True when the zero order clearly sits far from the array centre."""
        return (
            self.com_distance_px > FAR_FRACTION * self.n
            and self.com_fraction > ENERGY_RATIO * self.centre_fraction
        )


def mean_counts(
    diffraction: np.ndarray,
    *,
    amplitudes: bool = True,
    bad_pixel_mask: np.ndarray | None = None,
    chunk: int = 256,
) -> np.ndarray:
    """The mean pattern of an ``(n, N, N)`` stack, float64, summed ``chunk`` patterns at a time.

    ``amplitudes=True`` squares each pattern first (counts from amplitudes). Pixels
    where ``bad_pixel_mask`` is True are set to 0. Any array-like that slices to
    numpy arrays (an HDF5 dataset, a memory map) works; no float64 copy of the
    stack is made.
    """
    n = diffraction.shape[0]
    total = np.zeros(diffraction.shape[1:], dtype=np.float64)
    for start in range(0, n, chunk):
        block = np.asarray(diffraction[start : start + chunk], dtype=np.float32)
        if amplitudes:
            block = np.square(block)
        total += block.sum(axis=0, dtype=np.float64)
    if bad_pixel_mask is not None:
        total[np.asarray(bad_pixel_mask, dtype=bool)] = 0.0
    return total / max(n, 1)


def _circular_mean(profile: np.ndarray) -> float:
    """Position (px, in ``[0, N)``) of a periodic 1-D profile's circular mean."""
    n = profile.shape[0]
    z = np.sum(profile * np.exp(2j * np.pi * np.arange(n) / n))
    return float(np.angle(z) * n / (2 * np.pi)) % n


def _disc_fraction(mean: np.ndarray, y: float, x: float, radius: float) -> float:
    """Fraction of ``mean``'s sum within ``radius`` px of ``(y, x)`` on the periodic grid."""
    n = mean.shape[0]
    idx = np.arange(n)
    dy = np.abs(idx - y) % n
    dx = np.abs(idx - x) % n
    dy, dx = np.minimum(dy, n - dy), np.minimum(dx, n - dx)
    inside = dy[:, None] ** 2 + dx[None, :] ** 2 <= radius**2
    return float(mean[inside].sum() / mean.sum())


def measure_centring(mean: np.ndarray) -> Centring:
    """Locate the counts of a mean pattern ``(N, N)`` (see `mean_counts`)."""
    mean = np.asarray(mean, dtype=np.float64)
    n = mean.shape[0]
    c = n // 2
    if not mean.sum() > 0:
        return Centring(n, (0.0, 0.0), 0.0, 0.0, 0.0)
    com = []
    for profile in (mean.sum(axis=1), mean.sum(axis=0)):
        com.append((_circular_mean(profile) - c + n / 2) % n - n / 2)
    r = DISC_FRACTION * n
    return Centring(
        n=n,
        com_px=(float(com[0]), float(com[1])),
        centre_fraction=_disc_fraction(mean, c, c, r),
        corner_fraction=_disc_fraction(mean, 0, 0, r),
        com_fraction=_disc_fraction(mean, c + com[0], c + com[1], r),
    )


def scan_centring(scan: Scan) -> Centring:
    """`measure_centring` of a `Scan`'s mean counts (bad pixels excluded)."""
    return measure_centring(
        mean_counts(scan.diffraction, amplitudes=True, bad_pixel_mask=scan.bad_pixel_mask)
    )


def _pct(f: float) -> str:
    return f"{100 * f:.2g}%" if f < 0.01 else f"{100 * f:.0f}%"


def describe_centring(c: Centring) -> str:
    """One line: centre of mass and where the counts are."""
    dy, dx = c.com_px
    r = DISC_FRACTION * c.n
    return (
        f"centre of mass ({dy:+.1f}, {dx:+.1f}) px from the array centre "
        f"[{c.n // 2}, {c.n // 2}]; {_pct(c.centre_fraction)} of the mean counts lie within "
        f"{r:.4g} px of the centre, {_pct(c.corner_fraction)} within {r:.4g} px of the corners"
    )


def centring_warning(c: Centring, source: str) -> str | None:
    """A warning naming ``source`` when the zero order clearly is not centred, else None."""
    if not c.looks_shifted:
        return None
    n, (dy, dx) = c.n, c.com_px
    far = FAR_FRACTION * n
    axes = tuple(ax for ax, d in zip((-2, -1), (dy, dx), strict=True) if abs(d) > far)
    where = {
        (-2, -1): "at the array corners",
        (-2,): "at the top/bottom edges",
        (-1,): "at the left/right edges",
    }.get(axes, "far from the array centre")
    if axes == (-2, -1):
        cause = (
            "they are probably stored in FFT order, zero frequency at [0, 0] (saved after "
            "np.fft.ifftshift, or simulated with an unshifted FFT). "
            "Fix: store np.fft.fftshift(patterns, axes=(-2, -1))."
        )
    elif axes:
        cause = (
            f"they are probably shifted by half a pattern along axis {axes[0]}. "
            f"Fix: store np.fft.fftshift(patterns, axes={axes[0]})."
        )
    else:
        cause = "crop or shift the patterns so that the zero order sits at the array centre."
    r = DISC_FRACTION * n
    near = "the corners" if axes == (-2, -1) else "it"
    share = c.corner_fraction if axes == (-2, -1) else c.com_fraction
    return (
        f"{source}: the diffraction patterns look uncentred: the mean pattern's centre of "
        f"mass sits at ({dy:+.1f}, {dx:+.1f}) px from the array centre [{n // 2}, {n // 2}] "
        f"({where}); {_pct(share)} of the mean counts lie within {r:.4g} px of {near} and "
        f"only {_pct(c.centre_fraction)} within {r:.4g} px of the centre. The data contract "
        f"(docs/data_contract.md) puts the zero frequency at [N//2, N//2]; {cause} "
        "Trained or reconstructed as they are, they fit poorly (a Poisson deviance far "
        "above its photon-noise floor) and no refinement fixes that."
    )


def wrap_warning(text: str, width: int = 100) -> str:
    """``text`` as an indented ``WARNING:`` paragraph for terminal summaries."""
    return textwrap.fill("WARNING: " + text, width=width, subsequent_indent="  ")
