"""Probe preparation for the model: support mask, small-probe mode, smoothing."""

from __future__ import annotations

import math

import torch
from torch import Tensor


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
