"""Far-field propagation: the one FFT convention of the package.

``far_field(x) = fftshift(fft2(x, norm="ortho"))`` over the last two axes: the
zero frequency sits at ``[N // 2, N // 2]`` and the transform is unitary, so
``sum |x|^2 == sum |far_field(x)|^2`` (Parseval).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def far_field(exit_wave: Tensor) -> Tensor:
    """Unitary 2-D FFT with the zero frequency centred."""
    return torch.fft.fftshift(torch.fft.fft2(exit_wave, norm="ortho"), dim=(-2, -1))


def back_propagate(wave: Tensor) -> Tensor:
    """Inverse of `far_field`."""
    return torch.fft.ifft2(torch.fft.ifftshift(wave, dim=(-2, -1)), norm="ortho")


def diffracted_intensity(patches: Tensor, probe: Tensor) -> Tensor:
    """Expected counts ``sum_m |far_field(probe_m * patch)|^2``.

    Parameters
    ----------
    patches
        ``(..., N, N)`` complex object patches.
    probe
        ``(M, N, N)`` complex probe modes (incoherent).
    """
    exit_waves = patches.unsqueeze(-3) * probe  # (..., M, N, N)
    field = far_field(exit_waves)
    return (field.real.square() + field.imag.square()).sum(dim=-3)


def subpixel_probes(probe_hat: Tensor, frac: Tensor) -> Tensor:
    """Probes shifted by sub-pixel offsets (Fourier shift theorem): ``P(r - f)``.

    ``probe_hat`` is ``fft2`` of the ``(M, N, N)`` probe, ``frac (..., 2)`` the
    offsets ``[fy, fx]``; returns ``(..., M, N, N)``.
    """
    n = probe_hat.shape[-1]
    freq = torch.fft.fftfreq(n, device=probe_hat.device)
    ramp_y = torch.exp((-2j * math.pi) * frac[..., 0, None] * freq)  # (..., N)
    ramp_x = torch.exp((-2j * math.pi) * frac[..., 1, None] * freq)
    ramp = ramp_y[..., :, None] * ramp_x[..., None, :]  # (..., N, N)
    return torch.fft.ifft2(probe_hat * ramp.unsqueeze(-3))


def shifted_probe_intensity(patches: Tensor, probe: Tensor, frac: Tensor) -> Tensor:
    """Expected counts ``sum_m |far_field(P_m(r - f) * patch)|^2`` of whole-pixel
    windows seen through the probe shifted by each pattern's sub-pixel remainder.

    ``patches (..., N, N)``, ``probe (M, N, N)``, ``frac (..., 2)`` (cast to the
    probe's precision); differentiable in all three.
    """
    probes = subpixel_probes(torch.fft.fft2(probe), frac.to(probe.real.dtype))
    field = far_field(patches.unsqueeze(-3) * probes)  # (..., M, N, N)
    return (field.real.square() + field.imag.square()).sum(dim=-3)
