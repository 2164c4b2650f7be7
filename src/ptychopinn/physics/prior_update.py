"""The scan prior's update arithmetic: each pattern's terms, one mini-batch's PIE
step with its damped amplitude, and the phase momentum between passes
(`physics.prior_scan.scan_error_reduction` runs them over a scan).

Per mini-batch of positions ``j``::

    psi_j = P E_j(O);  Psi_j = far_field(psi_j)
    Psi'_j = Psi_j * A_j / |Psi_j|                       (modulus constraint)
    d = sum_j E_j^T[conj(P) (back_propagate(Psi'_j) - psi_j)] / D
    D = (1 - alpha) sum_j E_j^T |P|^2 + alpha max(.)      (rPIE illumination)
    O <- O + d - (1 - beta) Re(d conj(O)) / |O|^2 O        (amplitude step beta)

The last line damps the part of each pixel's update along ``O`` (to first order
the change of ``|O|``) by ``beta = amplitude_step`` and keeps the part across it
(the change of ``arg O``) whole. With ``beta = 1`` it is plain mini-batch PIE.
Where the object's phase is strong, full steps write the errors of a not yet
converged phase into the amplitude as fine-grained texture that later passes
remove only slowly. Half steps (`ModelConfig.prior_amplitude_step`'s default)
raise the amplitude SSIM of the estimate alone after 4 passes from 0.66 to 0.76
on the default simulation with seed 5, 0.93 to 0.94 with seed 11 and 0.67 to
0.71 on a real-probe scan, and cost 0.005-0.008 on seeds 0 and 3, whose
amplitude is strongly textured; the phase is unchanged
(`benchmarks/bench_prior_step.py`, docs/benchmarks.md).

Phase momentum (`scan_error_reduction`'s ``phase_momentum`` ``eta`` > 0, `turn_on`):
after every pass but the last, each
pixel's phase change over the pass ``dphi = arg(O_after conj(O_before))`` feeds a
velocity ``v <- eta v + dphi`` and the object is turned by ``exp(i eta v)``: the
momentum of mPIE (Maiden, Johnson and Li 2017), on the phase only, so the
amplitude keeps its damped steps. From the flat start the phase converges
slowly (it starts at 0 everywhere and every pass moves it a fraction of the
way); the momentum carries each pass's progress on. With ``eta = 0.7`` the
estimate alone after 4 passes went from amplitude / phase SSIM 0.755 / 0.731 to
0.810 / 0.792 on the default simulation with seed 5 and from 0.912 / 0.660 to
0.914 / 0.735 with seed 7 (exploration; momentum on the whole complex update
instead raised the phase as much but lowered the amplitude by up to 0.06).
Where the data are noisy it carries noise on as well: `physics.prior_frc` uses
it only where the scan's two halves agree.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ptychopinn.physics.prior import MODULUS_EPS
from ptychopinn.physics.propagation import subpixel_probes

PASS_CACHE_LIMIT_BYTES = 256 << 20
"""Keep each pattern's shifted probes and amplitudes across passes up to this size."""


def pattern_terms(p_hat: Tensor, frac: Tensor, amps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(probes (B, M, N, N), power (B, N, N), amplitudes unshifted (B, N, N))`` of
    a batch of patterns: the probe shifted by each sub-pixel offset, its intensity
    summed over modes, and the measured amplitudes in FFT order."""
    probes = subpixel_probes(p_hat, frac)
    power = (probes.real.square() + probes.imag.square()).sum(-3)
    return probes, power, torch.fft.ifftshift(amps, dim=(-2, -1))


def probe_modes(probe: Tensor, device: torch.device, n: int) -> Tensor:
    """``(M, N, N)`` complex64 probe modes on ``device``, checked against the patterns' N."""
    p = probe.detach().to(device, torch.complex64)
    if p.ndim == 2:
        p = p.unsqueeze(0)
    if p.shape[-2:] != (n, n):
        raise ValueError(f"probe is {tuple(p.shape[-2:])} but the patterns are {(n, n)}")
    return p


def terms_fit(n_pat: int, n: int, modes: int) -> bool:
    """Whether `stacked_terms` of ``n_pat`` patterns fit `PASS_CACHE_LIMIT_BYTES`."""
    return n_pat * n * n * (8 * modes + 8) <= PASS_CACHE_LIMIT_BYTES


def stacked_terms(p_hat: Tensor, frac: Tensor, amps_of, n_pat: int) -> tuple[Tensor, ...]:
    """`pattern_terms` of patterns ``0 .. n_pat - 1`` (``frac`` their sub-pixel offsets,
    ``amps_of(rows)`` their amplitudes), 256 at a time, stacked."""
    parts = [pattern_terms(p_hat, frac[s : s + 256], amps_of(torch.arange(s, min(s + 256, n_pat))))
             for s in range(0, n_pat, 256)]
    return tuple(torch.cat(t) for t in zip(*parts, strict=True))


def pass_terms(amplitudes: Tensor, positions_px: Tensor | np.ndarray, probe: Tensor,
               frame: tuple[np.ndarray, tuple[int, int]], *,
               device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor] | None:
    """Every pattern's ``(shifted probes (n, M, N, N), their power (n, N, N), amplitudes in
    FFT order (n, N, N))`` for passes on the canvas ``frame`` (`scan_error_reduction`'s
    ``terms``: several estimates of parts of one scan on one frame share them), or None
    when they would take more than `PASS_CACHE_LIMIT_BYTES` (each estimate then computes
    its own, a batch at a time)."""
    if amplitudes.ndim != 3:
        raise ValueError(f"expected amplitudes (n, N, N); found {tuple(amplitudes.shape)}")
    n_pat, n, _ = amplitudes.shape
    p = probe_modes(probe, torch.device(device) if device is not None else probe.device, n)
    if not terms_fit(n_pat, n, p.shape[0]):
        return None
    pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
    frac, _ = window_corners(torch.from_numpy(pos - np.asarray(frame[0], dtype=np.float64))
                              .to(p.device), n)
    amps = amplitudes.detach()
    return stacked_terms(torch.fft.fft2(p), frac,
                          lambda rows: amps[rows].to(p.device, torch.float32), n_pat)


def window_corners(local: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``(frac (n, 2) float32 in [-0.5, 0.5], corner (n, 2) long)`` of N x N windows centred
    at ``local`` canvas positions: the integer window's top-left corner, and the
    sub-pixel remainder that shifts each pattern's probe instead."""
    top = local - n / 2.0
    corner = torch.round(top)
    return (top - corner).to(torch.float32), corner.to(torch.long)


def object_correction(obj_w: Tensor, probes: Tensor, a_u: Tensor, keep: Tensor | None,
                      moments: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """``sum_m conj(P_m) (back_propagate(modulus-constrained far field) - psi_m)`` of a
    batch: ``obj_w (B, N, N)`` windows, ``probes (B, M, N, N)``, ``a_u`` amplitudes in
    FFT order. One mode (the common case) runs in place, without the mode sums.

    With ``moments`` (`physics.com_phase.moment_weights(centred=False)`, ``(N * N, 3)``)
    it also returns the predicted intensities' ``(B, 3)`` moment sums (their total and
    first moments, in the moments' dtype), read off the far field it computes anyway;
    else None."""
    if probes.shape[1] != 1:
        psi = obj_w.unsqueeze(1) * probes
        field = torch.fft.fft2(psi, norm="ortho")
        inten = (field.real.square() + field.imag.square()).sum(-3)
        sums = _moment_sums(inten, moments)
        ratio = _modulus_ratio(inten, a_u, keep)
        upd = torch.fft.ifft2(field * ratio.unsqueeze(-3), norm="ortho") - psi
        return (probes.conj() * upd).sum(-3), sums
    p = probes[:, 0]
    psi = obj_w * p
    field = torch.fft.fft2(psi, norm="ortho")
    # |field| by hand: complex abs() is about twice slower on the CPU
    inten = field.real.square() + field.imag.square()
    sums = _moment_sums(inten, moments)
    ratio = _modulus_ratio(inten, a_u, keep)
    back = torch.fft.ifft2(field.mul_(ratio), norm="ortho")
    return back.sub_(psi).mul_(p.conj()), sums


def _moment_sums(inten: Tensor, moments: Tensor | None) -> Tensor | None:
    if moments is None:
        return None
    return inten.reshape(inten.shape[0], -1).to(moments.dtype) @ moments


def _modulus_ratio(inten: Tensor, a_u: Tensor, keep: Tensor | None) -> Tensor:
    """``a_u / |field|`` (1 at ``keep``'s pixels), in place on the intensity ``inten``."""
    ratio = torch.div(a_u, inten.sqrt_().clamp_min_(MODULUS_EPS), out=inten)
    if keep is not None:
        ratio.masked_fill_(keep, 1.0)
    return ratio


def damp_amplitude(step: Tensor, obj: Tensor, beta: float) -> Tensor:
    """``step - (1 - beta) Re(step conj(obj)) / |obj|^2 obj``: the update with its
    part along ``obj`` (the amplitude change, to first order) scaled by ``beta``;
    ``step`` itself when ``beta == 1``. Works in place on ``step``."""
    if beta == 1.0:
        return step
    # fused real arithmetic on the real / imaginary views: ~3x faster than complex ops
    sr, si, o_r, o_i = step.real, step.imag, obj.real, obj.imag
    along = (sr * o_r).addcmul_(si, o_i)
    power = (o_r * o_r).addcmul_(o_i, o_i).clamp_min_(MODULUS_EPS**2)
    along.div_(power).mul_(1.0 - beta)
    sr.addcmul_(o_r, along, value=-1.0)
    si.addcmul_(o_i, along, value=-1.0)
    return step


def turn_on(flat: Tensor, before: Tensor, velocity: Tensor, momentum: float,
             chunk: int = 1 << 20) -> None:
    """Phase momentum after a pass, in place and a chunk of pixels at a time (a large
    canvas needs no whole-canvas temporaries): ``velocity <- momentum velocity + dphi``
    with ``dphi`` each pixel's phase change since ``before`` (wrapped to [-pi, pi)), then
    ``flat *= exp(i momentum velocity)``."""
    for s in range(0, flat.numel(), chunk):
        o, v = flat[s : s + chunk], velocity[s : s + chunk]
        turn = torch.angle(o).sub_(before[s : s + chunk]).add_(math.pi)
        turn = turn.remainder_(2 * math.pi).sub_(math.pi)
        v.mul_(momentum).add_(turn)
        o.mul_(torch.polar(torch.ones_like(v), v * momentum))


def push_on(flat: Tensor, before: Tensor, velocity: Tensor, momentum: float,
            chunk: int = 1 << 20) -> None:
    """Object momentum after a pass, in place and a chunk of pixels at a time:
    ``velocity <- momentum velocity + (flat - before)``, then ``flat += momentum velocity``
    (heavy-ball momentum on the complex object; ``before`` is the canvas at the pass's
    start)."""
    for s in range(0, flat.numel(), chunk):
        o, v = flat[s : s + chunk], velocity[s : s + chunk]
        v.mul_(momentum).add_(o).sub_(before[s : s + chunk])
        o.add_(v, alpha=momentum)


def momentum_turn(after: Tensor, before: Tensor, momentum: float) -> tuple[Tensor, Tensor]:
    """The phase momentum's turn after a first pass from ``before`` to ``after`` (both
    ``(H, W)`` canvases): ``(the turned canvas, the phase velocity)``. Continuing from them
    with ``first_pass=1, phase_velocity=`` the velocity and the same ``phase_momentum``
    gives the estimate that ran every pass with the momentum (`scan_error_reduction`);
    continuing from ``after`` itself without momentum gives the one that ran none."""
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1); found {momentum}")
    if after.shape != before.shape:
        raise ValueError(f"momentum_turn: shapes differ: {tuple(after.shape)}, {tuple(before.shape)}")
    turned = after.detach().to(torch.complex64).clone().contiguous()
    flat = turned.view(-1)
    velocity = torch.zeros(flat.shape, device=flat.device)
    if momentum:
        start = torch.angle(before.detach().to(flat.device, torch.complex64).reshape(-1))
        turn_on(flat, start, velocity, momentum)
    return turned, velocity.view(turned.shape)
