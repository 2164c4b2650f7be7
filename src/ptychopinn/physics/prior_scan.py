"""The physics first guess of a whole scan: joint projections on one object canvas.

`scan_error_reduction` runs a few passes of mini-batch parallel PIE over every
pattern of a scan with the known probe, starting from a flat object at the
measured brightness, and returns the object canvas. Each pattern's prior is
then the canvas patch at its position (`models.scan_prior.ScanPrior`). Each
mini-batch is one PIE update with a damped amplitude step; `physics.prior_update`
holds that arithmetic, each pattern's terms (shared across passes and estimates:
`pass_terms`) and the phase momentum.

Unlike `physics.prior.neighbourhood_error_reduction` (one small canvas per
pattern and its K - 1 neighbours, so every pattern is projected K times per
iteration), every pattern is projected once per pass and every overlap of the
scan constrains the estimate; the mini-batches (``batch_size`` positions in a
fixed, seeded order; `ModelConfig.prior_batch_size`, 64 by default) make each
pass close to a full ePIE pass: smaller batches update the canvas more often per
pass and converge further in the same passes, at a cost per batch. Work and memory per
batch are O(batch N^2): updates touch only the batch's windows, so the canvas
of a 10^5-pattern scan costs its own size and nothing per pattern.

Phase momentum (``phase_momentum`` > 0) carries each pass's phase change on to the
next, on the phase only (mPIE's momentum; `physics.prior_update`).

Object momentum (``object_momentum`` > 0) carries each pass's change of the whole complex
object on to the next (heavy-ball momentum, amplitude included; `physics.prior_update.push_on`):
under a Gaussian beam the passes converge slowly at every spatial frequency, and the
featureless recipe runs it (`config.schema.FEATURELESS_RECIPE`).

Centre-of-mass correction (``com_correction``): between every two passes, the
low spatial frequencies of the phase, which the passes move only about a probe width
per pass, are corrected at once. Each pattern's intensity centre of mass is the exit
wave's mean phase gradient (`physics.com_phase`); that of the pattern the estimate
predicts, ``|far_field(P E_j(O))|^2``, differs from the measured one, to first order,
by the probe-weighted mean gradient of the estimate's phase error, the probe's own
phase and the amplitude's share cancelling as far as the estimate's amplitude is
right. The differences are integrated over the scan (`com_phase.PhaseIntegrator`,
factorised once per run) and the object turned by `COM_CORRECTION_STEP` times the
result, where that lowers the canvas's amplitude misfit to the measured patterns (checked
on all of them, or on `COM_CHECK_PATTERNS` to twice as many spread over a larger scan).
The check matters at low dose under a curved probe, where the unchecked corrections wrecked the phase (a real
X-ray-laser probe, 3e3 photons per pattern: the prior's phase SSIM 0.03 after 4 passes
against 0.17 without corrections; the photon noise of the centres alone accounts for about
0.1 rad of integrated phase there, so most of it is likely the estimate's noisy amplitude
read as phase through the probe's curvature); at 1e5 photons the checked corrections gain
as the unchecked did (docs/benchmarks.md, `benchmarks/bench_com_check.py`). Unlike the
centre-of-mass start, the correction holds under curved (defocused) probes
(docs/benchmarks.md, `bench_prior_start.py`). The predicted centres are either computed
afresh before each correction (a forward FFT of every pattern) or, with ``com_from_passes``,
read off the far field each pattern's own mini-batch update computed in the pass before:
stale by less than a pass, for no FFT of their own (the check still predicts its patterns,
before and after the turn).

The start is the local measured brightness: each pattern's Parseval
transmission ``t_j = sqrt(sum A_j^2 / sum |P|^2)`` spread over the canvas with
the probe intensity as weight, so objects whose mean transmission differs from
1, or varies across the scan, start at the right level. The phase starts at 0,
which fixes the estimate's global phase for the whole scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ptychopinn.physics.com_phase import (
    PhaseIntegrator,
    centre_of_mass_gradients,
    intensity_centre_gradients,
    moment_gradients,
    moment_weights,
)
from ptychopinn.physics.geometry import accumulate_patches, extract_patches
from ptychopinn.physics.prior_update import (
    damp_amplitude,
    object_correction,
    pattern_terms,
    probe_modes,
    push_on,
    stacked_terms,
    terms_fit,
    turn_on,
    window_corners,
)

CANVAS_MARGIN_PX = 2
START_PHASES = ("flat", "com")
"""The phases the passes can start from (`scan_error_reduction`'s ``start_phase``)."""
COM_CORRECTION_STEP = 0.5
"""The fraction of each centre-of-mass correction that is applied (module docstring): on
simulated scans under the default disk, a zone plate and a real probe, at 625 and 2,500
patterns and 4 or 8 passes, whole corrections converged the large scans' phase furthest
but cost the real probe's 625-pattern scan at 8 passes (phase SSIM 0.733 against 0.765
without); halves gained everywhere in phase (exploration, fourteenth session)."""
COM_CHECK_PATTERNS = 64
"""A centre-of-mass correction turns the canvas only when that lowers its amplitude misfit
to the measured patterns, checked on every pattern of scans of fewer than twice this many
and on every k-th in raster order (this many to twice as many) on larger ones. On 14
simulated scans at 4 and 16 passes the prior's amplitude SSIMs with 64 were those with 256
to within 0.001, its phase SSIMs within 0.016 (higher on 9 rows by up to 0.038, lower on 2),
for a fifth of the check's FFTs on 625 patterns: the check is 4 % (N=64) and 8 % (N=128)
of the default prior's time on 625 patterns (`benchmarks/bench_com_check.py --timing`; 20-23 %
with 256 in an unrecorded run), docs/benchmarks.md, thirty-sixth session (256 and 1024 in
the thirty-fifth)."""
MAX_STEP_SCALE = 4.0
"""The largest ``step_scale`` (`scan_error_reduction`'s over-relaxation) accepted."""
CLEAR_WHOLE_RATIO = 4
"""Clear the whole scratch canvas after a batch when it has at most this many times
the pixels of the batch's windows (else clear only the touched pixels)."""
UPDATE_WHOLE_RATIO = 1
"""Update every canvas pixel after a batch (plain elementwise ops) when the canvas has
at most this many times the pixels of the batch's windows, else gather and scatter
the windows' pixels (indexed ops, about 3x the cost per pixel)."""
PASS_CHUNK_BYTES = 2 << 20
"""A pass gathers its batches' window indices and pattern terms this many bytes at a time
(a chunk of its batches at once: fewer, larger ops than a gather per batch, the same
arithmetic)."""


@dataclass(frozen=True)
class ConvergeBlock:
    """One converge block of an FRC-filtered estimate's halves
    (`physics.prior_frc.frc_filtered_estimate`)."""

    passes: int
    """The halves' passes after the block."""
    agreement: float
    """Their `physics.prior_frc.agreement` after it."""
    rise: float
    """The agreement's rise over the block (negative: a fall)."""
    misfit_fall: float | None
    """The fraction by which it lowered the halves' held-out `pass_misfit` (negative:
    a rise), where that was read (plain passes whose agreement rose too little after a
    block it kept); else None."""
    kept: bool


@dataclass(frozen=True)
class ScanEstimate:
    """A scan's joint estimate: ``canvas (H, W)`` complex64 whose pixel
    ``[0, 0]`` is at ``origin_px`` in the positions' frame; ``illumination (H, W)``
    (when known) is the probe intensity summed over every pattern's window."""

    canvas: Tensor
    origin_px: np.ndarray
    illumination: Tensor | None = None
    passes: int | None = None
    """Passes the estimate ran (an FRC-filtered estimate: its halves'), when recorded."""
    agreement: float | None = None
    """An FRC-filtered estimate's half-scan `physics.prior_frc.agreement` after its first
    passes (what decided whether extra passes ran), or after the last converge passes it
    kept; None when not recorded or when the halves overlap too little to read it."""
    phase_momentum: float | None = None
    """The phase momentum an FRC-filtered estimate's passes ran with (0 where its halves
    did not agree), when recorded."""
    orders_agreement: float | None = None
    """A mean of mini-batch orders filtered by their FRC (`physics.prior_orders.filter_orders`):
    the `physics.prior_frc.agreement` of the even- and odd-numbered orders; None otherwise."""
    converge_blocks: tuple[ConvergeBlock, ...] = ()
    """An FRC-filtered estimate's converge blocks, each tried in turn until one is dropped
    (`physics.prior_frc.frc_filtered_estimate`): what each read and whether it was kept."""

    def patches(self, positions_px: Tensor | np.ndarray, n: int) -> Tensor:
        """``(..., N, N)`` patches at ``positions_px (..., 2)`` (the scan's frame)."""
        pos = torch.as_tensor(np.asarray(positions_px, dtype=np.float64))
        lead = pos.shape[:-1]
        local = pos.reshape(-1, 2) - torch.from_numpy(self.origin_px)
        out = extract_patches(self.canvas, local.to(self.canvas.device), n)
        return out.reshape(*lead, n, n)


def canvas_frame(
    positions_px: np.ndarray, n: int, integer_grid: bool = False
) -> tuple[np.ndarray, tuple[int, int]]:
    """Origin ``[y, x]`` and ``(H, W)`` of a canvas that holds every N x N window at
    ``positions_px`` (plus `CANVAS_MARGIN_PX`).

    The canvas grid is aligned with the first position in raster order (its
    fractional part is the origin's), so translating the scan, or listing its
    patterns in another order, leaves the estimate's pixels unchanged. With
    ``integer_grid`` it is aligned with the scan frame's pixels instead (whole
    origin), so whole-pixel windows of the scan frame are canvas pixels.
    """
    if integer_grid:
        lo = np.floor(positions_px.min(axis=0) - n / 2.0 + 1e-6) - CANVAS_MARGIN_PX
        hi = np.ceil(positions_px.max(axis=0) + n / 2.0 - 1e-6) + CANVAS_MARGIN_PX + 1
        return lo, (int(hi[0] - lo[0]), int(hi[1] - lo[1]))
    anchor = positions_px[np.lexsort((positions_px[:, 1], positions_px[:, 0]))[0]]
    rel = positions_px - anchor
    lo = np.floor(rel.min(axis=0) - n / 2.0 + 1e-6) - CANVAS_MARGIN_PX
    hi = np.ceil(rel.max(axis=0) + n / 2.0 - 1e-6) + CANVAS_MARGIN_PX + 1
    return anchor + lo, (int(hi[0] - lo[0]), int(hi[1] - lo[1]))


def scan_error_reduction(
    amplitudes: Tensor,
    positions_px: Tensor | np.ndarray,
    probe: Tensor,
    iterations: int,
    *,
    valid: Tensor | None = None,
    batch_size: int = 64,
    alpha: float = 0.1,
    seed: int = 0,
    device: torch.device | str | None = None,
    integer_grid: bool = False,
    amplitude_step: float = 1.0,
    frame: tuple[np.ndarray, tuple[int, int]] | None = None,
    start: Tensor | None = None,
    subset: np.ndarray | None = None,
    phase_momentum: float = 0.0,
    illumination: Tensor | None = None,
    terms: tuple[Tensor, Tensor, Tensor] | None = None,
    first_pass: int = 0,
    phase_velocity: Tensor | None = None,
    start_phase: str = "flat",
    com_correction: bool = False,
    step_scale: float = 1.0,
    settle_passes: int = 0,
    object_momentum: float = 0.0,
    com_from_passes: bool = False,
    com_check: bool = True,
) -> ScanEstimate:
    """Joint mini-batch PIE estimate of a whole scan's object.

    Parameters
    ----------
    amplitudes
        ``(n, N, N)`` measured amplitudes in the probe's scale
        (``amplitudes**2 ~ sum_m |far_field(P_m O)|**2``); may stay on the CPU
        while the projections run on ``device``.
    positions_px
        ``(n, 2)`` probe centres ``[y, x]`` in pixels.
    probe
        ``(M, N, N)`` or ``(N, N)`` complex probe (modes incoherent).
    iterations
        Passes over every pattern (0 returns the flat start).
    valid
        Optional ``(N, N)`` mask of good detector pixels (bad pixels keep the
        model's amplitude and are left out of the brightness).
    batch_size, alpha
        Positions per update and the rPIE regularisation of the illumination.
    seed
        Seed of the fixed mini-batch order (the result is a pure function of
        the inputs and the seed, and does not depend on the order the patterns
        are listed in).
    device
        Where the canvas and projections live (default: the probe's device).
    integer_grid
        Align the canvas with the scan frame's whole pixels (see `canvas_frame`).
    amplitude_step
        In (0, 1]: the fraction of each update's amplitude part that is applied
        (module docstring; 1: plain PIE).
    frame
        ``(origin_px, (H, W))`` of the canvas to use instead of `canvas_frame`'s
        (e.g. the frame of a whole scan for an estimate from part of it, so the
        two share their pixels); every window must lie inside it.
    start
        ``(H, W)`` complex canvas to start the passes from instead of the flat
        start (needs ``frame``, whose shape it must have).
    subset
        Indices of the patterns (of ``amplitudes`` and ``positions_px``) to use, as
        if only they were given, in this order; their amplitudes are gathered a
        batch at a time, not copied whole (e.g. half of a large scan).
    phase_momentum
        In [0, 1): after every pass but the last, turn each pixel by this times its
        phase velocity (module docstring); 0: none.
    illumination
        ``(H, W)`` illumination of these patterns on ``frame`` when already known (an
        earlier estimate's, e.g. before a continuation from its ``start``): returned as
        it is instead of accumulated again (needs ``frame``, whose shape it must have).
    terms
        `pass_terms` of every pattern of ``amplitudes`` (all of them, whatever the
        ``subset``) on ``frame`` (needed): computed once for several estimates on one
        frame; the same estimate as without them.
    first_pass
        Where these passes start in a longer run with the same ``seed`` (a continuation
        from that run's canvas, given as ``start``): the batch orders of the passes
        before are drawn and skipped, so ``k`` passes and then ``n - k`` from their
        canvas with ``first_pass=k`` give the ``n``-pass estimate bit for bit.
    phase_velocity
        ``(H, W)`` phase velocity the momentum continues from (`momentum_turn`'s; default
        zero); needs ``frame`` and ``phase_momentum``.
    start_phase
        The phase of the start when the passes start from the measured brightness (no
        ``start``): ``'flat'`` (0 everywhere) or ``'com'`` (the integrated centres of mass
        of these patterns, `physics.com_phase`: the object's low-frequency phase at once).
    com_correction
        Before every pass of the run but its first (the passes before this call's count,
        ``first_pass``), turn the object by `COM_CORRECTION_STEP` times the integrated
        difference of the measured and the predicted patterns' centres of mass (module
        docstring); a run split into continuations is corrected as the whole run.
    step_scale
        In (0, `MAX_STEP_SCALE`]: every mini-batch's update (after its amplitude damping) is
        applied this many times over (over-relaxation; 1: plain PIE). Under a probe whose far
        field is a small spot (a Gaussian beam) the passes converge slowly and 3 converged
        them much further; under the default disk it makes them diverge
        (docs/benchmarks.md, `benchmarks/bench_prior_step_scale.py`).
    settle_passes
        Plain passes (step scale 1, no phase momentum) run after the ``iterations``, as part
        of the same run (their batch orders and centre-of-mass corrections continue it).
        Over-relaxed updates carry the photon noise of each batch's patterns into the canvas
        several times over; a few plain passes at the end average it out again (the module
        docstring of `models.prior_recipe`).
    object_momentum
        In [0, 1): after every pass of ``iterations`` but the last, each pixel's change over
        the pass feeds a complex velocity ``v <- eta v + dO`` and the object moves on by
        ``eta v`` (heavy-ball momentum on the whole complex object, amplitude included; the
        settling passes run without it; `physics.prior_update.push_on`). Where the passes
        converge slowly at every spatial frequency (a Gaussian beam on a scan that overlaps
        less) it carries each pass's progress on; 0: none.
    com_from_passes
        With ``com_correction``: read each pattern's predicted centre of mass off the far
        field its own mini-batch update computed in the pass before (stale by less than a
        pass) instead of predicting every pattern afresh before each correction (a forward
        FFT of the whole scan per pass, about 30 % of a 24-pass whole-scan prior); the first
        correction of a call with ``first_pass`` > 0 predicts afresh. The featureless
        recipe's whole-scan prior reads them so (`models.scan_prior.ScanPrior`).
    com_check
        With ``com_correction``: apply a correction only when it lowers the canvas's
        amplitude misfit to the measured patterns (every pattern's, or `COM_CHECK_PATTERNS`
        to twice as many spread over a larger scan; one forward FFT of those per
        correction, two with ``com_from_passes``). False: always (the correction before
        the thirty-fifth session; for comparisons).
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0; found {iterations}")
    if start_phase not in START_PHASES:
        raise ValueError(f"start_phase must be one of {START_PHASES}; found {start_phase!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; found {batch_size}")
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1]; found {alpha}")
    if not 0 < amplitude_step <= 1:
        raise ValueError(f"amplitude_step must be in (0, 1]; found {amplitude_step}")
    if not 0 < step_scale <= MAX_STEP_SCALE:
        raise ValueError(f"step_scale must be in (0, {MAX_STEP_SCALE}]; found {step_scale}")
    if not 0 <= phase_momentum < 1:
        raise ValueError(f"phase_momentum must be in [0, 1); found {phase_momentum}")
    if not 0 <= object_momentum < 1:
        raise ValueError(f"object_momentum must be in [0, 1); found {object_momentum}")
    if isinstance(settle_passes, bool) or int(settle_passes) != settle_passes or settle_passes < 0:
        raise ValueError(f"settle_passes must be an integer >= 0; found {settle_passes!r}")
    settle_passes = int(settle_passes)
    if amplitudes.ndim != 3:
        raise ValueError(f"expected amplitudes (n, N, N); found {tuple(amplitudes.shape)}")
    pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
    n_pat, n, _ = amplitudes.shape
    if pos.shape != (n_pat, 2) or not np.all(np.isfinite(pos)):
        raise ValueError(f"positions_px must be ({n_pat}, 2) and finite; found {pos.shape}")
    sel = None
    if subset is not None:
        sub = np.asarray(subset)
        if sub.ndim != 1 or (sub.size and (not np.issubdtype(sub.dtype, np.integer)
                                           or sub.min() < 0 or sub.max() >= n_pat)):
            raise ValueError(f"subset must be 1-D indices into the {n_pat} patterns; found "
                             f"{sub.dtype} of shape {sub.shape}")
        sel = torch.from_numpy(sub.astype(np.int64))
        pos, n_pat = pos[sub], int(sub.size)
    dev = torch.device(device) if device is not None else probe.device
    p = probe_modes(probe, dev, n)
    n_all = amplitudes.shape[0]
    if terms is not None and (len(terms) != 3 or tuple(terms[0].shape) != (n_all, p.shape[0], n, n)
                              or any(tuple(t.shape) != (n_all, n, n) for t in terms[1:])):
        raise ValueError(f"terms must be pass_terms of all {n_all} patterns "
                         f"({p.shape[0]} probe modes, {n}x{n}); found "
                         f"{[tuple(t.shape) for t in terms]}")
    start_canvas = start
    if start_canvas is not None and (frame is None or tuple(start_canvas.shape)
                                     != (int(frame[1][0]), int(frame[1][1]))):
        raise ValueError("start needs a frame of its shape; found start "
                         f"{tuple(start_canvas.shape)} and frame {None if frame is None else frame[1]}")
    if isinstance(first_pass, bool) or int(first_pass) != first_pass or first_pass < 0:
        raise ValueError(f"first_pass must be an integer >= 0; found {first_pass!r}")
    if phase_velocity is not None and not phase_momentum:
        raise ValueError("phase_velocity needs a phase_momentum to continue")
    for name, given in (("illumination", illumination), ("terms", terms),
                        ("phase_velocity", phase_velocity)):
        if given is not None and frame is None:
            raise ValueError(f"{name} needs the frame it was computed on")
    if frame is not None:
        origin = np.asarray(frame[0], dtype=np.float64).reshape(2)
        shape = (int(frame[1][0]), int(frame[1][1]))
        rel = pos - origin
        if n_pat and (np.any(rel - n / 2.0 < -1e-6) or np.any(rel[:, 0] + n / 2.0 > shape[0] - 1)
                      or np.any(rel[:, 1] + n / 2.0 > shape[1] - 1)):
            raise ValueError(f"frame {shape} at {origin.tolist()} does not hold every "
                             f"{n}x{n} window of the positions")
    elif n_pat:
        origin, shape = canvas_frame(pos, n, integer_grid)
    else:
        origin, shape = np.zeros(2), (n, n)
    local = torch.from_numpy(pos - origin).to(dev)
    ill = (p.real.square() + p.imag.square()).sum(0)  # (N, N)
    keep = None
    good = None
    if valid is not None:
        v = valid.to(dev).bool()
        keep = ~torch.fft.ifftshift(v, dim=(-2, -1))
        good = v.to(torch.float32)
    amps_cpu = amplitudes.detach()

    def batch_amps(rows: Tensor) -> Tensor:
        rows = rows.cpu() if sel is None else sel[rows.cpu()]
        return amps_cpu[rows.to(amps_cpu.device)].to(dev, torch.float32)

    for name, given in (("illumination", illumination), ("phase_velocity", phase_velocity)):
        if given is not None and tuple(given.shape) != shape:
            raise ValueError(f"{name} must have the frame's shape {shape}; found "
                             f"{tuple(given.shape)}")
    # the illumination unless given; and the flat start (the probe-weighted local
    # Parseval brightness) unless a start is given
    weight = torch.zeros(shape, device=dev) if illumination is None else illumination.to(dev)
    bright = torch.zeros(shape, device=dev) if start_canvas is None else None
    com = bright is not None and start_phase == "com"
    # corrections before every pass of the run but its first (``first_pass`` counts the
    # passes before this call's), so a run split into continuations corrects as a whole
    correcting = (bool(com_correction) and n_pat > 0 and iterations + settle_passes > 0
                  and first_pass + iterations + settle_passes > 1)
    grads = None  # the measured patterns' centres of mass, for either
    integrate = None  # their integration over the scan, factorised once for the run
    from_passes = correcting and bool(com_from_passes)
    if com or correcting:
        mask = None if good is None else good > 0
        grads = torch.cat([centre_of_mass_gradients(batch_amps(torch.arange(s, min(s + 256, n_pat))),
                                                    mask) for s in range(0, n_pat, 256)])
        integrate = PhaseIntegrator(local.cpu(), shape, ill.cpu())
    power = float(ill.sum())
    for s in range(0, n_pat if illumination is None or bright is not None else 0, 256):
        rows = torch.arange(s, min(s + 256, n_pat))
        w = ill.expand(rows.numel(), n, n).contiguous()
        if illumination is None:
            accumulate_patches(weight, w, local[rows])
        if bright is None:
            continue
        a = batch_amps(rows)
        if good is not None:
            num = (a.square() * good).sum((-2, -1)) * (good.numel() / good.sum().clamp_min(1))
        else:
            num = a.square().sum((-2, -1))
        t = (num / max(power, 1e-30)).sqrt()  # (B,)
        accumulate_patches(bright, w * t[:, None, None], local[rows])
    if bright is None:
        obj = start_canvas.detach().to(dev, torch.complex64).clone().contiguous()
    else:
        lit = weight > 1e-3 * float(weight.max().clamp_min(1e-30))
        mean_t = float(bright.sum() / weight.sum().clamp_min(1e-30)) if n_pat else 1.0
        flat = torch.where(lit, bright / weight.clamp_min(1e-30), torch.full_like(bright, mean_t))
        obj = flat.to(torch.complex64).contiguous()
        if com:
            phi = integrate(grads).to(dev)
            obj = torch.polar(flat, phi).to(torch.complex64).contiguous()
    if iterations + settle_passes == 0 or n_pat == 0:
        return ScanEstimate(obj, origin, weight)

    # integer windows; the sub-pixel part of each position shifts that pattern's
    # probe instead (P(r - f), by the Fourier shift theorem), as in
    # `physics.prior.neighbourhood_error_reduction`
    frac, corner = window_corners(local, n)
    ar = torch.arange(n, device=dev)
    width = shape[1]
    # a window's flat canvas indices: its top-left pixel's plus these (N * N) offsets
    offsets = (ar[:, None] * width + ar[None, :]).reshape(1, -1)
    top_left = corner[:, 0] * width + corner[:, 1]  # (n,)
    corner_y, corner_x = corner[:, 0].contiguous(), corner[:, 1].contiguous()
    p_hat = torch.fft.fft2(p)
    flat = obj.view(-1)
    num_c = torch.zeros_like(flat)
    den_c = torch.zeros(flat.shape, device=dev)
    # batches drawn from the patterns in raster order, so listing the same scan in
    # another order gives the same estimate
    raster = torch.from_numpy(np.lexsort((pos[:, 1], pos[:, 0]))).to(dev)
    gen = torch.Generator().manual_seed(int(seed))
    for _ in range(int(first_pass)):  # the orders of the passes this one continues
        torch.randperm(n_pat, generator=gen)
    m = p.shape[0]
    # each pattern's shifted probes, their power and its unshifted amplitudes are
    # the same in every pass: computed once when they fit PASS_CACHE_LIMIT_BYTES
    cache, cache_rows = None, None
    if terms is not None:  # every pattern's: looked up by the pattern's row in amplitudes
        cache = tuple(t.to(dev) for t in terms)
        cache_rows = None if sel is None else sel.to(dev)
    elif terms_fit(n_pat, n, m):
        cache = stacked_terms(p_hat, frac, batch_amps, n_pat)
    # the scratch sums are cleared after each batch: whole when the canvas is small
    # next to a batch's windows (a memset), else only the touched pixels; a canvas
    # no larger than a batch's windows is also updated whole (num is 0 off the batch)
    windows = min(batch_size, n_pat) * n * n
    clear_all = flat.numel() <= CLEAR_WHOLE_RATIO * windows
    update_all = flat.numel() <= UPDATE_WHOLE_RATIO * windows
    on_cpu = dev.type == "cpu"
    # patterns per chunk of a pass whose batches' indices and terms are gathered at once
    per_pattern = n * n * (8 + (8 * m + 8 if cache is not None else 0))
    chunk = batch_size * max(1, PASS_CHUNK_BYTES // (batch_size * per_pattern))
    # every N x N window of the canvases as a view: gathering a batch's windows from it
    # copies whole rows (2-3x faster than index_select of each pixel on the CPU)
    win_shape, win_strides = (shape[0] - n + 1, shape[1] - n + 1, n, n), (width, 1, width, 1)
    obj_windows = obj.as_strided(win_shape, win_strides)
    num_windows = num_c.view(shape).as_strided(win_shape, win_strides)
    den_windows = den_c.view(shape).as_strided(win_shape, win_strides)
    with torch.no_grad():
        # the predicted patterns' moments, read in the FFT's layout (the correction)
        moments = None if not correcting else moment_weights(
            n, mask, centred=False, dtype=torch.float32, device=dev)
        far = (obj_windows, corner, p_hat, frac, cache, cache_rows, batch_amps, keep)
        every = check_rows = checked = None
        if correcting:
            every = torch.arange(n_pat, device=dev)
            # the patterns a turn's misfit is checked on: spread over the scan (raster order)
            check_rows = raster[:: max(1, n_pat // COM_CHECK_PATTERNS)].sort().values
            checked = None if len(check_rows) == n_pat else torch.zeros(
                n_pat, dtype=torch.bool, device=dev).index_fill_(0, check_rows, True)
        # with com_from_passes: each pattern's predicted moment sums, from its last update
        pass_sums = torch.zeros(n_pat, 3, device=dev) if from_passes else None
        sums_read = False  # whether every pattern's are in pass_sums (after a whole pass)
        # phase momentum: each pixel's phase at the start of a pass, and its velocity
        momentum = bool(phase_momentum) and iterations > 1
        before = torch.empty(flat.shape, device=dev) if momentum else None
        velocity = None
        if momentum:
            velocity = (torch.zeros(flat.shape, device=dev) if phase_velocity is None else
                        phase_velocity.detach().to(dev, torch.float32).reshape(-1).clone())
        # object momentum: the canvas at the start of a pass, and its complex velocity
        pushing_on = bool(object_momentum) and iterations > 1
        start_of_pass = torch.empty_like(flat) if pushing_on else None
        push = torch.zeros_like(flat) if pushing_on else None
        for it in range(iterations + settle_passes):
            scale = step_scale if it < iterations else 1.0
            if correcting and first_pass + it > 0:
                # the measured patterns' centres of mass against those the canvas
                # predicts; the turn is applied only where it lowers the canvas's misfit to
                # the checked patterns (`COM_CHECK_PATTERNS`)
                if sums_read:
                    model = moment_gradients(pass_sums, n)
                    misfit = _far_fields(*far, check_rows)[1] if com_check else 0.0
                else:
                    model, misfit = _far_fields(*far, every, weights=moments, checked=checked)
                turn = integrate(grads - model).to(dev)
                turn = torch.polar(torch.ones_like(turn), turn.mul_(COM_CORRECTION_STEP))
                if not com_check or _far_fields(*far, check_rows, turn_windows=turn.as_strided(
                        win_shape, win_strides))[1] < misfit:
                    obj.mul_(turn)
            turning = momentum and it < iterations - 1  # never into the settling passes
            if turning:
                torch.angle(flat, out=before)
            pushing = pushing_on and it < iterations - 1  # never into the settling passes
            if pushing:
                start_of_pass.copy_(flat)
            order = raster[torch.randperm(n_pat, generator=gen).to(dev)]
            for s in range(0, n_pat, batch_size):
                if s % chunk == 0:
                    # a chunk of the pass's batches gathered at once (fewer, larger ops)
                    part = order[s : s + chunk]
                    part_y, part_x = corner_y[part], corner_x[part]
                    part_idx = top_left[part, None] + offsets  # (P, N * N)
                    part_terms = None if cache is None else tuple(t.index_select(
                        0, part if cache_rows is None else cache_rows[part]) for t in cache)
                b = slice(s % chunk, s % chunk + batch_size)
                rows = part[b]
                idx = part_idx[b].reshape(-1)
                if part_terms is not None:
                    probes, power, a_u = (t[b] for t in part_terms)
                else:
                    probes, power, a_u = pattern_terms(p_hat, frac[rows], batch_amps(rows))
                c0 = (part_y[b], part_x[b])
                obj_w = obj_windows[c0]  # (B, N, N), a copy
                delta, sums = object_correction(obj_w, probes, a_u, keep,
                                                moments if from_passes else None)  # (B, N, N)
                if sums is not None:
                    pass_sums[rows] = sums
                if on_cpu:  # the same sums in the same order, about twice as fast there
                    num_c.scatter_add_(0, idx, delta.reshape(-1))
                    den_c.scatter_add_(0, idx, power.reshape(-1))
                else:  # index_add_ on accelerators (its complex path is the tested one)
                    num_c.index_add_(0, idx, delta.reshape(-1))
                    den_c.index_add_(0, idx, power.reshape(-1))
                if update_all:
                    # the same arithmetic as below, on every canvas pixel
                    den = den_c.mul(1.0 - alpha).add_(alpha * den_c.max().clamp_min(1e-30))
                    step = damp_amplitude(num_c.div_(den), flat, amplitude_step)
                    flat.add_(step if scale == 1.0 else step.mul_(scale))
                else:
                    den = den_windows[c0].reshape(-1)  # a copy, scaled in place
                    floor = alpha * den.max().clamp_min(1e-30)  # before the scaling
                    den.mul_(1.0 - alpha).add_(floor)
                    old = obj_w.reshape(-1)
                    step = damp_amplitude(num_windows[c0].reshape(-1).div_(den), old,
                                          amplitude_step)
                    if scale != 1.0:
                        step.mul_(scale)
                    # overlapping windows gather the same pixels, so duplicates agree
                    flat.index_copy_(0, idx, step.add_(old))
                if clear_all or update_all:
                    num_c.zero_()
                    den_c.zero_()
                else:
                    num_c.index_fill_(0, idx, 0)
                    den_c.index_fill_(0, idx, 0)
            sums_read = from_passes
            if turning:
                turn_on(flat, before, velocity, phase_momentum)
            if pushing:
                push_on(flat, start_of_pass, push, object_momentum)
    return ScanEstimate(obj, origin, weight)


def pass_misfit(
    amplitudes: Tensor,
    positions_px: Tensor | np.ndarray,
    probe: Tensor,
    estimate: ScanEstimate,
    rows: np.ndarray,
    *,
    valid: Tensor | None = None,
    terms: tuple[Tensor, Tensor, Tensor] | None = None,
) -> float:
    """The relative amplitude misfit of ``estimate`` to the patterns ``rows`` (indices into
    ``amplitudes`` and ``positions_px``, all of a scan's patterns) as the passes model
    them: ``sum (|far field| - measured amplitude)^2 / sum measured amplitude^2`` over
    their good pixels (``valid``, the passes' detector mask), each far field
    ``sum_m |fft2(P_m E_j(O))|^2`` of the whole-pixel window ``E_j(O)`` under the pattern's
    sub-pixel-shifted probes (`physics.prior_misfit.amplitude_misfit` is the absolute
    misfit of bilinearly interpolated patches instead, over every pattern). ``terms``: `pass_terms`
    of all the patterns on the estimate's frame (else made a batch at a time). On patterns
    an estimate did not use (the other half of a scan's, `physics.prior_frc`) it is a
    held-out error: it falls while the passes converge towards the object both halves
    measure and rises where they fit the noise of their own half."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.size == 0:
        raise ValueError("pass_misfit needs at least one pattern")
    if amplitudes.ndim != 3:
        raise ValueError(f"expected amplitudes (n, N, N); found {tuple(amplitudes.shape)}")
    n = int(amplitudes.shape[-1])
    obj = estimate.canvas.contiguous()
    dev = obj.device
    pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
    if len(pos) != amplitudes.shape[0] or rows.min() < 0 or rows.max() >= len(pos):
        raise ValueError(f"rows must index the {amplitudes.shape[0]} patterns and positions "
                         f"({len(pos)} positions, rows {rows.min()}..{rows.max()})")
    p = probe_modes(probe, dev, n)
    frac, corner = window_corners(torch.from_numpy(pos - estimate.origin_px).to(dev), n)
    shape, width = tuple(obj.shape), int(obj.shape[1])
    picked = torch.from_numpy(np.unique(rows)).to(dev)
    used = corner[picked]
    if (used < 0).any() or (used[:, 0] > shape[0] - n).any() or (
            used[:, 1] > shape[1] - n).any():
        raise ValueError(f"the estimate's canvas {shape} does not hold every {n}x{n} window "
                         "of the patterns asked for")
    windows = obj.as_strided((shape[0] - n + 1, shape[1] - n + 1, n, n), (width, 1, width, 1))
    keep = None if valid is None else ~torch.fft.ifftshift(valid.to(dev).bool(), dim=(-2, -1))
    amps = amplitudes.detach()

    def batch_amps(at: Tensor) -> Tensor:
        return amps[at.to(amps.device)].to(dev, torch.float32)

    cache = None if terms is None else tuple(t.to(dev) for t in terms)
    with torch.no_grad():
        _, misfit = _far_fields(windows, corner, torch.fft.fft2(p), frac, cache, None,
                                batch_amps, keep, picked)
        measured = 0.0
        for s in range(0, picked.numel(), 256):
            a2 = batch_amps(picked[s : s + 256]).square()
            if valid is not None:
                a2 = a2 * valid.to(dev, torch.float32)
            measured += float(a2.sum(dtype=torch.float64))
    return misfit / max(measured, 1e-30)


def _far_fields(obj_windows: Tensor, corner: Tensor, p_hat: Tensor, frac: Tensor, cache,
                cache_rows: Tensor | None, batch_amps, keep: Tensor | None,
                patterns: Tensor, *, weights: Tensor | None = None,
                checked: Tensor | None = None,
                turn_windows: Tensor | None = None) -> tuple[Tensor | None, float]:
    """What the canvas predicts for the ``patterns`` (sorted indices; all of them for
    centres), ``sum_m |fft2(P_m E_j(O))|^2`` with each pattern's sub-pixel-shifted probes:
    with ``weights`` (`com_phase.moment_weights(centred=False)`, float32, on the measured
    patterns' detector mask) the ``(n, 2)`` centre-of-mass gradients of every pattern (else
    None), and the amplitude misfit ``sum (|far field| - measured amplitude)^2`` over the
    good pixels (what the passes lower) of those ``checked`` (a boolean mask over all the
    patterns; None: every one). ``turn_windows`` (windows of a unit-modulus canvas, as
    ``obj_windows``): the same for the canvas turned by it."""
    centres = None if weights is None else torch.zeros(len(patterns), 2, dtype=torch.float64)
    misfit = 0.0
    # every pattern, in order, of terms cached for exactly these patterns: views, not copies
    whole = cache is not None and cache_rows is None and len(patterns) == len(cache[0])
    for s in range(0, len(patterns), 256):
        rows = patterns[s : s + 256]
        if cache is None:
            probes, _, a_u = pattern_terms(p_hat, frac[rows], batch_amps(rows))
        elif whole:
            probes, a_u = cache[0][s : s + rows.numel()], cache[2][s : s + rows.numel()]
        else:
            at = rows if cache_rows is None else cache_rows[rows]
            probes, a_u = cache[0].index_select(0, at), cache[2].index_select(0, at)
        c0 = corner[rows]
        win = obj_windows[c0[:, 0], c0[:, 1]]  # a copy
        if turn_windows is not None:
            win.mul_(turn_windows[c0[:, 0], c0[:, 1]])
        field = torch.fft.fft2(probes * win[:, None], norm="ortho")
        inten = (field.real.square() + field.imag.square()).sum(-3)
        if centres is not None:
            centres[s : s + rows.numel()] = intensity_centre_gradients(inten, weights)
        if checked is not None:  # only the checked patterns' misfit
            on = checked[rows]
            inten, a_u = inten[on], a_u[on]
        r = inten.sqrt_().sub_(a_u).square_()
        if keep is not None:
            r.masked_fill_(keep, 0.0)
        misfit += float(r.sum())
    return centres, misfit
