"""The object's low-frequency phase from the diffraction patterns' centres of mass.

A phase gradient ``grad phi`` under the probe tilts the exit wave and moves its
far-field intensity: the centre of mass of pattern ``j`` (in detector pixels from
the zero frequency, ``k_j``) is, to first order, ``N / (2 pi)`` times the
probe-intensity-weighted mean of ``grad phi`` around ``r_j`` (plus the probe's own
tilt, the same for every pattern, and a term from the object's amplitude gradient
under a curved probe, which the PIE passes that follow correct). Integrating the
gradients over the scan ("integrated centre of mass", iCoM / iDPC in electron
microscopy) gives the object's phase smoothed by the probe, at once for the whole
scan.

The scan prior (`physics.prior_scan`) starts from a flat phase, and its passes
move the phase by about a probe width per pass: on large scans the low spatial
frequencies of the phase are far from converged after the few passes inference
can afford. Starting from the iCoM phase (``start_phase='com'``) gives them from
the start (docs/benchmarks.md).

The centre of mass is exactly the exit wave's mean phase gradient,
``sum |P|^2 |O|^2 (grad phi_P + grad phi_O) / sum |P|^2 |O|^2``. The probe's own term is
the same for every pattern only when its phase is flat where it is bright or the
object's amplitude is uniform; under a probe with a curved phase (``phi_P ~ a r^2``)
it adds about ``C grad log |O|^2``, ``C`` the probe's `probe_phase_curvature` matrix:
the object's amplitude structure reads as phase. Real, defocused probes have
``C`` of several radians (the real X-ray-laser probe 7.65, the measured Siemens star's
about 12; the simulator's default disk 0.15), and there the com start is worse than
the flat one (`COM_CURVATURE_LIMIT`; docs/benchmarks.md).

The integration is a weighted least-squares fit of ``phi`` on a grid ``factor``
pixels apart: the gradients are spread over the grid with the binned probe
intensity as weight (as stitching does), and ``phi`` minimises the weighted misfit
of its finite differences to them (conjugate gradients; memory of a few grid-sized
vectors, whatever the scan). The grid is then interpolated bilinearly to the canvas.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from torch import Tensor

log = logging.getLogger(__name__)

GRID_CELLS_PER_PATCH = 8
"""The integration grid has this many cells across a patch (``factor = N // 8``)."""
CG_TOLERANCE = 1e-6
"""Relative residual of the conjugate-gradient solve."""
LIT_FRACTION = 1e-3
"""Grid cells with less than this fraction of the largest spread weight carry no data."""
COM_CURVATURE_LIMIT = 1.5
"""Radians of `probe_phase_curvature` above which the com start is not to be trusted:
the scan prior logs a warning. Measured (`benchmarks/bench_prior_start.py`): the com
start's prior beat the flat one's phase up to C = 1.6 and lost from C = 2.2 on."""


def probe_phase_curvature(probe: Tensor) -> float:
    """Radians: how much the phase of ``probe`` (``(N, N)`` or ``(M, N, N)`` modes)
    curves where it is bright, the largest absolute eigenvalue of the symmetric part of
    ``C_ab = sum |P|^2 d_a phi (u_b - c_b) / sum |P|^2`` (``u`` pixel positions, ``c``
    the intensity centroid; ``|P|^2 grad phi = Im(conj(P) grad P)``, central
    differences; modes summed). A phase tilt gives 0; a quadratic phase ``a r^2``
    gives ``2 a`` times the intensity's variance along an axis. The centres of mass
    read an object amplitude gradient ``grad log |O|^2`` as a phase gradient of about
    ``C grad log |O|^2`` (module docstring)."""
    p = torch.as_tensor(probe).detach().to(torch.complex128).cpu()
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"probe must be (N, N) or (M, N, N); found {tuple(p.shape)}")
    inten = p.real.square() + p.imag.square()
    total = float(inten.sum())
    if not total > 0:
        raise ValueError("probe_phase_curvature: the probe has no intensity")
    n = p.shape[-1]
    u = torch.arange(n, dtype=torch.float64) - n / 2
    cy = float((inten.sum((0, 2)) * u).sum()) / total
    cx = float((inten.sum((0, 1)) * u).sum()) / total
    flux = []  # |P|^2 d_a phi along y, then x
    for dim in (-2, -1):
        d = (torch.roll(p, -1, dim) - torch.roll(p, 1, dim)) / 2
        flux.append((p.conj() * d).imag.sum(0))
    uy, ux = (u - cy)[:, None], (u - cx)[None, :]
    c = torch.tensor([[float((flux[0] * uy).sum()), float((flux[0] * ux).sum())],
                      [float((flux[1] * uy).sum()), float((flux[1] * ux).sum())]]) / total
    return float(torch.linalg.eigvalsh((c + c.T) / 2).abs().max())


def centre_of_mass_gradients(amplitudes: Tensor, valid: Tensor | None = None) -> Tensor:
    """``(n, 2)`` float64 phase gradients ``[d/dy, d/dx]`` in radians per pixel from the
    intensity centres of mass of ``amplitudes (n, N, N)`` (zero frequency at ``N // 2``,
    as `physics.propagation.far_field` lays them out).

    ``valid`` ``(N, N)``: good detector pixels; a pixel counts only where its mirror
    through the zero frequency is good too, so a uniform pattern has its centre at
    zero whatever the mask (with ``N`` even, the unpaired frequency ``-N/2`` is left
    out for the same reason). Patterns without counts get zero gradient."""
    if amplitudes.ndim != 3 or amplitudes.shape[-1] != amplitudes.shape[-2]:
        raise ValueError(f"expected amplitudes (n, N, N); found {tuple(amplitudes.shape)}")
    n = amplitudes.shape[-1]
    inten = amplitudes.detach().to(torch.float64).square()
    # with N even the first row and column (frequency -N/2) have no mirror: left out
    counted = torch.ones(n, n, dtype=torch.bool, device=inten.device)
    if n % 2 == 0:
        counted[0, :] = False
        counted[:, 0] = False
    if valid is not None:
        v = valid.to(inten.device).bool()
        if tuple(v.shape) != (n, n):
            raise ValueError(f"valid must be ({n}, {n}); found {tuple(v.shape)}")
        mirror = torch.roll(torch.flip(v, (0, 1)), shifts=(1 - n % 2, 1 - n % 2), dims=(0, 1))
        counted &= v & mirror
    inten = inten * counted
    k = torch.arange(n, dtype=torch.float64, device=inten.device) - n // 2
    total = inten.sum((-2, -1))
    ky = (inten.sum(-1) * k).sum(-1)
    kx = (inten.sum(-2) * k).sum(-1)
    safe = total.clamp_min(1e-300)
    grad = torch.stack([ky / safe, kx / safe], -1) * (2 * math.pi / n)
    return torch.where((total > 0)[:, None], grad, torch.zeros_like(grad)).cpu()


def integrated_phase(gradients: Tensor | np.ndarray, local_px: Tensor | np.ndarray,
                     shape: tuple[int, int], probe_intensity: Tensor, *,
                     factor: int | None = None) -> Tensor:
    """``(H, W)`` float32 phase on a canvas whose gradient, averaged under the probe at
    each position, best matches ``gradients`` (`centre_of_mass_gradients`, ``(n, 2)``).

    ``local_px`` ``(n, 2)``: the probe centres on the canvas (pixel ``[0, 0]`` at 0);
    every ``N x N`` window must lie inside ``shape``. ``probe_intensity`` ``(N, N)``:
    the weight each window spreads its gradient with. ``factor``: the grid spacing in
    pixels (default ``N // GRID_CELLS_PER_PATCH``, at least 1). The mean gradient over
    the scan (the probe's own tilt, and any global phase ramp) is removed; the phase's
    weighted mean is zero. Pixels far from every position get the nearest grid values."""
    g = torch.as_tensor(np.asarray(gradients, dtype=np.float64))
    pos = np.asarray(torch.as_tensor(local_px).cpu().numpy(), dtype=np.float64)
    n_pat = pos.shape[0] if pos.ndim == 2 else -1
    if pos.ndim != 2 or pos.shape[1] != 2 or tuple(g.shape) != (n_pat, 2):
        raise ValueError(f"integrated_phase: gradients and positions must both be (n, 2); "
                         f"found {tuple(g.shape)} and {pos.shape}")
    if not (np.all(np.isfinite(pos)) and bool(torch.isfinite(g).all())):
        raise ValueError("integrated_phase: gradients and positions must be finite")
    h, w = int(shape[0]), int(shape[1])
    n = int(probe_intensity.shape[-1])
    f = max(1, n // GRID_CELLS_PER_PATCH) if factor is None else int(factor)
    if f < 1:
        raise ValueError(f"integrated_phase: factor must be >= 1; found {factor!r}")
    if n_pat == 0:
        return torch.zeros(h, w)
    g = g - g.mean(0)
    # the probe intensity summed over f x f blocks: each window's spreading kernel
    kern = torch.nn.functional.avg_pool2d(probe_intensity.detach().float().cpu()[None, None],
                                          f, ceil_mode=True)[0, 0].double()
    m = kern.shape[-1]
    hb, wb = -(-h // f) + m, -(-w // f) + m
    corner = np.rint((pos - n / 2.0) / f).astype(np.int64)
    corner = np.clip(corner, 0, [hb - m, wb - m])
    ar = np.arange(m)
    cells = ((corner[:, 0, None, None] + ar[:, None]) * wb
             + corner[:, 1, None, None] + ar[None, :]).reshape(-1)
    kw = kern.numpy().reshape(-1)
    weight = np.bincount(cells, np.tile(kw, n_pat), minlength=hb * wb)
    gy = np.bincount(cells, (kw[None, :] * g[:, 0].numpy()[:, None]).reshape(-1), minlength=hb * wb)
    gx = np.bincount(cells, (kw[None, :] * g[:, 1].numpy()[:, None]).reshape(-1), minlength=hb * wb)
    top = max(float(weight.max()), 1e-300)
    lit = weight > LIT_FRACTION * top
    gy = np.where(lit, gy / np.maximum(weight, 1e-300), 0.0).reshape(hb, wb)
    gx = np.where(lit, gx / np.maximum(weight, 1e-300), 0.0).reshape(hb, wb)
    wmap = (weight / top).reshape(hb, wb)
    phi = _fit_differences(gy, gx, wmap, f)
    return _to_canvas(phi, (h, w), f)


def _fit_differences(gy: np.ndarray, gx: np.ndarray, wmap: np.ndarray, f: int,
                     maxiter: int | None = None) -> np.ndarray:
    """``phi (hb, wb)`` minimising ``sum w (phi[i+1] - phi[i] - f g_mid)^2`` along both
    axes (``w`` the smaller weight of the two cells, ``g_mid`` their mean gradient).
    Conjugate gradients stop after ``maxiter`` steps (default ``20 (hb + wb) + 200``);
    if they have not converged by then, the estimate they reached is used and a warning
    logged."""
    hb, wb = gy.shape
    idx = np.arange(hb * wb).reshape(hb, wb)
    rows, cols, vals, rhs = [], [], [], []
    r = 0
    for a, b, ga, gb, wa, wbb in (
        (idx[:-1, :], idx[1:, :], gy[:-1, :], gy[1:, :], wmap[:-1, :], wmap[1:, :]),
        (idx[:, :-1], idx[:, 1:], gx[:, :-1], gx[:, 1:], wmap[:, :-1], wmap[:, 1:]),
    ):
        wt = np.minimum(wa, wbb).reshape(-1)
        ok = wt > LIT_FRACTION
        s = np.sqrt(wt[ok])
        k = int(ok.sum())
        rows += [np.arange(r, r + k)] * 2
        cols += [b.reshape(-1)[ok], a.reshape(-1)[ok]]
        vals += [s, -s]
        rhs.append(s * f * 0.5 * (ga.reshape(-1)[ok] + gb.reshape(-1)[ok]))
        r += k
    if r == 0:
        return np.zeros((hb, wb))
    d = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(r, hb * wb))
    # a small pull towards zero fixes the free constant (and cells without data)
    normal = (d.T @ d + 1e-6 * sp.eye(hb * wb)).tocsr()
    b = d.T @ np.concatenate(rhs)
    steps = 20 * (hb + wb) + 200 if maxiter is None else int(maxiter)
    phi, info = spla.cg(normal, b, rtol=CG_TOLERANCE, maxiter=steps)
    if info != 0:
        rel = float(np.linalg.norm(normal @ phi - b) / max(float(np.linalg.norm(b)), 1e-300))
        log.warning("integrated centre-of-mass phase: conjugate gradients did not reach a "
                    "relative residual of %g in %d steps on a %dx%d grid (%.2g); using the "
                    "estimate reached.", CG_TOLERANCE, steps, hb, wb, rel)
    phi = phi.reshape(hb, wb)
    wsum = max(float(wmap.sum()), 1e-300)
    return phi - float((phi * wmap).sum()) / wsum


def _to_canvas(phi: np.ndarray, shape: tuple[int, int], f: int) -> Tensor:
    """The grid ``phi`` (node ``(i, j)`` at canvas pixel ``(i f + (f - 1) / 2, ...)``)
    interpolated bilinearly to ``shape``."""
    hb, wb = phi.shape
    yy = (torch.arange(shape[0], dtype=torch.float64) - (f - 1) / 2.0) / f
    xx = (torch.arange(shape[1], dtype=torch.float64) - (f - 1) / 2.0) / f
    gy, gx = torch.meshgrid(yy / max(hb - 1, 1) * 2 - 1, xx / max(wb - 1, 1) * 2 - 1,
                            indexing="ij")
    grid = torch.stack([gx, gy], -1)[None]
    out = torch.nn.functional.grid_sample(torch.from_numpy(phi)[None, None], grid,
                                          mode="bilinear", padding_mode="border",
                                          align_corners=True)
    return out[0, 0].float()
