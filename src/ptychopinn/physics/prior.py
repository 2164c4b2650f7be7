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

``neighbourhood_error_reduction`` does the same jointly for a pattern and its
nearest scan neighbours: their patches share one small object canvas (the
overlap constraint of ptychography, restricted to a neighbourhood), each
projection updates the canvas with every member's correction divided by the
summed probe intensity, and the estimate is read back at the target pattern's
position. Four neighbours lift the within-patch correlation of the amplitude
with the truth from ~0.2-0.55 to ~0.65-0.97 on the simulated scans
(phase ~0.7 -> ~0.97; exploration measurements, `tests/test_prior.py` checks
> 0.8 on its scan); the cost is K times the single-pattern one. Its flat
start is the measured brightness (`flat_start`: ``t**2 = sum A**2 / sum |P|**2``,
Parseval, averaged over the members) instead of 1, which raised the stitched
prior's amplitude SSIM from 0.83 to 0.90 on a seed-11 scan whose object
transmits ~0.57 on average (an exploration run; `bench_prior.py` reports the
stitched prior of today's recipe). (The single-pattern path keeps O = 1: bundles
trained on it expect that input.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ptychopinn.physics.propagation import subpixel_probes

MODULUS_EPS = 1e-6
"""Model amplitudes are clamped to at least this before the modulus ratio."""


def _checked_inputs(amplitudes: Tensor, probe: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
    """Detached float32 amplitudes and ``(M, N, N)`` complex64 probe; ValueError if the
    iteration count is negative or the probe's size differs from the patterns'."""
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
    return amps, p


def flat_start(amplitudes: Tensor, power: Tensor) -> Tensor:
    """The flat start of the projections: ``(..., 1, 1)`` transmission ``t`` with
    ``t**2 = sum A**2 / sum |P|**2`` (Parseval; 1 when the probe is dark).

    ``power`` is the summed probe intensity ``sum_m |P_m|**2`` (``(N, N)``, or
    per member with the same leading shape as ``amplitudes``).
    """
    num = amplitudes.square().sum((-2, -1), keepdim=True)
    den = power.sum((-2, -1), keepdim=True)
    t = (num / den.clamp_min(1e-30)).sqrt()
    return torch.where(den > 0, t, torch.ones_like(t))


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
    amps, p = _checked_inputs(amplitudes, probe, iterations)
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
            ratio = amps_u / model_amp.clamp_min(MODULUS_EPS)
            if not single:
                ratio = ratio.unsqueeze(-3)
            update = torch.fft.ifft2(field * ratio, norm="ortho") - psi
            obj = obj + (step[0] * update if single else (step * update).sum(-3))
    return obj


def exit_wave_correction(psi: Tensor, amps_u: Tensor, keep: Tensor | None = None) -> Tensor:
    """``back_propagate(modulus-constrained far field) - psi`` of exit waves.

    ``psi (..., M, N, N)`` exit waves of M incoherent modes; ``amps_u
    (..., N, N)`` measured amplitudes in unshifted frequency order; ``keep``
    marks (unshifted) detector pixels whose model amplitude is kept (bad pixels).
    """
    field = torch.fft.fft2(psi, norm="ortho")
    model_amp = (field.real.square() + field.imag.square()).sum(-3).sqrt()
    ratio = amps_u / model_amp.clamp_min(MODULUS_EPS)
    if keep is not None:
        ratio = torch.where(keep, torch.ones_like(ratio), ratio)
    return torch.fft.ifft2(field * ratio.unsqueeze(-3), norm="ortho") - psi


def neighbourhood_error_reduction(
    amplitudes: Tensor,
    offsets_px: Tensor,
    probe: Tensor,
    iterations: int,
    *,
    valid: Tensor | None = None,
    regularisation: float = 1e-3,
) -> Tensor:
    """Joint error-reduction estimate of a pattern's patch from it and its neighbours.

    Parameters
    ----------
    amplitudes
        ``(B, K, N, N)`` measured amplitudes in the probe's scale; member 0 of
        each row is the target pattern, members 1..K-1 its neighbours.
    offsets_px
        ``(B, K, 2)`` member positions ``[y, x]`` relative to the target (row
        ``[:, 0]`` is normally zero).
    probe
        ``(M, N, N)`` or ``(N, N)`` complex probe (modes incoherent).
    iterations
        Number of projections of every member (0 returns the flat start).
    valid
        Optional ``(N, N)`` mask of good detector pixels (bad pixels keep the
        model's amplitude; ignored when ``K == 1``).
    regularisation
        The update divides by ``sum |P|^2 + regularisation * max sum |P|^2``.

    Returns
    -------
    Tensor
        ``(B, N, N)`` complex64 patch at the target's position. With ``K == 1``
        this is exactly `error_reduction` of the target alone.
    """
    if amplitudes.ndim != 4 or offsets_px.shape != (*amplitudes.shape[:2], 2):
        raise ValueError(
            f"expected amplitudes (B, K, N, N) and offsets (B, K, 2); found "
            f"{tuple(amplitudes.shape)} and {tuple(offsets_px.shape)}"
        )
    if amplitudes.shape[1] == 1:  # the single-pattern prior (as bundles trained on it expect)
        return error_reduction(amplitudes[:, 0], probe, iterations)
    amps, p = _checked_inputs(amplitudes, probe, iterations)
    b, k, n, _ = amps.shape
    off = offsets_px.detach().to(torch.float64)
    span = int(math.ceil(float(off.abs().max()))) if off.numel() else 0
    m = n + 2 * span + 4
    # member windows on the canvas: integer corner i0 plus a fractional part f
    # that shifts the member's probe instead (P(r - f) on the integer grid)
    corner = off + (m - n) / 2.0
    i0 = torch.round(corner)
    frac = (corner - i0).to(torch.float32)  # (B, K, 2) in [-0.5, 0.5]
    i0 = i0.to(torch.long)
    ar = torch.arange(n, device=amps.device)
    base = (torch.arange(b, device=amps.device) * (m * m)).view(b, 1, 1, 1)
    index = (base + (i0[..., 0, None, None] + ar[:, None]) * m
             + (i0[..., 1, None, None] + ar[None, :])).reshape(-1)
    probes = subpixel_probes(torch.fft.fft2(p), frac)  # (B, K, M, N, N)
    power = (probes.real.square() + probes.imag.square()).sum(-3)
    norm = torch.zeros(b * m * m, device=amps.device).index_add_(0, index, power.reshape(-1))
    norm = norm.view(b, m, m)
    norm = norm + regularisation * norm.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    step = (probes.conj() / norm.reshape(-1)[index].view(b, k, 1, n, n)).contiguous()
    amps_u = torch.fft.ifftshift(amps, dim=(-2, -1))
    keep = None
    if valid is not None:
        keep = ~torch.fft.ifftshift(valid.to(amps.device).bool(), dim=(-2, -1))
    if keep is None:
        start = flat_start(amps, power)
    else:  # bad pixels out of the brightness (their share of the power assumed average)
        good = (~keep).to(amps.dtype)
        start = flat_start(amps_u * good, power) * (good.numel() / good.sum().clamp_min(1)).sqrt()
    start = start.mean(dim=(1, 2, 3))  # (B,): the members' mean
    canvas = start[:, None].expand(b, m * m).reshape(-1).to(torch.complex64)
    with torch.no_grad():
        for _ in range(iterations):
            obj = torch.view_as_complex(
                torch.view_as_real(canvas).index_select(0, index).view(b, k, 1, n, n, 2)
            )
            update = exit_wave_correction(obj * probes, amps_u, keep)
            # the pixel-wise normalised (ePIE-with-overlap) update of the shared canvas
            delta = (step * update).sum(-3)
            torch.view_as_real(canvas).index_add_(0, index, torch.view_as_real(delta).reshape(-1, 2))
    from ptychopinn.physics.geometry import extract_patches

    centre = (off[:, :1] + m / 2.0).to(torch.float32)
    return extract_patches(canvas.view(b, m, m), centre, n)[:, 0]


def prior_channels(estimate: Tensor) -> Tensor:
    """``(B, C, N, N)`` complex estimate -> ``(B, 2C, N, N)`` real network input (re, im)."""
    return torch.cat([estimate.real, estimate.imag], dim=1)
