"""Probe preparation for the model: support mask, small-probe mode, smoothing; and how
featureless a probe's far field is (`far_field_tail`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

TAIL_RADIUS_PX = 4.0
"""`far_field_tail`'s default radius, in detector pixels."""
FEATURELESS_TAIL = 3.2e-2
"""A probe whose `far_field_tail` is below this is featureless: a smooth beam (such as a
Gaussian) whose far field is a spot a few pixels wide. The simulator's Gaussian probe
gives 5.2e-6 (a 16 px beam 9.7e-3, 14 px 2.9e-2, 13.5 px 3.3e-2 to 3.7e-2, 12 px 6.8e-2),
its default disk 8.0e-2 (disks of 32-40 px 3.5e-2 to 4.0e-2, 42-56 px 3.1e-2 to 1.0e-2;
at Fresnel number 1, 30 px 3.5e-2 and 32-56 px 2.6e-2 to 3.8e-3), a zone plate 1.0 and the
real X-ray-laser probe 0.97 (`benchmarks/bench_probe_features.py`,
`bench_prior_overshoot.py`, docs/benchmarks.md). 1e-3 until the twentieth session, 2e-2
until the twenty-first: raised so 16-18 px and then 14 px beams get the over-relaxed
recipe (a 14 px beam's network with the plain prior scored amplitude SSIM 0.564, with the
recipe 0.775, LSQML-100 0.773). The wide disks below it are left to
`models.prior_recipe.overshoot_check`, which keeps them plain where the over-relaxation
overshoots (ratio 4.2-222 at 1e6 photons on most objects) and lets the strongly defocused
ones through (1.2-1.4), whose prior the recipe improves."""


def far_field_tail(probe: Tensor, radius_px: float = TAIL_RADIUS_PX) -> float:
    """The fraction of the probe's far-field energy (``|fft2(P)|^2`` summed over modes)
    farther than ``radius_px`` detector pixels from its centroid.

    Fresnel defocus multiplies the far field by a phase only, so this does not depend on
    it. ``probe``: ``(M, N, N)`` or ``(N, N)`` complex.
    """
    p = torch.as_tensor(probe).detach().to(torch.complex128)
    p = p.reshape(-1, *p.shape[-2:])
    ff = torch.fft.fftshift(torch.fft.fft2(p), dim=(-2, -1)).abs().square().sum(0)
    total = float(ff.sum())
    if not total > 0:
        raise ValueError("far_field_tail: the probe is zero")
    ff = ff / total
    yy, xx = torch.meshgrid(torch.arange(ff.shape[0], dtype=ff.dtype),
                            torch.arange(ff.shape[1], dtype=ff.dtype), indexing="ij")
    r = torch.hypot(yy - (ff * yy).sum(), xx - (ff * xx).sum())
    return float(ff[r > radius_px].sum())


def circular_mask(n: int, diameter: float, soft_px: float = 2.0) -> Tensor:
    """A soft-edged disk of ``diameter`` pixels centred at ``[n/2, n/2]``."""
    c = (n - 1) / 2.0
    yy, xx = torch.meshgrid(torch.arange(n) - c, torch.arange(n) - c, indexing="ij")
    r = torch.sqrt(yy**2 + xx**2)
    return torch.clamp((diameter / 2.0 - r) / soft_px + 0.5, 0.0, 1.0)


def gaussian_smooth(probe: Tensor, sigma: float) -> Tensor:
    """Smooth each probe mode with a Gaussian of ``sigma`` pixels (FFT filter)."""
    if sigma <= 0:
        return probe
    n = probe.shape[-1]
    f = torch.fft.fftfreq(n, dtype=torch.float64)
    g = torch.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return torch.fft.ifft2(torch.fft.fft2(probe) * g.to(probe.real.dtype)).to(probe.dtype)


def prepare_probe(
    probe: Tensor,
    *,
    probe_mask: bool = False,
    probe_big: bool = True,
    smoothing_sigma: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Apply the model's probe options; returns ``(probe (M,N,N), mask (N,N))``.

    ``probe_mask`` multiplies by a soft disk of diameter N; ``probe_big=False``
    keeps only the central disk of diameter N/2 (the original's small probe).
    """
    if probe.dim() == 2:
        probe = probe[None]
    n = probe.shape[-1]
    mask = torch.ones(n, n)
    if probe_mask:
        mask = mask * circular_mask(n, n)
    if not probe_big:
        mask = mask * circular_mask(n, n / 2)
    out = gaussian_smooth(probe, smoothing_sigma) * mask.to(probe.real.dtype)
    return out, mask
