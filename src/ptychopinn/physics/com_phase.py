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
of its finite differences to them (a sparse LU of the normal equations, factorised
once per scan by `PhaseIntegrator`: about 70 MB for 10^5 patterns). The grid is then
interpolated bilinearly to the canvas.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from scipy.signal import convolve2d
from torch import Tensor

GRID_CELLS_PER_PATCH = 8
"""The integration grid has this many cells across a patch (``factor = N // 8``)."""
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
    inten = amplitudes.detach().to(torch.float64).square()
    return intensity_centre_gradients(inten, moment_weights(inten.shape[-1], valid,
                                                            dtype=torch.float64,
                                                            device=inten.device))


def moment_weights(n: int, valid: Tensor | None = None, *, centred: bool = True,
                   dtype: torch.dtype = torch.float64,
                   device: torch.device | str | None = None) -> Tensor:
    """``(N * N, 3)``: the pixels counted (`centre_of_mass_gradients`' rule for
    ``valid``, given in the centred layout) and their frequencies ``k_y``, ``k_x`` where
    counted, so that an intensity's flattened ``(B, N * N)`` rows times these are its
    total and first moments (`intensity_centre_gradients`). ``centred=False``: the
    FFT's own layout (zero frequency at ``[0, 0]``; `torch.fft.ifftshift` of the
    centred), for intensities straight from ``fft2``."""
    counted = torch.ones(n, n, dtype=torch.bool)
    # with N even the first row and column (frequency -N/2) have no mirror: left out
    if n % 2 == 0:
        counted[0, :] = False
        counted[:, 0] = False
    if valid is not None:
        v = valid.detach().cpu().bool()
        if tuple(v.shape) != (n, n):
            raise ValueError(f"valid must be ({n}, {n}); found {tuple(v.shape)}")
        mirror = torch.roll(torch.flip(v, (0, 1)), shifts=(1 - n % 2, 1 - n % 2), dims=(0, 1))
        counted &= v & mirror
    k = torch.arange(n, dtype=torch.float64) - n // 2
    c = counted.to(torch.float64)
    w = torch.stack([c, c * k[:, None], c * k[None, :]], -1)
    if not centred:
        w = torch.fft.ifftshift(w, dim=(0, 1))
    return w.reshape(n * n, 3).to(device=device, dtype=dtype)


def intensity_centre_gradients(intensity: Tensor, weights: Tensor) -> Tensor:
    """``(B, 2)`` float64 phase gradients (radians per pixel) from intensities
    ``(B, N, N)`` in the layout ``weights`` (`moment_weights`) was made for: the
    centres of mass times ``2 pi / N``; zero for a pattern without counts. The sums
    run in ``weights``' dtype (one matrix product over the patterns)."""
    n = intensity.shape[-1]
    return moment_gradients(intensity.reshape(-1, n * n).to(weights.dtype) @ weights, n)


def moment_gradients(moments: Tensor, n: int) -> Tensor:
    """`intensity_centre_gradients` from the sums already taken: ``moments (B, 3)``,
    the intensities' rows times `moment_weights` (total, first moments) of ``N x N``
    patterns, on any device -> ``(B, 2)`` float64 on the CPU."""
    s = moments.double()
    total = s[:, 0]
    grad = s[:, 1:] / total.clamp_min(1e-300)[:, None] * (2 * math.pi / n)
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
    weighted mean is zero. Pixels far from every position get the nearest grid values.
    One call of a `PhaseIntegrator`, which integrates many gradient sets of one scan
    for the cost of one."""
    return PhaseIntegrator(local_px, shape, probe_intensity, factor=factor)(gradients)


class PhaseIntegrator:
    """`integrated_phase` for one scan's positions, canvas and probe, and any number of
    gradient sets: the spreading kernel, the grid's weights and the least-squares
    operator (a weighted graph Laplacian on the grid) are built and factorised once
    (sparse LU; `scipy.sparse.linalg.splu`), so each further call costs a spreading,
    two triangular solves and the interpolation to the canvas. The scan prior's
    centre-of-mass correction integrates once per pass with one of these.

    The factor's size grows about as ``cells log cells`` with the grid's cells
    (``canvas pixels / factor^2``): about 70 MB, factorised in about half a second, on
    the canvas of a 10^5-pattern N=64 scan (`benchmarks/bench_com_correction.py`)."""

    def __init__(self, local_px: Tensor | np.ndarray, shape: tuple[int, int],
                 probe_intensity: Tensor, *, factor: int | None = None) -> None:
        pos = np.asarray(torch.as_tensor(local_px).cpu().numpy(), dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2:
            raise ValueError(f"integrated_phase: positions must be (n, 2); found {pos.shape}")
        if not np.all(np.isfinite(pos)):
            raise ValueError("integrated_phase: positions must be finite")
        self.shape = (int(shape[0]), int(shape[1]))
        self.n_patterns = pos.shape[0]
        n = int(probe_intensity.shape[-1])
        f = max(1, n // GRID_CELLS_PER_PATCH) if factor is None else int(factor)
        if f < 1:
            raise ValueError(f"integrated_phase: factor must be >= 1; found {factor!r}")
        self.factor = f
        self._lu = None  # nothing to solve until there are patterns and differences
        self.grid_cells = 0
        """Cells of the integration's grid (``factor`` pixels apart; 0 without patterns)."""
        if self.n_patterns == 0:
            return
        # the probe intensity summed over f x f blocks: each window's spreading kernel
        kern = torch.nn.functional.avg_pool2d(probe_intensity.detach().float().cpu()[None, None],
                                              f, ceil_mode=True)[0, 0].double().numpy()
        m = kern.shape[-1]
        h, w = self.shape
        hb, wb = -(-h // f) + m, -(-w // f) + m
        corner = np.rint((pos - n / 2.0) / f).astype(np.int64)
        corner = np.clip(corner, 0, [hb - m, wb - m])
        self._kern = kern
        self._at = corner[:, 0] * (wb - m + 1) + corner[:, 1]  # on the corners' grid
        self._corners = (hb - m + 1, wb - m + 1)
        weight = self._spread(np.ones(self.n_patterns))
        top = max(float(weight.max()), 1e-300)
        self._lit = weight > LIT_FRACTION * top
        self._weight = np.maximum(weight, 1e-300)
        self._wmap = weight / top
        self.grid_cells = int(self._wmap.size)
        self._wsum = max(float(self._wmap.sum()), 1e-300)
        self._edges, d = _difference_operator(self._wmap)
        self._d = d
        if d is not None:
            # a small pull towards zero fixes the free constant (and cells without data)
            normal = (d.T @ d + 1e-6 * sp.eye(hb * wb)).tocsc()
            self._lu = spla.splu(normal, permc_spec="MMD_AT_PLUS_A")

    @property
    def factor_nonzeros(self) -> int:
        """Stored entries of the normal equations' LU factors (L and U; 0 when there is
        nothing to solve): its memory is about 12 bytes each."""
        return 0 if self._lu is None else int(self._lu.L.nnz + self._lu.U.nnz)

    def _spread(self, values: np.ndarray) -> np.ndarray:
        """``(hb, wb)``: each position's value spread over its window with the kernel
        (a full convolution of the values, placed at the windows' corners)."""
        impulses = np.bincount(self._at, values, minlength=self._corners[0] * self._corners[1])
        return convolve2d(impulses.reshape(self._corners), self._kern, mode="full")

    def __call__(self, gradients: Tensor | np.ndarray) -> Tensor:
        g = np.asarray(torch.as_tensor(gradients).detach().cpu().numpy(), dtype=np.float64)
        if tuple(g.shape) != (self.n_patterns, 2):
            raise ValueError(f"integrated_phase: gradients and positions must both be (n, 2); "
                             f"found {tuple(g.shape)} and ({self.n_patterns}, 2)")
        if not np.all(np.isfinite(g)):
            raise ValueError("integrated_phase: gradients must be finite")
        if self.n_patterns == 0:
            return torch.zeros(self.shape)
        g = g - g.mean(0)
        gy = np.where(self._lit, self._spread(g[:, 0]) / self._weight, 0.0)
        gx = np.where(self._lit, self._spread(g[:, 1]) / self._weight, 0.0)
        if self._lu is None:
            phi = np.zeros_like(gy)
        else:
            rhs = []
            for (a, b, s), grid in zip(self._edges, (gy, gx), strict=True):
                flat = grid.reshape(-1)
                rhs.append(s * self.factor * 0.5 * (flat[a] + flat[b]))
            phi = self._lu.solve(self._d.T @ np.concatenate(rhs)).reshape(gy.shape)
        phi = phi - float((phi * self._wmap).sum()) / self._wsum
        return _to_canvas(phi, self.shape, self.factor)


def _difference_operator(wmap: np.ndarray):
    """The weighted finite differences along both axes of a ``(hb, wb)`` grid:
    ``[(a, b, s) for y, x]`` (the cell pairs ``b = a + 1`` along the axis where both
    are lit, and ``s`` the square root of the smaller weight of the two) and the sparse
    operator ``d`` with rows ``s (phi[b] - phi[a])`` (None when no pair is lit). The
    phase minimises ``|d phi - s f g_mid|^2``, ``g_mid`` the pair's mean gradient."""
    hb, wb = wmap.shape
    idx = np.arange(hb * wb).reshape(hb, wb)
    edges, rows, cols, vals = [], [], [], []
    r = 0
    for a, b, wa, wbb in ((idx[:-1, :], idx[1:, :], wmap[:-1, :], wmap[1:, :]),
                          (idx[:, :-1], idx[:, 1:], wmap[:, :-1], wmap[:, 1:])):
        wt = np.minimum(wa, wbb).reshape(-1)
        ok = wt > LIT_FRACTION
        s = np.sqrt(wt[ok])
        k = int(ok.sum())
        a_ok, b_ok = a.reshape(-1)[ok], b.reshape(-1)[ok]
        edges.append((a_ok, b_ok, s))
        rows += [np.arange(r, r + k)] * 2
        cols += [b_ok, a_ok]
        vals += [s, -s]
        r += k
    if r == 0:
        return edges, None
    d = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(r, hb * wb))
    return edges, d


def _to_canvas(phi: np.ndarray, shape: tuple[int, int], f: int) -> Tensor:
    """The grid ``phi`` (node ``(i, j)`` at canvas pixel ``(i f + (f - 1) / 2, ...)``)
    interpolated bilinearly to ``shape`` (pixels beyond the outer nodes take the edge's
    values), one axis at a time: no canvas-sized coordinate grids, only the float32
    canvas and temporaries of its size (`benchmarks/bench_com_correction.py` records a
    call's peak memory)."""

    def axis(size: int, nodes: int) -> tuple[Tensor, Tensor]:
        t = ((torch.arange(size, dtype=torch.float64) - (f - 1) / 2.0) / f).clamp_(0, nodes - 1)
        i0 = t.floor().long().clamp_(max=max(nodes - 2, 0))
        return i0, (t - i0).clamp_(0, 1)

    g = torch.from_numpy(np.ascontiguousarray(phi, dtype=np.float64))
    hb, wb = g.shape
    iy, wy = axis(int(shape[0]), hb)
    ix, wx = axis(int(shape[1]), wb)
    y1 = (iy + 1).clamp_(max=hb - 1)
    rows = (g[iy] * (1 - wy)[:, None] + g[y1] * wy[:, None]).float()  # (H, wb)
    x1 = (ix + 1).clamp_(max=wb - 1)
    out = rows[:, ix].mul_((1 - wx).float())
    return out.add_(rows[:, x1].mul_(wx.float()))
