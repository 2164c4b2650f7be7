"""Far-field propagation: the one FFT convention of the package.

``far_field(x) = fftshift(fft2(x, norm="ortho"))`` over the last two axes: the
zero frequency sits at ``[N // 2, N // 2]`` and the transform is unitary, so
``sum |x|^2 == sum |far_field(x)|^2`` (Parseval).
"""

from __future__ import annotations

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
