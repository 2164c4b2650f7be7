"""A physics first guess of each pattern's object patch (no learned weights).

``error_reduction`` runs a few single-pattern projections with the known probe
(ePIE-style updates of one patch against its own measured amplitudes, starting
from a flat object of transmission 1):

    psi_m = P_m O;  Psi_m = far_field(psi_m)
    Psi'_m = Psi_m * A / sqrt(sum_m |Psi_m|^2)               (modulus constraint)
    O <- O + sum_m conj(P_m) (back_propagate(Psi'_m) - psi_m) / max sum_m |P_m|^2

With a structured (defocused) probe one pattern already pins much of the patch:
on the default simulated scan ten projections give a within-patch correlation
with the truth of ~0.55 (amplitude) and ~0.7 (phase). The PINN generators
take this estimate (real and imaginary parts) as their input when
``ModelConfig.prior_iterations > 0``, so the network learns to *correct* a
physical estimate in the object's own frame instead of inverting the
diffraction from scratch; training is still self-supervised through the full
physics and the overlap constraint. The start (O = 1) fixes the global phase
of the estimate, so neighbouring estimates share a phase reference.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-6


def error_reduction(amplitudes: Tensor, probe: Tensor, iterations: int) -> Tensor:
    """Single-pattern error-reduction estimate of the object patches.

    Parameters
    ----------
    amplitudes
        ``(..., N, N)`` measured amplitudes (sqrt of counts) in the probe's
        scale, i.e. ``amplitudes**2 ~ sum_m |far_field(P_m O)|**2``.
    probe
        ``(M, N, N)`` or ``(N, N)`` complex probe (modes incoherent).
    iterations
        Number of projections (0 returns the flat start, ones).

    Returns
    -------
    Tensor
        ``(..., N, N)`` complex64 patches (no gradient is tracked).
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0; found {iterations}")
    amps = amplitudes.detach().to(torch.float32)
    p = probe.detach().to(torch.complex64)
    if p.ndim == 2:
        p = p.unsqueeze(0)
    if p.shape[-2:] != amps.shape[-2:]:
        raise ValueError(
            f"probe is {tuple(p.shape[-2:])} but the patterns are {tuple(amps.shape[-2:])}"
        )
    power = (p.real.square() + p.imag.square()).sum(0)
    step = p.conj() / power.max().clamp_min(1e-30)
    obj = torch.ones(amps.shape, dtype=torch.complex64, device=amps.device)
    # work in unshifted frequency order: far_field is fftshift(fft2(., ortho)),
    # so shifting the measured amplitudes once is the same as shifting every field
    amps_u = torch.fft.ifftshift(amps, dim=(-2, -1))
    single = p.shape[0] == 1
    with torch.no_grad():
        for _ in range(iterations):
            if single:
                psi = obj * p[0]
                field = torch.fft.fft2(psi, norm="ortho")
                model_amp = field.abs()
            else:
                psi = obj.unsqueeze(-3) * p  # (..., M, N, N)
                field = torch.fft.fft2(psi, norm="ortho")
                model_amp = (field.real.square() + field.imag.square()).sum(-3).sqrt()
            ratio = amps_u / model_amp.clamp_min(_EPS)
            if not single:
                ratio = ratio.unsqueeze(-3)
            update = torch.fft.ifft2(field * ratio, norm="ortho") - psi
            obj = obj + (step[0] * update if single else (step * update).sum(-3))
    return obj


def prior_channels(estimate: Tensor) -> Tensor:
    """``(B, C, N, N)`` complex estimate -> ``(B, 2C, N, N)`` real network input (re, im)."""
    return torch.cat([estimate.real, estimate.imag], dim=1)
