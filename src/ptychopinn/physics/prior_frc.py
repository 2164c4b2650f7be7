"""Half-scan Fourier ring correlation filter of the scan prior's amplitude.

After a few passes the scan prior (`physics.prior_scan.scan_error_reduction`)
has converged its amplitude at low and middle spatial frequencies, but near the
sampling limit it still carries fine-grained errors that later passes remove
only slowly. Which frequencies are still unconverged is read from the data,
as cryo-EM reads it from half maps: the scan's patterns are split at random
into two halves, each half is estimated alone on the whole scan's canvas, and
the Fourier ring correlation (FRC) of the two half amplitudes, inside the
region both halves light, says per ring how much of the amplitude is signal.
A ring's FRC of the halves ``F`` gives ``F_full = 2F / (1 + F)`` for the
whole scan (twice the data; Rosenthal and Henderson 2003), and the whole
scan's amplitude is filtered with that weight per ring: textured objects,
whose halves agree up to the sampling limit, keep their fine amplitude; where
the halves disagree the amplitude is smoothed. The phase is left as estimated.

The halves come first; the whole scan's estimate then continues from their
illumination-weighted mean for half as many passes, so the filter costs 1.5x
the plain estimate instead of 2x, and scores as well (exploration on seeds 0 /
3 / 5 / 11 and the real probe: amplitude SSIM +0.001 to +0.005 over the
whole estimate from the flat start). The halves are drawn from the patterns in
raster order, so the result does not depend on the order the scan lists them.

On by default with the scan prior (``model.prior_frc_filter``), together with
``model.subpixel='probe_shift'``: a network keeps the gain only with that model
of fractional positions (the bilinear physics makes it sharpen its output
again). The prior alone is scored by `benchmarks/bench_prior_frc.py`
(docs/benchmarks.md): after the default 4 passes the default simulation's
seed 5 (smooth amplitude, strong phase) goes from 0.755 to about 0.89, the
real-probe Fermat scan from 0.713 to 0.75, textured seeds stay within 0.01.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import Tensor

from ptychopinn.physics.at_once import at_once
from ptychopinn.physics.prior_scan import (
    ConvergeBlock,
    ScanEstimate,
    canvas_frame,
    pass_misfit,
    scan_error_reduction,
)
from ptychopinn.physics.prior_update import momentum_turn, pass_terms

FRC_RINGS = 24
"""Rings from zero frequency to the Nyquist frequency (the corners beyond it are one more)."""
LIT_FRACTION = 0.3
"""The FRC region: canvas pixels that each half lights with at least this fraction of its
peak probe intensity, tapered by a Gaussian of `TAPER_PX`."""
TAPER_PX = 3.0
EXTRA_PASS_AGREEMENT = 0.45
"""`frc_filtered_estimate`'s ``extra_iterations`` run, and its ``phase_momentum`` stays
on, when the halves' `agreement` is at least this. Measured after 4 passes
(`benchmarks/bench_inference_passes.py` and `bench_siemens_prior.py`, docs/benchmarks.md):
0.58-0.73 on simulated textured scans at 1e6 photons (0.60-0.75 with phase momentum), where
more passes and the momentum raise the amplitude SSIM; 0.17-0.31 at 1e4 and 1e3 photons,
on an unseen picture and on the measured Siemens star, where they lower the amplitude or
the spokes' resolution or barely help (the passes fit noise there)."""
MARGINAL_AGREEMENT = 0.10
"""Plain halves (step scale 1) that agree, but by less than this above the agreement needed
(`EXTRA_PASS_AGREEMENT`, or the scan's lower one), agree only marginally: the converge
blocks run there as where the halves disagree (from the momentum's halves, with the
momentum), and the extra passes only where no block is kept (`frc_filtered_estimate`). The
agreement of the halves that agreed after 4 passes, over the scans recorded to the
fortieth session (docs/benchmarks.md): 0.46-0.53 on four (objects of -2..2 and -3..3 rad,
a zone plate at 1e5 photons, a 36 px disk), then 0.58 and up on the other textured scans,
with none between (0.52 at 3e4 photons, `benchmarks/bench_prior_converge.py`)."""
CONVERGE_BLOCK = 4
"""`frc_filtered_estimate`'s ``converge_passes`` are added this many at a time."""
PLAIN_CONVERGE_COM = False
"""Whether the converge blocks of plain passes run the passes' centre-of-mass phase
correction (``com_correction``, `physics.prior_scan.scan_error_reduction`; over-relaxed
passes' blocks, and the whole scan's passes after any block, keep it). It corrects the
phase's low spatial frequencies, which the passes before the blocks have settled: without
it the prior alone scored the same to within 0.002 in amplitude SSIM on seven of eight
strong-phase scans (0.006 lower on one), the blocks about 0.1-0.2 s cheaper each on 625
patterns of 64x64 on 2 CPU cores, which pays for most of a fourth block
(`models.scan_prior.INFERENCE_PLAIN_CONVERGE_PASSES`, 16). Without it in the whole scan's
passes after the blocks too, the grf object's phase SSIM under the zone plate fell from
0.989 to 0.932 (exploration, forty-first session)."""
CONVERGE_RISE = 0.0
"""A block of ``converge_passes`` is kept, and another tried, when it raised the halves'
`agreement` by more than this (`frc_filtered_estimate`). Measured under Gaussian beams
(twenty-second session, `benchmarks/bench_prior_step_scale.py`, docs/benchmarks.md): the
first block after the recipe's 12 passes raised it by 0.003 on a Fermat-spiral scan (the
next by 0.048; the network's amplitude SSIM rose by 0.035 and 0.016), by 0.031-0.073 on
five more scans whose network gained 0.018-0.042 and by 0.022-0.057 on two whose network
held, and lowered it by 0.008-0.070 on the four whose network lost (beams of 14-16 px, a
grf object, 1e4 photons); any rise counts."""
PLAIN_CONVERGE_RISE = 0.025
"""`CONVERGE_RISE` for plain passes (step scale 1), whose converge blocks run only where the
halves did not agree (`EXTRA_PASS_AGREEMENT`), or agreed only marginally
(`MARGINAL_AGREEMENT`; where they agreed, the extra passes ran). Measured
after 4 passes at 1e6 photons under the default disk (exploration, thirty-eighth session):
on objects with a strong phase (-1.5..1.5 and -2.5..2.5 rad) blocks raised the agreement by
0.031-0.113 each and the prior alone's amplitude SSIM from 0.73-0.80 to about 0.93 (12-16
passes); at 1e4 photons
the first block raised it by 0.012 (more passes lowered the amplitude), on the measured
Siemens star with its retrieved probe by 0.004 or less."""
PLAIN_CONVERGE_MISFIT_FALL: float | None = 0.10
"""After a converge block of plain passes that the agreement kept (it rose by more than
`PLAIN_CONVERGE_RISE`), a block whose agreement rose by that or less is kept all the same
where it lowered the halves' held-out misfit by more than this fraction (None: never):
each half's estimate against the other half's measured amplitudes
(`physics.prior_scan.pass_misfit`), an error on data the half did not fit, which falls
while the passes converge towards the object both halves measure and rises where they fit
their own half's noise. The agreement reads the halves' amplitude only, ring by ring, and
stalls on objects whose phase still converges: on the hidden -3..3 rad scan of seed 421
it rose by 0.115 over the first block, then by 0.015, -0.005 and 0.027 over the next three
while the held-out misfit fell by 40 % and 24 % over the second and third and the prior
alone's amplitude SSIM rose from 0.829 (one block) to 0.922 (four); the retrained network
scored 0.921 against LSQML-100's 0.941 (0.813 with one block). Every block forced, 4 to
28 passes (exploration, forty-second session, the priors of
`benchmarks/bench_prior_converge.py`): at 1e4 photons (three scans) and on the measured
Siemens star the misfit rose with every block (by up to 13 %); at 3e4 photons and under a
zone plate at 1e5 photons it fell by 3.8 and 2.5 % over the first block and then held
within 1 %; on the strong-phase objects and the grf objects under the disk or a zone plate
it fell by 33-79 % over the first block and by less over later ones. Only after a
block the agreement kept: grf objects and a cell picture, whose halves disagree
(0.24-0.29) for detail the passes do not reach, lowered the misfit by 33-40 % over a first
block whose agreement barely moved; kept, their retrained networks met the CPU target at
11-14x (15-24x in their last records) at amplitude SSIMs 0.005-0.036 above those records
(some made with older code), and the cell picture through a model trained on
another scan (issue 5's generalisation case) fell below the 20x its target needs (12x
recorded; its inference 2.7 s against 1.8-2.0 s without those blocks in an interleaved
run, exploration; forty-second session). Nearest the
threshold at the defaults: -2..2 rad (seed 405) 9.5 % over its fourth block and -1.5..1.5
rad (seed 403) 7.9 % over its third, both dropped as before (their agreement rose by 0.020
and 0.014). The blocks kept and the priors are recorded by `bench_prior_converge.py`
(docs/benchmarks.md, forty-second session)."""
PLAIN_CONVERGE_BATCH = 4
"""Patterns per update in the converge blocks of plain passes (`frc_filtered_estimate`'s
``converge_batch_size`` default there; the passes before them keep the model's batch, so the
network's input is unchanged wherever no block is kept). Smaller batches update the canvas
more often per pass: near-sequential PIE, which converges further per pass where the data
are consistent and fits each batch's noise where they are not, so a block's rise in
agreement separates the two more widely. Measured after 4 passes at 1e6 photons under the
default disk (exploration, thirty-ninth session), the first block at 4 against 64: on
objects with a strong phase (-1.5..1.5 to -3..3 rad) a rise of 0.11-0.21 against
0.06-0.12, and the prior alone's amplitude error after 16 passes 5-23 % lower; at 1e4
photons (two seeds, and a real probe on a Fermat spiral) a fall of 0.05-0.08 against a rise
of 0.013 or less; on the measured Siemens star a fall of 0.08 (block dropped either way); a
grf object under a zone plate a rise of 0.020 against 0.014 (dropped either way). The
blocks cost more per pass: inference of 625 patterns of 64x64 took 0.4-0.55 s longer with
three blocks kept on 2 CPU cores (2.7-2.9 s against 2.3), 0.1-0.2 s where one is dropped
(the per-batch work, most of it Python's and not the FFTs', which the two halves' threads
share under the GIL)."""


def half_split(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint, sorted index sets covering ``range(n)`` at random (sizes differ by
    at most one); a pure function of ``n`` and ``seed``."""
    if n < 2:
        raise ValueError(f"half_split needs at least 2 patterns; found {n}")
    perm = np.random.default_rng(int(seed)).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


def ring_index(shape: tuple[int, int], n_rings: int = FRC_RINGS) -> np.ndarray:
    """Ring of every FFT-ordered frequency of an ``(H, W)`` image: 0 .. n_rings - 1 up to
    the Nyquist frequency, ``n_rings`` beyond it (the corners)."""
    return _rings(np.fft.fftfreq(shape[0]), np.fft.fftfreq(shape[1]), n_rings)


def _rings(fy: np.ndarray, fx: np.ndarray, n_rings: int) -> np.ndarray:
    k = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    return np.minimum((k / 0.5 * n_rings).astype(np.int64), n_rings)


def half_ring_index(shape: tuple[int, int], n_rings: int = FRC_RINGS
                    ) -> tuple[np.ndarray, np.ndarray]:
    """`ring_index` of the ``rfft2`` half spectrum of an ``(H, W)`` image and how many
    frequencies of the whole spectrum each half-spectrum column stands for (2, or 1
    for the zero and, with an even W, the Nyquist column): sums over the half
    spectrum weighted by it are the whole spectrum's sums of a real image's terms."""
    rings = _rings(np.fft.fftfreq(shape[0]), np.fft.rfftfreq(shape[1]), n_rings)
    mult = np.full(rings.shape[1], 2.0)
    mult[0] = 1.0
    if shape[1] % 2 == 0:
        mult[-1] = 1.0
    return rings, np.broadcast_to(mult, rings.shape)


def ring_frc(a: np.ndarray, b: np.ndarray, window: np.ndarray,
             n_rings: int = FRC_RINGS) -> np.ndarray:
    """FRC per ring (``n_rings + 1`` values, see `ring_index`) of two real images inside
    ``window`` (weights in [0, 1]; each image's weighted mean is removed first).

    Single-precision half spectra (a whole scan's canvas can be large), sums in
    double precision."""
    if a.shape != b.shape or a.shape != window.shape:
        raise ValueError(f"ring_frc: shapes differ: {a.shape}, {b.shape}, {window.shape}")
    wsum = float(window.sum(dtype=np.float64))
    if wsum <= 0:
        raise ValueError("ring_frc: the window is empty")
    win = np.asarray(window, dtype=np.float32)

    def spectrum(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        mean = float((x * win).sum(dtype=np.float64)) / wsum
        return np.fft.rfft2((x - np.float32(mean)) * win)

    fa, fb = spectrum(a), spectrum(b)
    rings, mult = half_ring_index(a.shape, n_rings)
    rings = rings.ravel()

    def ring_sum(x: np.ndarray) -> np.ndarray:
        return np.bincount(rings, (x * mult).ravel(), n_rings + 1)

    num = ring_sum((fa * fb.conj()).real)
    pa = ring_sum(fa.real**2 + fa.imag**2)
    pb = ring_sum(fb.real**2 + fb.imag**2)
    return num / np.sqrt(np.maximum(pa * pb, 1e-300))


def full_data_weight(frc_halves: np.ndarray) -> np.ndarray:
    """Filter weight per ring from the halves' FRC: ``2F / (1 + F)`` (the FRC expected
    of the whole data against the truth's signal), negative FRC counted as 0."""
    f = np.clip(np.asarray(frc_halves, dtype=np.float64), 0.0, 1.0)
    return 2.0 * f / (1.0 + f)


def agreement(frc_halves: np.ndarray) -> float:
    """How far the two halves agree: the mean `full_data_weight` of their FRC over the
    rings between zero frequency and the Nyquist frequency (both excluded): near 1 when
    the data determine the object's detail and the estimate is limited by its passes,
    low when the halves differ by noise (low dose, inconsistent data)."""
    w = full_data_weight(np.asarray(frc_halves, dtype=np.float64)[1:FRC_RINGS])
    return float(w.mean()) if w.size else 0.0


def whole_pass_count(iterations: int) -> int:
    """Passes of the whole scan after its halves' ``iterations`` (`frc_filtered_estimate`)."""
    return max(1, (int(iterations) + 1) // 2)


def frc_filtered_estimate(
    amplitudes: Tensor,
    positions_px: Tensor | np.ndarray,
    probe: Tensor,
    iterations: int,
    *,
    split_seed: int = 0,
    extra_iterations: int = 0,
    phase_momentum: float = 0.0,
    settle_passes: int = 0,
    converge_passes: int = 0,
    converge_batch_size: int | None = None,
    agreement_threshold: float | None = None,
    gate_momentum: float = 0.0,
    **kw,
) -> tuple[ScanEstimate, np.ndarray]:
    """The whole scan's estimate with its amplitude filtered by the FRC of two half-scan
    estimates (module docstring); ``kw`` go to every `scan_error_reduction`.

    ``extra_iterations``: when the halves' `agreement` after ``iterations`` passes is at
    least `EXTRA_PASS_AGREEMENT`, each half continues for this many more passes and the
    whole scan runs `whole_pass_count` of the sum (the data support more detail than the
    passes reached); otherwise nothing changes.

    ``phase_momentum`` (`scan_error_reduction`'s, in [0, 1)): the halves run with it; where
    their `agreement` reaches `EXTRA_PASS_AGREEMENT` the rest of the passes run with it
    too, else the halves are estimated again without it and nothing runs with it (the
    momentum carries on whatever the passes move, noise too: on the measured Siemens star,
    whose halves disagree, it resolved the spokes 0.5 px less far), except where plain
    converge blocks keep the momentum's halves (``converge_passes`` below). Over-relaxed passes
    (``step_scale`` other than 1, the featureless recipe) reverse the order: their halves,
    0.16-0.37 in agreement on every scan measured, are estimated without the momentum
    first and with it only where they agree (one estimate of the halves instead of two;
    the same estimate unless the momentum alone would have lifted the agreement over the
    threshold: the recipe's models of the nineteenth session scored the same to the
    digit, their prior in 1.6 s instead of 2.6, 625 patterns of 64x64 on 2 CPU cores,
    `bench_prior_step_scale.py`, docs/benchmarks.md). The halves' agreement that decided
    is the one recorded (after converge passes, the last kept one's). The halves' first
    pass, the same either way, runs once when the scan's `pass_terms` fit in memory. Each
    continuation (the extra passes, the whole scan's passes) is a run of its own: its phase
    velocity starts from zero, its batch orders are those of a first pass again and no
    centre-of-mass correction precedes its first pass. (Continuing the halves' extra
    passes as one run with their first passes, ``first_pass``, scored the same amplitude
    SSIM to within 0.001 on seeds 7, 29, 41, 43 and the real probe, and the real probe's
    phase 0.008 lower: exploration, docs/benchmarks.md, sixteenth session.)

    The halves come first (``iterations`` passes each, on the whole scan's canvas); the
    whole scan then starts from their illumination-weighted mean and runs
    `whole_pass_count` passes (half as many). That costs three quarters of estimating
    the whole from the flat start besides its halves, and scores as well or better
    (seeds 0 / 3 / 5 / 11 and the real probe at 4 passes: amp SSIM +0.001 to +0.005,
    exploration recorded in docs/benchmarks.md).

    ``converge_passes``: at most this many passes the halves add, `CONVERGE_BLOCK` at a
    time, for as long as each block raises their `agreement` by more than `CONVERGE_RISE` (a
    block that does not is dropped, and the halves stay as they were before it); the whole
    scan then runs `whole_pass_count` of the halves' passes. The halves of two independent
    halves of the data agree more as the passes converge towards the object both halves
    measure, and less where the passes fit noise or overshoot: under Gaussian beams, more
    over-relaxed passes raised the agreement and the network's amplitude SSIM on raster and
    Fermat-spiral scans at 1e6 photons and lowered both on narrow (14-16 px) beams
    (docs/benchmarks.md, twenty-second session). Each block continues the halves' run (its
    batch orders and centre-of-mass corrections, ``first_pass``): without phase momentum or
    ``extra_iterations``, and at the passes' own batch size, the halves after ``k`` added
    passes are those of ``iterations + k`` passes, bit for bit (over-relaxed passes; plain
    passes' blocks run without the centre-of-mass correction, `PLAIN_CONVERGE_COM`). Plain
    passes (step scale 1) try blocks only where the halves did not agree, or agreed by less
    than `MARGINAL_AGREEMENT` above the agreement needed (where they agreed by more,
    ``extra_iterations`` ran; where they agreed marginally the extra passes run only where
    no block is kept; on two such hidden scans, of -2..2 and -3..3 rad, the blocks were kept
    and the retrained network's amplitude SSIM rose from 0.910 to 0.954 and from 0.751 to
    0.813; on three textured ones the block was dropped: docs/benchmarks.md, forty-first
    session), in updates of `PLAIN_CONVERGE_BATCH` patterns, and keep one where it raised
    the agreement by more than `PLAIN_CONVERGE_RISE`, or, after a block so kept, lowered the
    halves' held-out misfit (each half's estimate against the other half's patterns) by more
    than `PLAIN_CONVERGE_MISFIT_FALL` (over-relaxed passes: where it raised the agreement by
    more than `CONVERGE_RISE`): objects with a strong phase converge slowly under the
    default disk, and their halves disagree after 4 passes for want of passes, while at low
    dose and on the measured Siemens star the halves disagree for noise (docs/benchmarks.md,
    thirty-eighth and thirty-ninth sessions). Where the halves that decided ran with a phase
    momentum (``phase_momentum``, or ``gate_momentum``), the plain blocks continue those
    halves with it, and where a block is kept the whole scan's passes run with it too; where
    none is kept the halves are estimated again without it, as where no block runs (the rise
    rule drops the blocks that fit noise, with or without the momentum: on five strong-phase
    scans the momentum's blocks raised the network's amplitude SSIM by 0.002-0.074,
    retrained and recorded, docs/benchmarks.md, fortieth session; at 1e4 photons, on the
    real probe and on the measured Siemens star no block is kept, on two grf scans of three
    one is: `benchmarks/bench_prior_converge.py`, forty-first session).

    ``converge_batch_size``: patterns per update in the converge blocks (None: the smaller
    of `PLAIN_CONVERGE_BATCH` and the passes' ``batch_size`` for plain passes, the passes'
    own for over-relaxed ones). The whole scan's passes after the halves keep ``batch_size``.

    ``gate_momentum``: plain passes without ``phase_momentum`` (training's prior): whether
    the halves agree is read from halves run with this momentum, as inference's prior reads
    it with its ``phase_momentum``; where they disagree the plain converge blocks then run
    as inference's do, from the same halves, with the same momentum and against the same
    agreement (the estimate is inference's bit for bit), so a network trained with them
    corrects a prior converged as far as the one it corrects at inference. Where they
    agree, or no block is kept, nothing else changes: the estimate's passes run without the
    momentum, the estimate is the one without the gate, only the agreement recorded is the
    gate's. Costs one more estimate of the halves where they agree (0: no gate;
    over-relaxed passes ignore it).

    ``agreement_threshold``: the agreement the halves must reach for the extra passes and
    the momentum above (None: `EXTRA_PASS_AGREEMENT`; `models.scan_prior` lowers it on
    scans whose patterns overlap less, whose halves, each covered half as often, agree less
    than the whole scan's data support).

    ``settle_passes``: plain passes (step scale 1) the whole scan's estimate ends with
    (`scan_error_reduction`'s); the halves run without them, so the filter and the
    agreement read the over-relaxed passes (settling the halves instead scored lower:
    exploration, docs/benchmarks.md, twentieth session).

    The estimate records the blocks tried (``converge_blocks``, `ConvergeBlock`: what each
    read and whether it was kept).

    Returns ``(estimate, frc_of_the_halves)`` (per ring, see `ring_index`).
    """
    if extra_iterations < 0:
        raise ValueError(f"extra_iterations must be >= 0; found {extra_iterations}")
    if isinstance(converge_passes, bool) or int(converge_passes) != converge_passes or (
            converge_passes < 0):
        raise ValueError(f"converge_passes must be an integer >= 0; found {converge_passes!r}")
    if not 0 <= phase_momentum < 1:
        raise ValueError(f"phase_momentum must be in [0, 1); found {phase_momentum}")
    if not 0 <= gate_momentum < 1:
        raise ValueError(f"gate_momentum must be in [0, 1); found {gate_momentum}")
    if converge_batch_size is not None and (
            isinstance(converge_batch_size, bool) or int(converge_batch_size) != converge_batch_size
            or converge_batch_size < 1):
        raise ValueError("converge_batch_size must be an integer >= 1 or None; found "
                         f"{converge_batch_size!r}")
    if agreement_threshold is not None and not 0 <= agreement_threshold <= 1:
        raise ValueError(f"agreement_threshold must be in [0, 1]; found {agreement_threshold}")
    threshold = EXTRA_PASS_AGREEMENT if agreement_threshold is None else float(agreement_threshold)
    if any(kw.get(k) is not None for k in ("frame", "start", "subset", "illumination",
                                           "terms", "phase_velocity")) or kw.get("first_pass"):
        raise ValueError("frc_filtered_estimate chooses the frame, start, subsets, "
                         "illumination, terms, first pass and phase velocity itself")
    pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
    if iterations == 0 or len(pos) < 2:
        return (scan_error_reduction(amplitudes, pos, probe, iterations,
                                     settle_passes=settle_passes, **kw), np.ones(FRC_RINGS + 1))
    origin, shape = canvas_frame(pos, int(probe.shape[-1]), bool(kw.get("integer_grid", False)))
    frame = (origin, tuple(int(v) for v in shape))
    # halves drawn from the patterns in raster order, so the estimate does not depend on
    # the order the scan lists them in (as `scan_error_reduction`'s)
    raster = np.lexsort((pos[:, 1], pos[:, 0]))
    subsets = [np.sort(raster[h]) for h in half_split(len(pos), split_seed)]
    # computed once for every estimate below (each would otherwise compute its own): the
    # patterns' shifted probes (when they fit in memory), each half's flat start and
    # illumination; the estimates are the same as without them
    terms = pass_terms(amplitudes, pos, probe, frame, device=kw.get("device"))
    device = torch.device(kw["device"]) if kw.get("device") is not None else probe.device
    starts = [scan_error_reduction(amplitudes, pos, probe, 0, frame=frame, subset=rows, **kw)
              for rows in subsets]

    # the first pass is the same with and without the momentum (it turns the phase only
    # after a pass): run once, and continued from with the momentum and, where the halves
    # then disagree, without it. Not where the terms are too large to share: each estimate
    # then makes its own, and a first pass apart would make them once more than it saves.
    share_first = terms is not None and iterations > 1
    ones = at_once(lambda s, rows: scan_error_reduction(
        amplitudes, pos, probe, 1, frame=frame, subset=rows, start=s.canvas,
        illumination=s.illumination, terms=terms, **kw), starts, subsets,
        device=device) if share_first else None

    def halves_with(momentum: float) -> list[ScanEstimate]:
        if not share_first:
            return at_once(lambda s, rows: scan_error_reduction(
                amplitudes, pos, probe, iterations, frame=frame, subset=rows, start=s.canvas,
                illumination=s.illumination, phase_momentum=momentum, **kw),
                starts, subsets, device=device)

        def rest(one: ScanEstimate, s: ScanEstimate, rows: np.ndarray) -> ScanEstimate:
            start, velocity = one.canvas, None
            if momentum:
                start, velocity = momentum_turn(one.canvas, s.canvas, momentum)
            return scan_error_reduction(
                amplitudes, pos, probe, iterations - 1, frame=frame, subset=rows, start=start,
                first_pass=1, phase_momentum=momentum, phase_velocity=velocity,
                illumination=s.illumination, terms=terms, **kw)
        return at_once(rest, ones, starts, subsets, device=device)

    def read(halves: list[ScanEstimate]):  # noqa: ANN202
        frc = halves_frc(halves)
        # halves that overlap too little to read an FRC have no agreement: no extra passes
        agree = None if frc[1] is None else agreement(frc[0])
        return frc, agree, agree is not None and agree >= threshold

    decide, momentum_blocks = 0.0, False  # plain converge blocks from the momentum's halves
    if phase_momentum and float(kw.get("step_scale", 1.0)) != 1.0:
        # over-relaxed passes (featureless probes) have not agreed on any scan measured
        # (0.16-0.37): their plain halves come first, the momentum's only where they agree
        halves = halves_with(0.0)
        first, agree, agreed = read(halves)
        if agreed:
            moved = halves_with(phase_momentum)
            moved_first, agree, agreed = read(moved)
            if agreed:
                halves, first = moved, moved_first
    else:
        # the momentum's halves decide (inference's, or training's gate)
        decide = phase_momentum or (gate_momentum if float(kw.get("step_scale", 1.0)) == 1.0
                                    else 0.0)
        halves = halves_with(decide)
        first, agree, agreed = read(halves)
        # where they disagree, or agree only marginally, and converge passes may run, the
        # blocks continue these halves with the momentum (below), and the plain halves are
        # estimated only where no block is kept (the extra passes, where they agreed)
        marginal = agreed and agree < threshold + MARGINAL_AGREEMENT
        momentum_blocks = bool(decide) and (not agreed or marginal) and agree is not None and (
            converge_passes > 0)
        if decide and not (agreed and phase_momentum) and not momentum_blocks:
            # the data do not support the momentum, or it only decided: the plain halves
            halves = halves_with(0.0)
            first = halves_frc(halves)
    momentum = phase_momentum if agreed else 0.0

    def continued(halves: list[ScanEstimate], passes: int, first_pass: int = 0,
                  batch_size: int | None = None, with_momentum: float | None = None,
                  com_correction: bool | None = None) -> list[ScanEstimate]:
        args = kw if batch_size is None else {**kw, "batch_size": batch_size}
        if com_correction is not None:
            args = {**args, "com_correction": com_correction}
        turn = momentum if with_momentum is None else with_momentum
        return at_once(lambda h, rows: ScanEstimate(scan_error_reduction(
            amplitudes, pos, probe, passes, frame=frame, start=h.canvas, subset=rows,
            illumination=h.illumination, terms=terms, first_pass=first_pass,
            phase_momentum=turn, **args).canvas, h.origin_px, h.illumination),
            halves, subsets, device=device)

    if extra_iterations and agreed and not momentum_blocks:
        halves = continued(halves, extra_iterations)
        iterations += extra_iterations
        first = None  # the halves moved on: filter by their FRC now
    done = iterations
    plain = float(kw.get("step_scale", 1.0)) == 1.0
    rise = PLAIN_CONVERGE_RISE if plain else CONVERGE_RISE
    if converge_batch_size is None and plain:
        converge_batch_size = min(PLAIN_CONVERGE_BATCH, int(kw.get("batch_size", 64)))
    block_momentum = decide if momentum_blocks else momentum

    def held_out(halves: list[ScanEstimate]) -> float:
        # each half's estimate against the other half's patterns
        return 0.5 * sum(pass_misfit(amplitudes, pos, probe, h, rows, terms=terms,
                                     valid=kw.get("valid"))
                         for h, rows in zip(halves, subsets[::-1], strict=True))

    held = None  # the kept halves' held-out misfit, where it was read
    blocks: list[ConvergeBlock] = []
    while (agree is not None and not (plain and agreed and not momentum_blocks)
           and done < iterations + int(converge_passes)):
        block = min(CONVERGE_BLOCK, iterations + int(converge_passes) - done)
        moved = continued(halves, block, first_pass=done, batch_size=converge_batch_size,
                          with_momentum=block_momentum,
                          com_correction=None if not plain or PLAIN_CONVERGE_COM else False)
        moved_first, moved_agree, _ = read(moved)
        if moved_agree is None:
            break
        kept, moved_held, fell = moved_agree > agree + rise, None, None
        if not kept and plain and PLAIN_CONVERGE_MISFIT_FALL is not None and done > iterations:
            # after a block the agreement kept, it rose too little: kept where the held-out
            # misfit fell enough
            held = held_out(halves) if held is None else held
            moved_held = held_out(moved)
            fell = 1.0 - moved_held / max(held, 1e-30)
            kept = fell > PLAIN_CONVERGE_MISFIT_FALL
        blocks.append(ConvergeBlock(done + block, moved_agree, moved_agree - agree, fell, kept))
        if not kept:
            break
        halves, first, agree, done = moved, moved_first, moved_agree, done + block
        held = moved_held
    if momentum_blocks:
        if done > iterations:  # blocks kept: the whole scan's passes turn the phase too
            momentum = block_momentum
        elif agreed and phase_momentum:  # marginal, none kept: as where the halves agree
            if extra_iterations:
                halves = continued(halves, extra_iterations)
                iterations += extra_iterations
                done = iterations
                first = None
        else:  # none kept: the plain halves, as where no block runs
            halves = halves_with(0.0)
            first = halves_frc(halves)
    iterations = done
    w0, w1 = (h.illumination for h in halves)
    both = w0 + w1
    start = torch.where(both > 0, (halves[0].canvas * w0 + halves[1].canvas * w1)
                        / both.clamp_min(1e-30), 0.5 * (halves[0].canvas + halves[1].canvas))
    full = scan_error_reduction(amplitudes, pos, probe, whole_pass_count(iterations),
                                frame=frame, start=start, illumination=both, terms=terms,
                                phase_momentum=momentum, settle_passes=settle_passes, **kw)
    est, frc = filter_amplitude(full, halves, known_frc=first)
    return replace(est, passes=int(iterations), agreement=agree, phase_momentum=momentum,
                   converge_blocks=tuple(blocks)), frc


def halves_frc(halves: list[ScanEstimate]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(frc, window)``: the FRC of two halves' amplitudes (on one canvas) where both
    light the object, and that tapered region; too little overlap to read an FRC (< 16
    pixels) gives ones and no window."""
    # single precision throughout (a whole scan's canvas can be large)
    region = None
    for h in halves:
        ill = h.illumination.cpu().numpy()
        lit = ill >= LIT_FRACTION * max(float(ill.max()), 1e-30)
        region = lit if region is None else region & lit
    if region.sum() < 16:
        return np.ones(FRC_RINGS + 1), None
    window = gaussian_filter(region.astype(np.float32), TAPER_PX)
    frc = ring_frc(halves[0].canvas.abs().cpu().numpy(), halves[1].canvas.abs().cpu().numpy(),
                   window)
    return frc, window


def filter_amplitude(full: ScanEstimate, halves: list[ScanEstimate], *,
                     known_frc: tuple[np.ndarray, np.ndarray | None] | None = None,
                     ) -> tuple[ScanEstimate, np.ndarray]:
    """``full``'s amplitude filtered by ``2F/(1+F)`` per ring of the FRC ``F`` of the two
    ``halves``' amplitudes where both light the object (all three on one canvas);
    the phase is ``full``'s. Returns ``(estimate, frc_of_the_halves)``; too little
    overlap to read an FRC (< 16 pixels) keeps ``full`` with an FRC of ones.
    ``known_frc``: the halves' `halves_frc`, when already computed."""
    shape = tuple(full.canvas.shape)
    if any(tuple(h.canvas.shape) != shape for h in halves) or len(halves) != 2:
        raise ValueError(f"filter_amplitude needs two halves on the {shape} canvas; found "
                         f"{[tuple(h.canvas.shape) for h in halves]}")
    frc, window = halves_frc(halves) if known_frc is None else known_frc
    if window is None:
        return full, frc
    rings, _ = half_ring_index(shape)
    weight = full_data_weight(frc).astype(np.float32)[rings]
    canvas = full.canvas.cpu()
    amp = canvas.abs().numpy()
    mean = np.float32((amp * window).sum(dtype=np.float64) / window.sum(dtype=np.float64))
    filtered = np.fft.irfft2(np.fft.rfft2(amp - mean) * weight, s=shape) + mean
    filtered = torch.from_numpy(np.maximum(filtered, 0.0).astype(np.float32, copy=False))
    out = torch.polar(filtered, torch.angle(canvas)).to(full.canvas.device)
    return ScanEstimate(out.to(torch.complex64), full.origin_px, full.illumination), frc
