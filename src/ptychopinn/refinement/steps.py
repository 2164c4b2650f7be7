"""The refinement objective and its update steps, in torch.

Owns: the per-batch data term (`batch_objective`), the reported Poisson NLL,
the closed-form global intensity scale (`ml_intensity_scale`) and the
preconditioned object/probe steps (`pie_step`).

Preconditioned step. With the amplitude (variance-stabilised Poisson) data
term ``L = sum (|Psi| - sqrt(k))^2`` torch's gradient of the object is
``2 sum_j E_j^T[conj(P) (psi_j - psi'_j)]`` where ``psi'`` is the exit wave
whose far field has the measured modulus. Dividing by the illumination
``sum_j E_j^T |P|^2`` (regularised as in rPIE:
``(1 - alpha) illum + alpha max(illum)``) and taking half of it is the
parallel (mini-batch) PIE update; ``step = 1`` is the full PIE step. The probe
is updated the same way with the roles of object and probe swapped. The
illumination is the batch's own (``"batch"``) or the whole scan's times the
batch's share of the positions (``"scan"``, `scan_illumination`): the
illumination a batch has on average, smooth where the batch's own has the
random gaps and pile-ups of a few random positions. Divided by the scan's, the
batch's step is an unbiased estimate of the whole scan's preconditioned step
(divided by its own, a ratio of two random sums, it is not), but it overshoots
where the batch's positions pile up, so its length is solved by least squares
(`least_squares_step`).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ptychopinn.physics.geometry import extract_patches, place_patches, whole_pixel_windows
from ptychopinn.physics.losses import poisson_nll
from ptychopinn.physics.propagation import diffracted_intensity, shifted_probe_intensity

Fit = Literal["amplitude", "poisson"]
Subpixel = Literal["bilinear", "probe_shift"]

_TINY = 1e-12


def model_counts(
    obj: Tensor, probe: Tensor, positions: Tensor, subpixel: Subpixel = "probe_shift"
) -> tuple[Tensor, Tensor]:
    """``(lam, patches)``: ``(B, N, N)`` expected counts of the probe at ``positions``
    and the object patches they see, with ``subpixel``'s model of fractional
    positions (see `batch_objective`). Differentiable in all three tensors."""
    n = probe.shape[-1]
    if subpixel == "probe_shift":
        centres, _ = whole_pixel_windows(positions.detach(), n)
        patches = extract_patches(obj, centres, n)
        # the remainder keeps the positions' gradient (the window is a constant)
        return shifted_probe_intensity(patches, probe, positions - centres), patches
    patches = extract_patches(obj, positions, n)
    return diffracted_intensity(patches, probe), patches


def data_term(lam: Tensor, counts: Tensor, valid: Tensor | None, fit: Fit) -> Tensor:
    """Summed (not averaged) data term whose gradient drives the object.

    ``"amplitude"``: ``sum (sqrt(lam) - sqrt(k))^2`` (bounded gradient; to first
    order half the Poisson gradient at every pixel). ``"poisson"``:
    ``sum lam - k log lam``.
    """
    if fit == "amplitude":
        r = torch.sqrt(lam.clamp_min(_TINY)) - torch.sqrt(counts)
        term = r.square()
    else:
        term = lam - counts * torch.log(lam.clamp_min(_TINY))
    if valid is not None:
        term = term * valid
    return term.sum()


def batch_objective(
    obj: Tensor,
    probe: Tensor,
    positions: Tensor,
    counts: Tensor,
    valid: Tensor | None = None,
    fit: Fit = "poisson",
    subpixel: Subpixel = "probe_shift",
) -> tuple[Tensor, Tensor, Tensor]:
    """Data term of one batch and its expected counts.

    Parameters
    ----------
    obj
        ``(H, W)`` complex object.
    probe
        ``(M, N, N)`` complex probe modes.
    positions
        ``(B, 2)`` probe centres ``[y, x]`` in the object frame.
    counts
        ``(B, N, N)`` measured photon counts.
    valid
        ``(N, N)`` 1 for good detector pixels, 0 for bad ones (or None).
    fit
        ``"poisson"`` or ``"amplitude"`` (see `data_term`).
    subpixel
        How a fractional position is modelled: ``"probe_shift"`` takes the
        integer window nearest the position and shifts the probe by the
        remainder (Fourier shift theorem, as the simulator and the physics
        prior do: exact for a band-limited probe); ``"bilinear"`` interpolates
        the object (`extract_patches`). The far-field intensities agree up to
        the interpolation's smoothing; the probe shift does not low-pass the
        object and its adjoint puts updates on exact pixels.

    Returns
    -------
    ``(loss, lam, patches)``: the summed data term (differentiable with
    respect to ``obj``, ``probe`` and ``positions``), the expected counts and
    the object patches.
    """
    lam, patches = model_counts(obj, probe, positions, subpixel)
    return data_term(lam, counts, valid, fit), lam, patches


def reported_nll(lam: Tensor, counts: Tensor, valid: Tensor | None) -> float:
    """The package's normalised Poisson NLL (`physics.losses.poisson_nll`)."""
    with torch.no_grad():
        return float(poisson_nll(lam, counts, valid))


def count_sums(
    obj: Tensor,
    probe: Tensor,
    positions: Tensor,
    counts: Tensor,
    valid: Tensor | None,
    subpixel: Subpixel = "probe_shift",
) -> tuple[float, float]:
    """``(sum k, sum I)`` of a batch over the valid pixels (float64 sums)."""
    lam, _ = model_counts(obj, probe, positions, subpixel)
    if valid is not None:
        lam, counts = lam * valid, counts * valid
    return float(counts.sum(dtype=torch.float64)), float(lam.sum(dtype=torch.float64))


def ml_intensity_scale(sum_counts: float, sum_expected: float) -> float:
    """Poisson ML factor ``c`` of ``lam = c I``: ``sum(k) / sum(I)``."""
    if not sum_expected > 0:
        return 1.0
    return max(sum_counts, _TINY) / sum_expected


def rpie_denominator(weight: Tensor, alpha: float) -> Tensor:
    """``(1 - alpha) w + alpha max(w)``: the regularised illumination."""
    return (1.0 - alpha) * weight + alpha * weight.max().clamp_min(_TINY)


def object_illumination(probe: Tensor, positions: Tensor, shape: tuple[int, int]) -> Tensor:
    """``sum_j E_j^T sum_m |P_m|^2`` over a batch of positions, ``(H, W)`` real."""
    ill = (probe.real.square() + probe.imag.square()).sum(0)
    return place_patches(ill.expand(positions.shape[0], *ill.shape), positions, shape)


def scan_illumination(probe: Tensor, positions: Tensor, shape: tuple[int, int],
                      chunk: int = 256) -> Tensor:
    """`object_illumination` of every position of a scan, ``(H, W)`` real, summed over
    chunks of ``chunk`` positions (bounded memory for large scans)."""
    total = None
    for s in range(0, positions.shape[0], chunk):
        part = object_illumination(probe, positions[s : s + chunk], shape)
        total = part if total is None else total + part
    return total if total is not None else probe.real.new_zeros(shape)


def probe_illumination(patches: Tensor) -> Tensor:
    """``sum_j |O_j|^2`` of a batch of object patches ``(B, N, N)``, ``(N, N)`` real."""
    return (patches.real.square() + patches.imag.square()).sum(0)


def least_squares_step(grad: Tensor, denom: Tensor, weight: Tensor) -> float:
    """Length of the step ``grad / (2 denom)`` that best fits the batch's exit-wave
    targets to first order: ``sum(|g|^2 / denom) / sum(|g|^2 weight / denom^2)``, with
    ``weight`` the batch's own illumination (as LSQML solves its step lengths).

    The step changes each exit wave by the probe times the step; its least-squares
    length against the targets ``psi'`` (whose residual the gradient is) is this ratio.
    With ``denom = weight`` (the PIE step without regularisation) it is 1; where the
    step is divided by less illumination than the batch's own it is shorter.
    """
    g2 = grad.real.square() + grad.imag.square()
    num = (g2 / denom).sum()
    den = (g2 * weight / denom.square()).sum()
    # one device sync; 1 where the gradient (or the illumination) is zero
    return float(torch.where(den > 0, num / den.clamp_min(1e-30), torch.ones_like(den)))


def pie_step(param: Tensor, grad: Tensor, denom: Tensor, step: float) -> None:
    """In place ``param -= step * grad / (2 denom)`` (the PIE update)."""
    param.sub_(grad / (2.0 * denom) * step)


def looks_like_counts(counts: np.ndarray) -> bool:
    """Whether ``counts`` can be photon counts: every value below 1000 within 0.05
    of an integer (float32 amplitudes squared round larger counts). False for
    normalised or noise-free intensities, whose count statistics are unknown."""
    low = np.asarray(counts)[np.asarray(counts) < 1000.0]
    return not (low.size and float(np.abs(low - np.rint(low)).max()) > 0.05)


def counts_per_photon(amplitudes: np.ndarray, bad_pixels: np.ndarray | None = None,
                      chunk: int = 512) -> float:
    """Mean expected count of the pixel a detected photon lands in.

    ``sum k (k - 1) / sum k`` over the valid pixels of all patterns, with
    ``k = amplitudes ** 2`` the measured counts: under Poisson noise
    ``E[k (k - 1)] = lam ** 2``, so this estimates ``sum lam ** 2 / sum lam``
    without bias, a count-weighted mean of the expected counts. Below about 1
    the data are photon-sparse: most photons land alone in their pixel and the
    measured modulus ``sqrt(k)`` (0, 1, 1.41...) is mostly noise. Summed in
    float64 over chunks of ``chunk`` patterns (bounded memory). NaN when the
    data are not photon counts (`looks_like_counts`) or hold no counts.
    """
    valid = None if bad_pixels is None else ~np.asarray(bad_pixels, bool)
    num = den = 0.0
    for s in range(0, amplitudes.shape[0], chunk):
        k = np.square(amplitudes[s : s + chunk], dtype=np.float64)
        if valid is not None:
            k = k * valid
        if not looks_like_counts(k):
            return float("nan")
        num += float((k * (k - 1.0)).sum())
        den += float(k.sum())
    return num / den if den > 0 else float("nan")



_DEV_TABLE_MAX = 200.0
_DEV_TABLE_SIZE = 400


@functools.lru_cache(maxsize=1)
def _expected_deviance_table() -> np.ndarray:
    """``E[lam - k log lam - k + k log k]`` for ``k ~ Poisson(lam)`` on a grid uniform
    in ``log lam`` from 1e-4 to `_DEV_TABLE_MAX` (computed once, on first use)."""
    from scipy.special import gammaln

    vals = np.empty(_DEV_TABLE_SIZE)
    for i, lam in enumerate(np.geomspace(1e-4, _DEV_TABLE_MAX, _DEV_TABLE_SIZE)):
        k = np.arange(int(lam + 12.0 * np.sqrt(lam) + 30.0))
        pmf = np.exp(k * np.log(lam) - lam - gammaln(k + 1.0))
        vals[i] = float((pmf * (lam - k * np.log(lam) - k + k * np.log(np.maximum(k, 1)))).sum())
    vals.setflags(write=False)
    return vals


def expected_deviance(lam: Tensor) -> Tensor:
    """Expected half Poisson deviance per pixel, ``E[dev]`` with ``k ~ Poisson(lam)``.

    ``dev = lam - k log lam - k + k log k`` is the per-pixel term of
    `physics.losses.poisson_nll`; at the true object its mean is this
    expectation (about 1/2 for bright pixels, less for dim ones), so it is the
    noise floor of the refinement's reported NLL: a fit below it explains noise.
    Tabulated for ``1e-4 <= lam <= 200``; above, ``1/2 + 1/(12 lam)``; below,
    ``-lam log lam``.
    """
    vals = torch.tensor(_expected_deviance_table(), dtype=torch.float32, device=lam.device)
    lo, hi = math.log(1e-4), math.log(_DEV_TABLE_MAX)
    step = (hi - lo) / (_DEV_TABLE_SIZE - 1)  # the grid is uniform in log(lam)
    lam32 = lam.to(torch.float32).clamp_min(1e-30)
    x = torch.log(lam32)
    u = ((x - lo) / step).clamp(0, _DEV_TABLE_SIZE - 1)
    j = u.floor().long().clamp(max=_DEV_TABLE_SIZE - 2)
    t = u - j
    table = vals[j] + t * (vals[j + 1] - vals[j])
    big = 0.5 + 1.0 / (12.0 * lam32.clamp_min(_DEV_TABLE_MAX))
    small = -lam32 * x  # k in {0, 1} dominate: E[dev] ~ -lam log lam
    return torch.where(x > hi, big, torch.where(x < lo, small, table))


def noise_floor_sums(lam: Tensor, counts: Tensor, valid: Tensor | None) -> tuple[float, float]:
    """``(sum E[dev], sum k)`` of a batch over the valid pixels (for the normalised
    noise floor)."""
    with torch.no_grad():
        e = expected_deviance(lam)
        if valid is not None:
            v = valid.expand_as(e)
            e, counts = e * v, counts * v
        return float(e.sum(dtype=torch.float64)), float(counts.sum(dtype=torch.float64))
