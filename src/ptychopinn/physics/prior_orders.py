"""A whole scan's prior estimate averaged over several mini-batch orders.

The scan prior's passes (`physics.prior_scan.scan_error_reduction`) visit the patterns in
mini-batches of a fixed random order (its ``seed``). Over-relaxed passes (the featureless
recipe's, ``step_scale`` 2 with object momentum) write each batch's photon noise into the
canvas several times over, and how they do depends on the order: estimates of one scan in
two orders differ by noise that the order decides and the data do not. Their mean keeps
what the data say and halves the power of what the order put in. Run at once, each on one
of the caller's threads (`physics.at_once`), two orders cost on 2 CPU cores what one did
on both (2.5 s for 20 + 4 passes over 625 patterns of 64x64; exploration).

Where the featureless recipe runs on the whole scan (coverage below
``model.prior_frc_min_coverage``), the mean of two orders raised the prior alone's
amplitude SSIM on every Gaussian-beam scan measured, most at low dose (steps of 12 px:
0.672 -> 0.718 at 1e5 photons, 0.723 -> 0.762 at 3e5, 0.829 -> 0.848 at 1e6; a lines
object 0.851 -> 0.895), and networks trained on one order's prior gained almost as much
(0.650 -> 0.703, 0.709 -> 0.751, 0.820 -> 0.842, 0.847 -> 0.893;
`benchmarks/bench_prior_step_scale.py --orders`, docs/benchmarks.md, twenty-eighth
session); four orders gained more again (0.727, 0.787, 0.859) in about twice the time.

`filter_orders` then filters the mean's amplitude by the orders' own Fourier ring
correlation (the half-scan filter's rule, `physics.prior_frc`): where the orders disagree,
the passes wrote noise of their own making, and the amplitude is smoothed there. It raised
the network on eight of eleven whole-scan scans and left three level (docs/benchmarks.md,
thirty-first session; ``model.prior_orders_filter``, default on).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from ptychopinn.physics.at_once import at_once
from ptychopinn.physics.prior_frc import agreement, filter_amplitude
from ptychopinn.physics.prior_scan import ScanEstimate, canvas_frame, scan_error_reduction
from ptychopinn.physics.prior_update import pass_terms

MAX_ORDERS = 8
"""`order_averaged_estimate` refuses more orders than this."""


def order_averaged_estimate(amplitudes: Tensor, positions_px: Tensor | np.ndarray,
                            probe: Tensor, iterations: int, orders: int = 1,
                            frc_filter: bool = False, **kw) -> ScanEstimate:
    """The mean canvas of `scan_error_reduction`'s estimates with seeds ``0 .. orders - 1``
    (``kw``: its other arguments but ``seed``, ``frame`` and ``terms``).

    One order is `scan_error_reduction` itself (seed 0), bit for bit. Several share one
    canvas frame and the patterns' pass terms (computed once) and run at once on the CPU
    (`physics.at_once`); every estimate is bit for bit the one it would be alone on as many
    intra-op threads (the passes' float rounding, which the over-relaxation amplifies, can
    differ with the thread count: on a machine with more cores the third decimal of a score
    may move). The result has the frame and illumination of
    each and ``passes`` = ``iterations``.

    ``frc_filter`` (with 2 or more orders): the mean's amplitude is filtered per ring by
    the FRC of the even- and odd-numbered orders' mean amplitudes (`filter_orders`); the
    result's ``orders_agreement`` is their `physics.prior_frc.agreement`."""
    if isinstance(orders, bool) or int(orders) != orders or not 1 <= orders <= MAX_ORDERS:
        raise ValueError(f"orders must be an integer in [1, {MAX_ORDERS}]; found {orders!r}")
    for name in ("seed", "frame", "terms"):
        if name in kw:
            raise ValueError(f"order_averaged_estimate chooses {name} itself; found {name}=")
    if int(orders) == 1:
        return scan_error_reduction(amplitudes, positions_px, probe, iterations, **kw)
    pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
    n = amplitudes.shape[-1]
    device = torch.device(kw["device"]) if kw.get("device") is not None else probe.device
    frame = canvas_frame(pos, n, bool(kw.get("integer_grid", False))) if len(pos) else None
    terms = None if frame is None else pass_terms(amplitudes, pos, probe, frame, device=device)
    ests = at_once(lambda seed: scan_error_reduction(
        amplitudes, pos, probe, iterations, seed=seed, frame=frame, terms=terms, **kw),
        list(range(int(orders))), device=device)
    mean = replace(ests[0], canvas=_mean_canvas(ests), passes=int(iterations))
    return filter_orders(mean, ests) if frc_filter else mean


def _mean_canvas(ests: list[ScanEstimate]) -> Tensor:
    canvas = ests[0].canvas.clone()
    for e in ests[1:]:
        canvas.add_(e.canvas)
    return canvas.div_(len(ests))


def filter_orders(mean: ScanEstimate, ests: list[ScanEstimate]) -> ScanEstimate:
    """``mean`` (the mean of the orders' estimates ``ests``, all on one canvas) with its
    amplitude filtered per ring by ``2F / (1 + F)``, ``F`` the Fourier ring correlation of
    the even- and odd-numbered orders' mean amplitudes where both light the object
    (`physics.prior_frc.filter_amplitude`, the half-scan filter's rule); the phase is the
    mean's. The orders share the photon noise; they differ by what the order wrote into
    the canvas, so the rings where they disagree are those the over-relaxed passes filled
    with noise of their own making, and the filter smooths the amplitude there (with an
    odd number of orders the two sides are unequal and the weight is approximate). The
    result's ``orders_agreement`` is the FRC's `physics.prior_frc.agreement` (None where
    the sides overlap too little to read it, and then the mean is returned unfiltered)."""
    if len(ests) < 2 or mean.illumination is None:
        return mean
    sides = [ScanEstimate(_mean_canvas(ests[k::2]), mean.origin_px, mean.illumination)
             for k in (0, 1)]
    out, frc = filter_amplitude(mean, sides)
    if out is mean:  # too little overlap to read an FRC
        return mean
    return replace(mean, canvas=out.canvas, orders_agreement=agreement(frc))
