"""The physics prior of every pattern of one scan, looked up by pattern index.

A pattern's prior is a function of the scan, not of the group a pattern sits
in, so training and inference compute it once and look it up:

* ``prior_scope='scan'`` (default): `physics.prior_scan.scan_error_reduction`
  estimates the whole object once; a pattern's prior is the estimate's patch at
  its position. Memory: one object canvas, whatever the number of patterns.
* ``prior_scope='neighbourhood'``: `physics.prior.neighbourhood_error_reduction`
  of the pattern and its ``prior_neighbors - 1`` nearest scan neighbours,
  cached per pattern, or computed per batch when the cache would exceed
  `PRIOR_CACHE_LIMIT_BYTES` (same values, more work).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor

from ptychopinn.grouping import nearest_patterns
from ptychopinn.physics import prior_frc
from ptychopinn.physics.com_phase import COM_CURVATURE_LIMIT, probe_phase_curvature
from ptychopinn.physics.coverage import scan_coverage
from ptychopinn.physics.geometry import whole_pixel_windows
from ptychopinn.physics.prior import neighbourhood_error_reduction
from ptychopinn.physics.prior_frc import frc_filtered_estimate
from ptychopinn.physics.prior_orders import MAX_ORDERS, order_averaged_estimate
from ptychopinn.physics.prior_scan import MAX_STEP_SCALE, ConvergeBlock, ScanEstimate

log = logging.getLogger(__name__)

PRIOR_STARTS = ("flat", "com", "auto")
"""``model.prior_start``: `physics.prior_scan.START_PHASES` and 'auto' (`ScanPrior`)."""
PRIOR_CACHE_LIMIT_BYTES = 1 << 30
"""Precompute the physics prior of every pattern when it fits in this many bytes."""
INFERENCE_EXTRA_PASSES = 2
"""`InferenceConfig.prior_extra_iterations` when not given, for plain passes (step scale 1):
passes added where the FRC filter's halves agree (`inference_pass_options`)."""
INFERENCE_PHASE_MOMENTUM = 0.7
"""`InferenceConfig.prior_phase_momentum` when not given, for plain passes (likewise)."""
INFERENCE_CONVERGE_PASSES = 4
"""`InferenceConfig.prior_converge_passes` when not given, for over-relaxed passes (step
scale other than 1, the featureless recipe): at most this many passes added, a few at a
time, while the FRC filter's halves agree more with each (`physics.prior_frc`). One block:
8 (two blocks) raised the network's amplitude SSIM further on the scans whose halves kept
agreeing more (a Fermat spiral 0.788 -> 0.804, a lines object 0.911 -> 0.919) but took
inference of 625 patterns of 64x64 to 3.7-4.5 s on 2 CPU cores, 8-10x faster than
pty-chi's LSQML-100 where the target is 10x (twenty-second session, docs/benchmarks.md)."""

INFERENCE_PLAIN_CONVERGE_PASSES = 16
"""`InferenceConfig.prior_converge_passes` when not given, for plain passes: tried only where
the FRC filter's halves did not agree, or agreed only marginally
(`physics.prior_frc.MARGINAL_AGREEMENT`, `physics.prior_frc.PLAIN_CONVERGE_RISE`), in updates
of `physics.prior_frc.PLAIN_CONVERGE_BATCH` patterns, continuing the momentum's halves with
the momentum (`physics.prior_frc.frc_filtered_estimate`)."""


def inference_pass_options(step_scale: float, extra_iterations: int | None,
                           phase_momentum: float | None, converge_passes: int | None = 0,
                           ) -> tuple[int, float, int]:
    """``(extra passes, phase momentum, converge passes)`` of an inference prior whose
    passes run at ``step_scale``: each as given, or where None, `INFERENCE_EXTRA_PASSES`,
    `INFERENCE_PHASE_MOMENTUM` and 0 for plain passes (step scale 1) and 0, 0 and
    `INFERENCE_CONVERGE_PASSES` for over-relaxed ones.

    Over-relaxed passes under Gaussian beams are far from converged after the recipe's 12
    on some scans (a Fermat spiral's uneven overlap, a lines object) and diverge with more
    on others (beams of 14-16 px): the converge passes follow the FRC filter's halves,
    which agree more while the passes converge and less where they do not
    (`physics.prior_frc.frc_filtered_estimate`; docs/benchmarks.md, twenty-second
    session). Plain passes run their extra passes where the halves agree instead.

    Both run only where the FRC filter's halves agree (the extra passes, for plain passes,
    only where they agree by more than `physics.prior_frc.MARGINAL_AGREEMENT` above the
    agreement needed, or no converge block is kept). Over-relaxed passes (the
    featureless recipe) end with their own plain passes, which take that role: where
    their halves agreed (wide disks defocused to Fresnel number 1, twenty-first session)
    the momentum halves and 2 extra passes took inference from 2.5-2.6 s to 4.2-4.4 s on
    625 patterns and lowered amplitude / phase SSIM by 0.001-0.002
    (`benchmarks/bench_inference_passes.py`, docs/benchmarks.md); and training ran
    without either.
    """
    plain = float(step_scale) == 1.0
    if extra_iterations is None:
        extra_iterations = INFERENCE_EXTRA_PASSES if plain else 0
    if phase_momentum is None:
        phase_momentum = INFERENCE_PHASE_MOMENTUM if plain else 0.0
    if converge_passes is None:
        converge_passes = INFERENCE_PLAIN_CONVERGE_PASSES if plain else INFERENCE_CONVERGE_PASSES
    return extra_iterations, phase_momentum, converge_passes


LOW_COVERAGE_EXTRA_PASSES = 8
"""Passes the whole scan's estimate of an over-relaxed prior adds where it runs without the
FRC filter's halves (`ModelConfig.prior_frc_min_coverage`): the recipe's 12 become 20 (and
its 4 plain ones), fewer pattern updates than the halves' 12-16 and the whole's 8 + 4, but
on one thread's worth of work where the halves run two at once: 2.8-2.9 s of inference for
625 patterns of 64x64 on 2 CPU cores against 2.2-2.5 s with the halves. Under the default
Gaussian beam with steps of 12 px (coverage 1.65) the prior alone scored amplitude SSIM
0.733 after 12 whole-scan passes and 0.877 after 20 (with the halves: 0.571); under a 14 px
beam (1.14) 0.796 and 0.838 (0.829) (`benchmarks/bench_prior_step_scale.py
--frc-min-coverages 0 3 --passes 12 20`, docs/benchmarks.md, twenty-sixth session; 28
passes reached 0.924 at 12 px in exploration, too slow for the CPU target)."""
OVERRELAXED_ORDERS = 2
"""`default_orders` of over-relaxed passes: the whole scan's estimate averages this many
mini-batch orders, run at once (`physics.prior_orders`). Where the featureless recipe runs
on the whole scan (coverage below ``model.prior_frc_min_coverage``) two orders raised the
prior alone's amplitude SSIM on every Gaussian-beam scan measured (five recorded, nine in
exploration), most at low dose: steps of 12 px, 0.672 -> 0.718 at 1e5 photons, 0.723 ->
0.762 at 3e5, 0.829 -> 0.848 and 0.877 -> 0.883 at 1e6, a lines object 0.851 -> 0.895, in
about the same time on 2 CPU cores (2.4-3.6 s either way; `benchmarks/bench_prior_step_scale.py
--orders`, docs/benchmarks.md, twenty-eighth session). Four orders gained more (0.727, 0.787,
0.859, 0.898, 0.917) in about twice the time (4.7-6.9 s), too slow for the CPU target: a
choice left to ``prior_orders``."""


def default_orders(step_scale: float) -> int:
    """Mini-batch orders a whole-scan estimate averages when ``prior_orders`` is not given:
    `OVERRELAXED_ORDERS` for over-relaxed passes (``step_scale`` other than 1), where the
    order decides how each batch's photon noise is written into the canvas, else 1 (plain
    passes, bit for bit as before the option)."""
    return 1 if float(step_scale) == 1.0 else OVERRELAXED_ORDERS


LOW_DOSE_PHOTONS = 5e5
"""`low_dose_warning`: an over-relaxed prior run on the whole scan (below
``model.prior_frc_min_coverage``) of fewer photons per pattern than this warns. Under the
default Gaussian beam with steps of 12 px the network's amplitude SSIM came within 0.05 of
pty-chi LSQML-100's at 1e6 photons (two seeds) and, since the whole scan's estimate
averages two mini-batch orders (`OVERRELAXED_ORDERS`), at 3e5 (seeds 251 and 283: 0.755 and
0.820 against 0.764 and 0.786; 0.681 before on seed 251); at 1e5 it fell short on seed 251
(0.706 against 0.777; 0.607 before) and came within 0.05 on seeds 223 and 281 (0.740 and
0.799 against 0.776 and 0.843): the over-relaxed passes carry the
photon noise into the amplitude, and the network's correction of its prior only adds
error there (docs/benchmarks.md, twenty-sixth to twenty-eighth sessions). On another
machine (twenty-ninth session, the scans simulated again, models retrained) LSQML-100's
own scores moved by up to 0.06 and the 0.05 margin was missed at 3e5 on seed 251 (0.773
against 0.826) and at 1e5 on seeds 251 and 281 (0.692 against 0.758, 0.792 against 0.848).
Back on the first kind of machine (thirtieth session, the same scans by their fingerprints,
models retrained) LSQML-100 scored as it had there, and the margin was missed at 1e5 on seed
251 only (0.698 against 0.777): the reference moves with the CPU, not the scan. With the
orders' FRC filter (`physics.prior_orders.filter_orders`, thirty-first session, the same
machine kind, models retrained) all five low-dose runs came within 0.05: at 1e5 seeds 251,
223 and 281 0.744, 0.749 and 0.823 against 0.777, 0.776 and 0.843 (margins 0.017, 0.023,
0.030), at 3e5 seeds 251 and 283 0.794 and 0.851 against 0.764 and 0.786. The warning
stays: at 1e5 the margins are thin, and on other CPUs LSQML-100 scored up to 0.06 apart."""


def measured_photons(amplitudes, amplitude_units: str | None) -> float | None:  # noqa: ANN001
    """Mean photons per pattern of ``amplitudes`` (``(n, N, N)``, numpy or torch) in
    ``amplitude_units`` 'sqrt_counts' (the data contract's photon counts): the square of
    `training.data.input_scale_of` (summed a chunk at a time) times the pixels per pattern;
    None in any other units, which say nothing of the dose, and for no patterns."""
    from ptychopinn.training.data import input_scale_of

    if amplitude_units != "sqrt_counts" or len(amplitudes) == 0:
        return None
    return input_scale_of(amplitudes) ** 2 * amplitudes.shape[-2] * amplitudes.shape[-1]


TRAINING_REFUSES = ("extra_iterations", "phase_momentum", "converge_passes")
"""Inference's pass options, which a training prior refuses (`refuse_training_options`)."""


def refuse_training_options(given) -> None:  # noqa: ANN001 (names of the options given)
    """Raise where a training prior is given any of inference's pass options, by name:
    ``model.prior_train_converge`` sets its own (`ScanPrior.for_config`'s ``training``)."""
    named = [k for k in TRAINING_REFUSES if k in given]
    if named:
        raise ValueError(f"a training prior takes no {', '.join(named)} (inference's pass "
                         "options; model.prior_train_converge sets its own)")


def training_prior_note(prior) -> str | None:  # noqa: ANN001 (a ScanPrior or None)
    """What `train` logs about its prior where converge blocks ran (training runs no extra
    passes, so passes beyond those asked for are blocks; `ScanPrior.for_config`'s
    ``training``); None elsewhere."""
    if prior is None or prior.passes <= prior.iterations:
        return None
    agreement = ("" if prior.agreement is None
                 else f"; their agreement after the blocks {prior.agreement:.2f}")
    by_misfit = sum(1 for b in prior.converge_blocks if b.kept and b.misfit_fall is not None)
    if by_misfit:
        agreement += (f", {by_misfit} of the blocks kept for the fall of their held-out "
                      "misfit where the agreement rose too little")
    return (f"the training prior ran {prior.passes} passes, {prior.passes - prior.iterations} "
            f"of them in converge blocks after {prior.iterations} (its half-scan estimates "
            f"had not agreed, or only marginally{agreement}; model.prior_train_converge, as "
            "inference adds them)")


def low_dose_warning(photons_per_pattern: float | None, coverage: float) -> str | None:
    """Training's and inference's warning for an over-relaxed prior that runs on the whole
    scan (its coverage below ``model.prior_frc_min_coverage``) of fewer than
    `LOW_DOSE_PHOTONS` photons per pattern, else None (also when the dose is unknown)."""
    if photons_per_pattern is None or not photons_per_pattern < LOW_DOSE_PHOTONS:
        return None
    return (f"the scan has {photons_per_pattern:.2g} photons per pattern, below "
            f"{LOW_DOSE_PHOTONS:.0e}, and is covered {coverage:.2f} times, so the over-relaxed "
            "physics prior (the featureless recipe) runs on the whole scan: on such scans its "
            "passes carry the photon noise into the amplitude, and with steps of 12 px under "
            "a Gaussian beam the network's amplitude SSIM came to 0.74-0.82 at 1e5 photons "
            "and 0.79-0.85 at 3e5 against pty-chi LSQML-100's 0.78-0.84 and 0.76-0.79 (with "
            "the orders' FRC filter, model.prior_orders_filter: within 0.05 in all five runs, "
            "but by only 0.017-0.030 at 1e5; without it short in 4 of 9 runs at 1e5 and 1 of "
            "6 at 3e5). Check the result against an iterative engine, or scan with more "
            "overlap or dose (docs/usage.md, 'Featureless probes at low coverage').")


COVERAGE_REFERENCE = 3.0
"""`coverage_passes`: scans whose `physics.coverage.scan_coverage` is at least this run the
model's passes (the simulator's default raster 4.8, the real X-ray-laser probe's Fermat
scan 3.4, the measured Siemens star 3.8: all unchanged)."""
COVERAGE_EXPONENT = 2.0
"""`coverage_passes`: below `COVERAGE_REFERENCE` the passes grow as its ratio to the
scan's coverage to this power (docs/benchmarks.md, twenty-third session)."""
MAX_COVERAGE_PASSES = 16
"""`coverage_passes` never asks for more passes than this: a model trained with 16 passes on
a scan with steps of 16 px (coverage 1.3) reconstructed it in 3.3 s, 12x faster than pty-chi
LSQML-100 on 625 patterns of 64x64 on 2 CPU cores (docs/benchmarks.md, twenty-third
session); more would take it toward the CPU target's 10x."""


def _checked_coverage(coverage: float) -> float:
    """``coverage`` as a float; ValueError unless it is > 0 (NaN included)."""
    if not coverage > 0:
        raise ValueError(f"coverage must be > 0; found {coverage}")
    return float(coverage)


def coverage_passes(passes: int, coverage: float) -> int:
    """The plain prior's passes on a scan of ``coverage`` (`physics.coverage.scan_coverage`)
    for a model of ``passes``: ``passes`` where the coverage is at least
    `COVERAGE_REFERENCE`, else ``ceil(passes (COVERAGE_REFERENCE / coverage) **
    COVERAGE_EXPONENT)``, at most `MAX_COVERAGE_PASSES` (and never fewer than ``passes``).

    Each pass moves a pixel by the updates of the patterns that light it, so where the
    patterns overlap less the prior converges less per pass: on a textured scan with steps
    of 16 px (coverage 1.3) the prior alone reached amplitude SSIM 0.668 after the default 4
    passes and 0.924 after 16 (and the 2 extra passes its agreeing halves add), and a
    network trained on 4-pass priors scored 0.647 against pty-chi LSQML-100's 0.830
    (docs/benchmarks.md, twenty-third session)."""
    passes = int(passes)
    coverage = _checked_coverage(coverage)
    if coverage >= COVERAGE_REFERENCE or passes >= MAX_COVERAGE_PASSES:
        return passes
    more = math.ceil(passes * (COVERAGE_REFERENCE / coverage) ** COVERAGE_EXPONENT - 1e-9)
    return max(passes, min(more, MAX_COVERAGE_PASSES))


def overrelaxed_coverage_warning(coverage: float, frc_filter: bool = True) -> str | None:
    """Training's and inference's warning for an over-relaxed prior (``prior_step_scale`` >
    1, the featureless recipe) that runs the FRC filter's halves (``frc_filter``) on a scan
    of ``coverage`` below `COVERAGE_REFERENCE`, else None: there each half covers the object
    less than 1.5 times, and the prior converges less. Under the default Gaussian beam with
    steps of 10 px (coverage 2.33) the network met the CPU target by 0.007 only (0.829
    against pty-chi LSQML-100's 0.872), and with steps of 12 px (1.65), where
    ``model.prior_frc_min_coverage`` now leaves the halves out, it scored 0.709 with them
    against 0.843 (docs/benchmarks.md, twenty-fifth and twenty-sixth sessions)."""
    coverage = _checked_coverage(coverage)
    if coverage >= COVERAGE_REFERENCE or not frc_filter:
        return None
    return (f"the scan's coverage {coverage:.2f} is below {COVERAGE_REFERENCE:.1f} and the "
            "physics prior is over-relaxed (model.prior_step_scale > 1, as the featureless "
            "recipe sets it) with the FRC filter's half-scan estimates, each covering the "
            "object half as often: on such scans it converges less and the network's "
            "amplitude can fall short of an iterative engine's (docs/usage.md, 'Featureless probes "
            "at low coverage'; below model.prior_frc_min_coverage, 2 for models trained since "
            "the option, the halves are left out); infer --refine-epochs 40 refines the result")


def coverage_agreement(coverage: float) -> float:
    """The half-scan agreement a plain prior's extra passes and phase momentum need on a
    scan of ``coverage``: `physics.prior_frc.EXTRA_PASS_AGREEMENT` times ``coverage /
    COVERAGE_REFERENCE`` where that is below 1, else the threshold itself. Each half of a
    scan covered less than `COVERAGE_REFERENCE` times is covered half as often and agrees
    with the other less than the whole scan's data support: on a real-probe Fermat scan
    with steps of 12 px (coverage 1.63, 1e5 photons) the halves agreed 0.425 after the
    scaled 14 passes, the momentum was dropped and the halves estimated again without it
    (prior 3.2 s), and with it kept the network scored amplitude / phase SSIM 0.639 / 0.612
    instead of 0.604 / 0.553, inference 3.0 s instead of 3.8 (pty-chi LSQML-100: 0.470 /
    0.689 in 42.9 s; docs/benchmarks.md, twenty-third session)."""
    coverage = _checked_coverage(coverage)
    return prior_frc.EXTRA_PASS_AGREEMENT * min(1.0, coverage / COVERAGE_REFERENCE)


def dose_ratio(amplitudes, train_input_scale: float) -> float:
    """sqrt(mean counts per pixel) of a scan over that of the model's training data.

    1 for the training scan itself (and when the training scale is unknown);
    e.g. 0.1 for a scan at 1 % of the training dose.
    """
    from ptychopinn.training.data import input_scale_of

    if not train_input_scale > 0:
        return 1.0
    scale = input_scale_of(amplitudes)
    return scale / train_input_scale if scale > 0 else 1.0


class ScanPrior:
    """Per-pattern physics priors of one scan, looked up by pattern index.

    Parameters
    ----------
    amplitudes
        ``(n, N, N)`` measured amplitudes of the scan (the model's data scale).
    positions_px
        ``(n, 2)`` probe positions ``[y, x]`` in pixels.
    probe
        ``(M, N, N)`` complex probe in the model's normalised scale.
    amplitude_scale
        The amplitudes are divided by this before the projections (the model's
        ``prior_amplitude_scale``).
    iterations, neighbors
        ``model.prior_iterations`` and ``model.prior_neighbors``.
    scope
        ``model.prior_scope``: ``"scan"`` or ``"neighbourhood"``.
    device
        Where the projections run (results are kept on the CPU).
    valid
        Optional ``(N, N)`` mask of good detector pixels.
    whole_pixel
        Look a pattern's prior up at its nearest whole-pixel window
        (``model.subpixel='probe_shift'``; scope 'scan').
    amplitude_step
        ``model.prior_amplitude_step`` (scope 'scan'; the neighbourhood prior
        takes whole steps).
    frc_filter
        ``model.prior_frc_filter``: filter the estimate's amplitude by the FRC of
        two half-scan estimates (`physics.prior_frc`; scope 'scan').
    batch_size
        ``model.prior_batch_size``: patterns per update of the passes (scope 'scan').
    start_phase
        ``model.prior_start``: the phase the passes start from, 'flat' or 'com' (scope
        'scan'; `physics.com_phase`), or 'auto': 'com' with the scan prior under a probe
        whose `physics.com_phase.probe_phase_curvature` is at most `COM_CURVATURE_LIMIT`,
        else 'flat' (``start_phase`` holds the choice).
    com_correction
        ``model.prior_com_correction``: correct the phase's low spatial frequencies by the
        patterns' centres of mass between passes (scope 'scan';
        `physics.prior_scan.scan_error_reduction`).
    com_check
        With ``com_correction``: apply each correction only where it lowers the canvas's
        misfit to the patterns (`physics.prior_scan.scan_error_reduction`'s; not a model
        option: False only to compare with the unchecked correction of before the
        thirty-fifth session, `benchmarks/bench_com_check.py`).
    step_scale
        ``model.prior_step_scale``: over-relaxation of every update of the passes (scope
        'scan'; `physics.prior_scan.scan_error_reduction`'s ``step_scale``).
    settle_passes
        ``model.prior_settle_passes``: plain passes the whole scan's estimate ends with
        (scope 'scan'; `physics.prior_scan.scan_error_reduction`'s).
    object_momentum
        ``model.prior_object_momentum``: heavy-ball momentum of the passes on the complex
        object (scope 'scan'; `physics.prior_scan.scan_error_reduction`'s).
    extra_iterations, phase_momentum
        Inference only, with ``frc_filter``: passes added, and the phase momentum the
        passes run with, where the halves agree (`physics.prior_frc.frc_filtered_estimate`);
        ignored without the filter.
    converge_passes
        With ``frc_filter``: at most this many passes added a few at a time while the halves
        agree more with each (`physics.prior_frc.frc_filtered_estimate`); ignored without
        the filter. Inference's, and training's with ``model.prior_train_converge``
        (`for_config`).
    gate_momentum
        Training only, with ``frc_filter`` and plain passes: the phase momentum whose halves
        decide whether the halves agree; where they do not, the converge blocks continue them
        with it, as inference's, else the passes run without it
        (`physics.prior_frc.frc_filtered_estimate`; `for_config`).
    orders
        ``model.prior_orders``: mini-batch orders whose estimates the whole scan's prior
        averages without ``frc_filter`` (`physics.prior_orders`; scope 'scan'; the FRC
        filter's halves ignore it); None: `default_orders` of ``step_scale``.
    orders_filter
        ``model.prior_orders_filter``: whether the mean of 2 or more orders has its
        amplitude filtered by the orders' FRC (`physics.prior_orders.filter_orders`); None:
        yes.
    """

    def __init__(
        self,
        amplitudes: Tensor,
        positions_px: np.ndarray | Tensor,
        probe: Tensor,
        amplitude_scale: float,
        iterations: int,
        neighbors: int,
        *,
        scope: str = "neighbourhood",
        device: torch.device | str = "cpu",
        valid: Tensor | None = None,
        chunk: int = 48,
        cache_limit_bytes: int | None = None,
        whole_pixel: bool = False,
        amplitude_step: float = 1.0,
        frc_filter: bool = False,
        batch_size: int = 64,
        extra_iterations: int = 0,
        phase_momentum: float = 0.0,
        converge_passes: int = 0,
        gate_momentum: float = 0.0,
        start_phase: str = "flat",
        com_correction: bool = False,
        step_scale: float = 1.0,
        settle_passes: int = 0,
        object_momentum: float = 0.0,
        com_check: bool = True,
        agreement_threshold: float | None = None,
        orders: int | None = None,
        orders_filter: bool | None = None,
    ) -> None:
        self.amplitudes = torch.as_tensor(amplitudes).detach()
        pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
        n, h, w = self.amplitudes.shape
        if pos.shape != (n, 2):
            raise ValueError(f"positions_px must be ({n}, 2); found {pos.shape}")
        if scope not in ("scan", "neighbourhood"):
            raise ValueError(f"scope must be 'scan' or 'neighbourhood'; found {scope!r}")
        if whole_pixel and scope != "scan":
            raise ValueError("whole_pixel priors need scope 'scan'")
        if amplitude_step != 1 and scope != "scan":
            raise ValueError(f"amplitude_step {amplitude_step} needs scope 'scan'")
        if frc_filter and scope != "scan":
            raise ValueError("frc_filter needs scope 'scan'")
        if start_phase not in PRIOR_STARTS:
            raise ValueError(f"start_phase must be one of {PRIOR_STARTS}; found {start_phase!r}")
        if start_phase == "com" and scope != "scan":
            raise ValueError(f"start_phase {start_phase!r} needs scope 'scan'")
        if com_correction and scope != "scan":
            raise ValueError("com_correction needs scope 'scan'")
        if isinstance(step_scale, bool) or not 0 < float(step_scale) <= MAX_STEP_SCALE:
            raise ValueError(f"prior step scale must be in (0, {MAX_STEP_SCALE}]; found "
                             f"{step_scale!r}")
        if float(step_scale) != 1.0 and scope != "scan":
            raise ValueError(f"step_scale {step_scale} needs scope 'scan'")
        self.step_scale = float(step_scale)
        """The over-relaxation the passes ran with (`physics.prior_scan`; 1: plain PIE)."""
        if isinstance(settle_passes, bool) or int(settle_passes) != settle_passes or (
                settle_passes < 0):
            raise ValueError(f"prior settle passes must be an integer >= 0; found "
                             f"{settle_passes!r}")
        if settle_passes and scope != "scan":
            raise ValueError(f"settle_passes {settle_passes} needs scope 'scan'")
        self.settle_passes = int(settle_passes)
        """Plain passes the whole scan's estimate ended with (`physics.prior_scan`)."""
        if orders is not None and (isinstance(orders, bool) or int(orders) != orders
                                   or not 1 <= orders <= MAX_ORDERS):
            raise ValueError(f"prior orders must be an integer in [1, {MAX_ORDERS}]; found "
                             f"{orders!r}")
        if orders is not None and orders > 1 and scope != "scan":
            raise ValueError(f"orders {orders} needs scope 'scan'")
        self.orders = 1 if scope != "scan" or frc_filter else int(
            default_orders(step_scale) if orders is None else orders)
        """Mini-batch orders the whole scan's estimate averaged (`physics.prior_orders`; 1
        with the FRC filter's halves and for the neighbourhood scope)."""
        if orders_filter is not None and not isinstance(orders_filter, bool):
            raise ValueError(f"prior orders filter must be True, False or None; found "
                             f"{orders_filter!r}")
        self.orders_filter = self.orders > 1 and orders_filter is not False
        """Whether the mean of the orders had its amplitude filtered by their FRC
        (`physics.prior_orders.filter_orders`; ``orders_filter`` None: wherever 2 or more
        orders ran and lit enough of the object together to read it)."""
        self.orders_agreement: float | None = None
        """The orders' FRC `physics.prior_frc.agreement` where ``orders_filter`` ran (None
        otherwise, or where their overlap was too small to read it)."""
        if isinstance(object_momentum, bool) or not 0 <= float(object_momentum) < 1:
            raise ValueError(f"prior object momentum must be in [0, 1); found "
                             f"{object_momentum!r}")
        if object_momentum and scope != "scan":
            raise ValueError(f"object_momentum {object_momentum} needs scope 'scan'")
        self.object_momentum = float(object_momentum)
        """The heavy-ball momentum the passes ran with (`physics.prior_scan`; 0: none)."""
        self.com_correction = bool(com_correction)
        """Whether the passes ran the centre-of-mass phase correction
        (`physics.prior_scan.scan_error_reduction`)."""
        self.com_from_passes = (self.com_correction and scope == "scan" and not frc_filter
                                and self.step_scale != 1.0)
        """Whether the correction read the predicted centres of mass off the passes' own
        far fields (`physics.prior_scan.scan_error_reduction`'s ``com_from_passes``): where
        over-relaxed passes run on the whole scan (the featureless recipe below
        ``model.prior_frc_min_coverage``), whose time binds the CPU target; the FRC
        filter's halves and plain passes predict every pattern afresh."""
        if isinstance(extra_iterations, bool) or int(extra_iterations) != extra_iterations or (
                extra_iterations < 0):
            raise ValueError(f"extra prior iterations must be an integer >= 0; found "
                             f"{extra_iterations!r}")
        if isinstance(phase_momentum, bool) or not 0 <= float(phase_momentum) < 1:
            raise ValueError(f"prior phase momentum must be in [0, 1); found {phase_momentum!r}")
        if isinstance(converge_passes, bool) or int(converge_passes) != converge_passes or (
                converge_passes < 0):
            raise ValueError(f"prior converge passes must be an integer >= 0; found "
                             f"{converge_passes!r}")
        if isinstance(gate_momentum, bool) or not 0 <= float(gate_momentum) < 1:
            raise ValueError(f"prior gate momentum must be in [0, 1); found {gate_momentum!r}")
        self.iterations = int(iterations)
        """The passes asked for (the model's, or inference's, after `coverage_passes`)."""
        self.passes = int(iterations)
        """Passes the prior ran (more than ``iterations`` where extra or converge passes
        ran)."""
        self.frc_filter = bool(frc_filter)
        """Whether the estimate's amplitude was filtered by its halves' FRC (`physics.prior_frc`)."""
        self.agreement: float | None = None
        """The FRC-filtered prior's half-scan agreement (`physics.prior_frc.agreement`;
        extra passes ran where it reached ``agreement_threshold``; after converge passes, the
        last kept block's); None without the filter."""
        self.phase_momentum = 0.0
        """The phase momentum the FRC-filtered prior's passes ran with (0 where its halves
        did not agree and no plain converge block was kept, and without the filter)."""
        self.converge_blocks: tuple[ConvergeBlock, ...] = ()
        """The FRC-filtered prior's converge blocks, as tried (`physics.prior_scan.ConvergeBlock`:
        what each read and whether it was kept); empty where none ran."""
        self.agreement_threshold = float(prior_frc.EXTRA_PASS_AGREEMENT
                                         if agreement_threshold is None else agreement_threshold)
        """The agreement its extra passes and phase momentum needed (`coverage_agreement`)."""
        self.scope = scope
        self.probe_curvature: float | None = None
        """The probe's `physics.com_phase.probe_phase_curvature` (radians) when the start
        was 'com' or 'auto' (scope 'scan'); None otherwise."""
        if scope == "scan" and start_phase != "flat":
            self.probe_curvature = probe_phase_curvature(probe)
        if start_phase == "auto":
            start_phase = ("com" if self.probe_curvature is not None
                           and self.probe_curvature <= COM_CURVATURE_LIMIT else "flat")
            log.info("prior start 'auto': %r (the probe's phase curvature %s, limit %.1f rad)",
                     start_phase, "-" if self.probe_curvature is None else
                     f"{self.probe_curvature:.2f}", COM_CURVATURE_LIMIT)
        elif start_phase == "com" and self.probe_curvature > COM_CURVATURE_LIMIT:
            log.warning(
                "prior start 'com' (model.prior_start / --prior-start): the probe's phase "
                "curvature is %.2f rad, above %.1f; under such a probe the object's amplitude "
                "reads as phase in the centres of mass and the 'flat' start is likely better "
                "('auto' chooses by this limit; docs/benchmarks.md, bench_prior_start.py).",
                self.probe_curvature, COM_CURVATURE_LIMIT)
        self.start_phase = str(start_phase)
        """The phase the passes started from: 'flat' or 'com' (`physics.com_phase`); a
        start 'auto' is 'com' when the probe's phase curvature is at most
        `physics.com_phase.COM_CURVATURE_LIMIT`, else 'flat'."""
        self.positions_px = pos
        # where a pattern's prior is looked up: its position, or (whole_pixel, for
        # model.subpixel 'probe_shift') the centre of its nearest whole-pixel window
        self.lookup_px = (whole_pixel_windows(torch.from_numpy(pos), w)[0].numpy() if whole_pixel
                          else pos)
        self.estimate: ScanEstimate | None = None
        self.cache: Tensor | None = None
        if scope == "scan":
            # |F(s P O)| = A  <=>  |F(P O)| = A / s: scale the probe, not the scan
            kw = dict(valid=valid, device=device, integer_grid=whole_pixel,
                      amplitude_step=float(amplitude_step), batch_size=int(batch_size),
                      start_phase=str(start_phase), com_correction=bool(com_correction),
                      com_check=bool(com_check),
                      step_scale=float(step_scale), settle_passes=int(settle_passes),
                      object_momentum=float(object_momentum))
            scaled_probe = probe.detach() * float(amplitude_scale)
            if frc_filter:
                self.estimate, _ = frc_filtered_estimate(
                    self.amplitudes, pos, scaled_probe, int(iterations),
                    extra_iterations=int(extra_iterations),
                    phase_momentum=float(phase_momentum),
                    converge_passes=int(converge_passes),
                    gate_momentum=float(gate_momentum),
                    agreement_threshold=agreement_threshold, **kw)
                self.passes = int(self.estimate.passes or iterations)
                self.agreement = self.estimate.agreement
                self.phase_momentum = float(self.estimate.phase_momentum or 0.0)
                self.converge_blocks = self.estimate.converge_blocks
            else:
                self.estimate = order_averaged_estimate(
                    self.amplitudes, pos, scaled_probe, int(iterations), self.orders,
                    frc_filter=self.orders_filter, com_from_passes=self.com_from_passes, **kw)
                self.orders_agreement = self.estimate.orders_agreement
                # too little overlap to read the orders' FRC: the mean ran unfiltered
                self.orders_filter = self.orders_agreement is not None
            self.estimate = ScanEstimate(self.estimate.canvas.cpu(), self.estimate.origin_px)
            return
        self.table = torch.from_numpy(nearest_patterns(pos, int(neighbors)))
        self.offsets = torch.from_numpy(
            (pos[self.table.numpy()] - pos[:, None, :]).astype(np.float32)
        )
        self.probe = probe.detach()
        self.amplitude_scale = float(amplitude_scale)
        self.iterations = int(iterations)
        self.device = torch.device(device)
        self.valid = valid
        self.chunk = int(chunk)
        limit = PRIOR_CACHE_LIMIT_BYTES if cache_limit_bytes is None else cache_limit_bytes
        if n * h * w * 8 <= limit:
            self.cache = self.compute(torch.arange(n))

    @classmethod
    def for_config(
        cls,
        model_cfg,
        amplitudes: Tensor,
        positions_px,
        probe: Tensor,
        *,
        prior_amplitude_scale: float,
        train_input_scale: float,
        iterations: int | None = None,
        frc_filter: bool | None = None,
        start_phase: str | None = None,
        com_correction: bool | None = None,
        step_scale: float | None = None,
        settle_passes: int | None = None,
        amplitude_units: str | None = None,
        orders: int | None = None,
        orders_filter: bool | None = None,
        training: bool = False,
        **kw,
    ) -> ScanPrior | None:
        """The prior a model with ``model_cfg`` (a `ModelConfig`) takes for one scan;
        None for raw-diffraction models.

        ``amplitude_units`` (the scan's; None: unknown) only decides `low_dose_warning`,
        logged where an over-relaxed prior runs on the whole scan of photon counts
        (`measured_photons`, read only there).

        The amplitudes are divided by ``prior_amplitude_scale`` times
        `dose_ratio` (1 on the training scan), so a scan recorded at another
        dose gives the network inputs on its training scale. ``iterations``
        overrides ``model_cfg.prior_iterations`` (inference only: the network
        corrects its prior, so a better converged prior gives a better output).
        ``frc_filter`` overrides ``model_cfg.prior_frc_filter`` (inference only; the
        constructor refuses it for the neighbourhood scope). ``extra_iterations`` (in
        ``kw``; inference only) are passes the FRC-filtered prior adds where its halves
        agree (`physics.prior_frc.frc_filtered_estimate`); ``phase_momentum`` (in ``kw``;
        inference only) likewise; ``converge_passes`` (in ``kw``; inference only) are passes
        added while the halves agree more with each; None for each is `inference_pass_options`'s default for
        the passes' step scale. ``start_phase`` overrides ``model_cfg.prior_start`` and
        ``com_correction`` ``model_cfg.prior_com_correction`` and ``step_scale``
        ``model_cfg.prior_step_scale`` and ``settle_passes``
        ``model_cfg.prior_settle_passes`` and ``orders`` ``model_cfg.prior_orders``
        (inference only; None in both: `default_orders`) and ``orders_filter``
        ``model_cfg.prior_orders_filter`` (inference only; bundles without it: on).

        ``training``: the prior a model trains on. With ``model_cfg.prior_train_converge``,
        plain passes with the FRC filter then add inference's converge blocks
        (`INFERENCE_PLAIN_CONVERGE_PASSES`), where inference's would run: the halves'
        agreement is read with inference's phase momentum (`INFERENCE_PHASE_MOMENTUM`, the
        ``gate_momentum``), and the blocks run as inference's (with it); where the halves
        agree, or no block is kept, the passes run without it, as before. Training passes
        none of ``extra_iterations``, ``phase_momentum`` and ``converge_passes``.
        """
        iters = int(model_cfg.prior_iterations or 0)
        if iters == 0:
            return None
        if orders is None:  # inference's, else the model's; None: default_orders
            orders = getattr(model_cfg, "prior_orders", None)
        if orders_filter is None:  # inference's, else the model's
            orders_filter = bool(getattr(model_cfg, "prior_orders_filter", True))
        if iterations is not None:  # inference may run more (or fewer) passes than training
            if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
                raise ValueError(f"prior iterations must be an integer >= 1; found {iterations!r}")
            iters = int(iterations)
        frc = bool(model_cfg.prior_frc_filter if frc_filter is None else frc_filter)
        step = float(model_cfg.prior_step_scale if step_scale is None else step_scale)
        if (step == 1.0 and model_cfg.prior_scope == "scan"
                and getattr(model_cfg, "prior_coverage_passes", False)):
            coverage = scan_coverage(positions_px, probe)
            if coverage < COVERAGE_REFERENCE:
                kw["agreement_threshold"] = coverage_agreement(coverage)
            if iterations is None:
                scaled = coverage_passes(iters, coverage)
                if scaled != iters:
                    log.info("prior passes: %d instead of the model's %d (the scan's coverage "
                             "%.2f is below %.1f; model.prior_coverage_passes)", scaled, iters,
                             coverage, COVERAGE_REFERENCE)
                iters = scaled
        elif step != 1.0 and model_cfg.prior_scope == "scan" and len(positions_px):
            coverage = scan_coverage(positions_px, probe)
            least = float(getattr(model_cfg, "prior_frc_min_coverage", 0.0))
            if frc and frc_filter is None and coverage < least:
                # halves covered half as often converge too little: the whole scan instead
                frc = False
                if iterations is None:
                    iters += LOW_COVERAGE_EXTRA_PASSES
                log.info("prior: %d whole-scan passes without the FRC filter's halves (the "
                         "scan's coverage %.2f is below %.1f; model.prior_frc_min_coverage), "
                         "the mean of %d mini-batch orders", iters, coverage, least,
                         orders or default_orders(step))
                warning = low_dose_warning(measured_photons(amplitudes, amplitude_units),
                                           coverage)
                if warning:
                    log.warning(warning)
            else:
                warning = overrelaxed_coverage_warning(coverage, frc)
                if warning:
                    log.warning(warning)
        if training:
            refuse_training_options(kw)
            if (frc and step == 1.0 and model_cfg.prior_scope == "scan"
                    and getattr(model_cfg, "prior_train_converge", False)):
                kw["converge_passes"] = INFERENCE_PLAIN_CONVERGE_PASSES
                kw["gate_momentum"] = INFERENCE_PHASE_MOMENTUM
        # training passes neither (0); inference passes None for the step scale's default
        kw["extra_iterations"], kw["phase_momentum"], kw["converge_passes"] = (
            inference_pass_options(step, kw.get("extra_iterations", 0),
                                   kw.get("phase_momentum", 0.0), kw.get("converge_passes", 0)))
        ratio = dose_ratio(amplitudes, float(train_input_scale))
        whole = getattr(model_cfg, "subpixel", "bilinear") == "probe_shift"
        return cls(amplitudes, positions_px, probe, float(prior_amplitude_scale) * ratio, iters,
                   int(model_cfg.prior_neighbors), scope=model_cfg.prior_scope,
                   whole_pixel=whole,
                   amplitude_step=float(model_cfg.prior_amplitude_step),
                   frc_filter=frc,
                   batch_size=int(model_cfg.prior_batch_size),
                   start_phase=str(start_phase or model_cfg.prior_start),
                   com_correction=bool(model_cfg.prior_com_correction if com_correction is None
                                       else com_correction),
                   step_scale=float(model_cfg.prior_step_scale
                                    if step_scale is None else step_scale),
                   settle_passes=int(model_cfg.prior_settle_passes
                                     if settle_passes is None else settle_passes),
                   object_momentum=float(getattr(model_cfg, "prior_object_momentum", 0.0)),
                   orders=orders, orders_filter=orders_filter,
                   **kw)

    @classmethod
    def for_model(
        cls, model, amplitudes: Tensor, positions_px, *, valid: Tensor | None = None, **kw
    ) -> ScanPrior | None:
        """`for_config` for a `PtychoPINN` (its probe buffer, scales and device)."""
        return cls.for_config(
            model.cfg, amplitudes, positions_px, model.physics.probe,
            prior_amplitude_scale=float(model.prior_amplitude_scale),
            train_input_scale=float(model.train_input_scale),
            device=model.prior_amplitude_scale.device, valid=valid, **kw,
        )

    def compute(self, pattern_ids: Tensor) -> Tensor:
        """``(len(pattern_ids), N, N)`` complex64 priors, computed now (on the CPU)."""
        ids = torch.as_tensor(pattern_ids, dtype=torch.long).reshape(-1)
        if self.estimate is not None:
            return self(ids)
        probe = self.probe.to(self.device)
        valid = None if self.valid is None else self.valid.to(self.device)
        parts = []
        with torch.no_grad():
            for s in range(0, ids.numel(), self.chunk):
                rows = ids[s : s + self.chunk]
                members = self.table[rows]
                amps = self.amplitudes[members].to(self.device, torch.float32)
                est = neighbourhood_error_reduction(
                    amps / self.amplitude_scale,
                    self.offsets[rows].to(self.device),
                    probe,
                    self.iterations,
                    valid=valid,
                )
                parts.append(est.cpu())
        if not parts:
            h, w = self.amplitudes.shape[-2:]
            return torch.zeros((0, h, w), dtype=torch.complex64)
        return torch.cat(parts)

    def __call__(self, index: Tensor) -> Tensor:
        """Priors of the patterns ``index`` (any shape) -> ``(*index.shape, N, N)``."""
        index = torch.as_tensor(index, dtype=torch.long)
        if self.estimate is not None:
            n = self.amplitudes.shape[-1]
            return self.estimate.patches(self.lookup_px[index.numpy()], n)
        if self.cache is not None:
            return self.cache[index]
        unique, inverse = torch.unique(index.reshape(-1), return_inverse=True)
        est = self.compute(unique)[inverse]
        return est.reshape(*index.shape, *est.shape[-2:])
