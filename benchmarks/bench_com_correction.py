"""The scan prior's centre-of-mass correction: what it costs, and its integrator's size.

Two tables, on the simulator's default N=64 scans of ``--sizes`` patterns (seed 101):

1. the physics prior alone as inference runs it for a default model
   (`ScanPrior.for_config` with ``ModelConfig(N=64)``, the model's passes plus
   `InferenceConfig`'s extra passes and phase momentum), seconds with
   ``model.prior_com_correction`` off and on (the median of ``--repeats`` runs each,
   alternated), and how many corrections ran;
2. `physics.com_phase.PhaseIntegrator`, the correction's integration, on each scan's
   canvas and on a jittered grid of about 10^5 positions on a 2,600-pixel canvas (the
   size of the simulator's 10^5-pattern scan): the grid's cells, the build (spreading
   and sparse LU factorisation) and one call's seconds, the factor's nonzeros and
   megabytes, and the peak RSS each added (Linux; `/proc/self/status` VmHWM after
   `clear_refs`).

Usage::

    python benchmarks/bench_com_correction.py [--sizes 625 2500 10000] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rss import reset_peak, status_mb  # noqa: E402


def prior_seconds(scan, correction: bool) -> tuple[float, int]:
    """Seconds of the inference-default prior of ``scan``, and the corrections run."""
    from ptychopinn.config import InferenceConfig, ModelConfig
    from ptychopinn.models.scan_prior import ScanPrior
    from ptychopinn.physics import prior_scan

    icfg = InferenceConfig()
    calls = []
    real = prior_scan._far_fields

    def counted(*a, **k):  # each correction checks its turn once (on the turned canvas)
        if k.get("turn_windows") is not None:
            calls.append(1)
        return real(*a, **k)

    prior_scan._far_fields = counted
    try:
        t = time.perf_counter()
        ScanPrior.for_config(ModelConfig(N=64, prior_com_correction=correction),
                             torch.as_tensor(scan.diffraction).float(), scan.positions_px,
                             torch.as_tensor(scan.probe), prior_amplitude_scale=1.0,
                             train_input_scale=1.0,
                             extra_iterations=icfg.prior_extra_iterations,
                             phase_momentum=icfg.prior_phase_momentum)
        return time.perf_counter() - t, len(calls)
    finally:
        prior_scan._far_fields = real


def integrator_row(label: str, pos: np.ndarray, shape: tuple[int, int],
                   probe_intensity: torch.Tensor) -> list[object]:
    """One row of table 2 for ``PhaseIntegrator(pos, shape, probe_intensity)``."""
    from ptychopinn.physics.com_phase import PhaseIntegrator

    rng = np.random.default_rng(0)
    grads = 0.01 * rng.standard_normal((len(pos), 2))
    base = status_mb("VmRSS")
    reset = reset_peak()
    t = time.perf_counter()
    integ = PhaseIntegrator(pos, shape, probe_intensity)
    build_s = time.perf_counter() - t
    build_peak = status_mb("VmHWM")
    after_build = status_mb("VmRSS")
    reset_peak()
    t = time.perf_counter()
    integ(grads)
    call_s = time.perf_counter() - t
    call_peak = status_mb("VmHWM")
    nnz = integ.factor_nonzeros  # copies L and U: after the peaks are read
    mb = nnz * 12 / 1e6  # float64 values and int32 indices
    cells = integ.grid_cells
    def fmt(peak, before):
        return f"+{peak - before:.0f}" if reset and peak is not None else "-"

    return [label, f"{shape[0]} x {shape[1]}", cells, f"{build_s:.3f}", f"{call_s * 1e3:.1f}",
            nnz, f"{mb:.1f}", fmt(build_peak, base), fmt(call_peak, after_build)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[625, 2500, 10000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if any(s < 4 for s in args.sizes):
        ap.error(f"--sizes must be >= 4 patterns; found {args.sizes}")
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1; found {args.repeats}")
    sys.path.insert(0, str(Path(__file__).parent))
    from _record import markdown_table, print_and_record

    from ptychopinn.physics.prior_scan import canvas_frame
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    torch.set_num_threads(args.threads)
    prior_rows, integ_rows = [], []
    # first, before the priors grow the heap (freed pages are reused, not counted): about
    # 10^5 positions, jittered, on the canvas of the simulator's 10^5-pattern scan
    rng = np.random.default_rng(0)
    ys, xs = np.meshgrid(np.arange(40, 2560, 8.0), np.arange(40, 2560, 8.0), indexing="ij")
    grid = np.stack([ys.ravel(), xs.ravel()], 1) + rng.uniform(-1, 1, (ys.size, 2))
    disk = torch.zeros(64, 64)
    r = torch.arange(64) - 32
    disk[(r[:, None] ** 2 + r[None, :] ** 2) < 16 ** 2] = 1.0
    integ_rows.append(integrator_row(f"{len(grid)} grid positions", grid, (2600, 2600), disk))
    print(integ_rows[-1], flush=True)
    for size in args.sizes:
        scan = simulate_scan(SimulationConfig(N=64, n_positions=size, seed=101))
        times = {False: [], True: []}
        runs = 0
        for _ in range(args.repeats):
            for on in (False, True):
                s, c = prior_seconds(scan, on)
                times[on].append(s)
                runs = c if on else runs
        off, on = statistics.median(times[False]), statistics.median(times[True])
        prior_rows.append([scan.n_patterns, f"{off:.2f}", f"{on:.2f}",
                           f"{100 * (on / off - 1):+.0f} %", runs])
        print(prior_rows[-1], flush=True)
        pos = np.asarray(scan.positions_px, dtype=np.float64)
        origin, shape = canvas_frame(pos, 64)
        probe = torch.as_tensor(scan.probe)
        ill = (probe.real.square() + probe.imag.square()).float()
        ill = ill.sum(0) if ill.ndim == 3 else ill
        integ_rows.append(integrator_row(f"{scan.n_patterns} patterns", pos - origin, shape, ill))
        print(integ_rows[-1], flush=True)
    table = markdown_table(["patterns", "prior s, correction off", "on", "difference",
                            "corrections run"], prior_rows)
    table += "\n\n" + markdown_table(
        ["PhaseIntegrator on", "canvas", "grid cells", "build s", "call ms", "LU nonzeros",
         "LU MB", "build peak RSS MB", "call peak RSS MB"], integ_rows)
    notes = (f"The simulator's default N=64 scans (seed 101); the prior as inference runs it "
             f"for ModelConfig(N=64) (its passes, InferenceConfig's extra passes and phase "
             f"momentum where the halves agree, the FRC filter), median of {args.repeats} "
             f"runs each, off and on alternated; 'corrections run' counts the corrections "
             f"(the halves' and the whole scan's; each checks its turn against the misfit, "
             f"applied or not). PhaseIntegrator: the build is "
             f"the spreading and the sparse LU (scipy splu, MMD_AT_PLUS_A), the call one "
             f"integration of random gradients; the last row a jittered 8-pixel grid with a "
             f"32-pixel disk's intensity as the probe. Peak RSS: what the build and the call "
             f"added beyond what the process held (Linux VmHWM after clear_refs; the grid "
             f"row runs first, in a fresh process; the scans' rows after the priors have "
             f"grown the heap, whose freed pages they reuse, read about 0). torch threads "
             f"{torch.get_num_threads()}.")
    print_and_record("The centre-of-mass correction's cost and its integrator "
                     "(bench_com_correction.py)", table, notes, args.record)


if __name__ == "__main__":
    main()
