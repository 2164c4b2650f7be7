"""The scan prior's mini-batch size: its estimate alone, scored against the truth,
and its time on a large scan.

`model.prior_batch_size` is how many patterns each update of the scan prior's PIE
passes takes (`physics.prior_scan`); smaller batches update the canvas more often
per pass. This script runs the prior alone - no network - as a model with the
defaults computes it (4 passes, amplitude step 0.5, the half-scan FRC filter,
whole-pixel grid) with the true probe, for each batch size, and scores amplitude
and phase SSIM in the scanned region (canvas read directly), with the compute
seconds of each (one run each, after a warm-up). Scans: the default simulation
with seeds 0, 3, 5, 11 (those of `bench_prior_step.py`), 7 and 23 (no default was
tuned on them), and the real-probe Fermat scan when ``../shared/data/run1084``
exists.

The time on a large scan (``--large N``, default 10^4 patterns of 64^2 on a
raster with 8 px steps) is what inference pays per scan for the prior: random
amplitudes, since the work does not depend on the values.

Usage::

    python benchmarks/bench_prior_batch.py [--batch-sizes 64 32 16 8] [--large 10000]
        [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _record import markdown_table  # noqa: E402
from bench_prior_step import canvas_in_object_frame, scans  # noqa: E402
from bench_ptychi import score  # noqa: E402


def prior_alone(amplitudes, positions_px, probe, batch_size: int):
    """The default model's scan prior (FRC filter, its passes and amplitude step) with
    ``batch_size`` patterns per update; returns ``(estimate, seconds)``."""
    from ptychopinn.config import ModelConfig
    from ptychopinn.physics.prior_frc import frc_filtered_estimate

    m = ModelConfig()
    t0 = time.perf_counter()
    est, _ = frc_filtered_estimate(amplitudes, positions_px, probe, m.prior_iterations,
                                   integer_grid=True, amplitude_step=m.prior_amplitude_step,
                                   batch_size=batch_size)
    return est, time.perf_counter() - t0


def large_scan(n_patterns: int, n: int = 64, seed: int = 0):
    """``(amplitudes, positions, probe)`` of a raster scan of ``n_patterns`` (8 px steps,
    jittered by up to 1 px) with random amplitudes and a Gaussian probe."""
    side = int(np.ceil(np.sqrt(n_patterns)))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] * 8.0 + n
    pos = np.stack([yy.ravel(), xx.ravel()], 1)[:n_patterns]
    pos = pos + rng.uniform(-1, 1, pos.shape)
    amps = torch.from_numpy(rng.uniform(0, 3, (len(pos), n, n)).astype(np.float32))
    y, x = np.mgrid[-n // 2:n // 2, -n // 2:n // 2]
    probe = torch.from_numpy(np.exp(-(x**2 + y**2) / (n * n / 20.0)).astype(np.complex64))
    return amps, pos, probe


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 32, 16, 8])
    p.add_argument("--large", type=int, default=10_000,
                   help="patterns of the timed large scan (0: skip it)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    if any(b < 1 for b in args.batch_sizes):
        p.error(f"--batch-sizes must be >= 1; found {args.batch_sizes}")
    if args.large < 0:
        p.error(f"--large must be >= 0; found {args.large}")
    torch.set_num_threads(args.threads)
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    cases = scans()
    for s in (7, 23):
        cases[f"seed {s}"] = simulate_scan(SimulationConfig(seed=s))
    headers = ["scan"] + [f"batch {b}: amp / phase SSIM (s)" for b in args.batch_sizes]
    rows = []
    for name, scan in cases.items():
        args_ = (torch.from_numpy(scan.diffraction), scan.positions_px,
                 torch.from_numpy(scan.probe))
        prior_alone(*args_, args.batch_sizes[0])  # warm-up
        row = [name]
        for b in args.batch_sizes:
            est, dt = prior_alone(*args_, b)
            m = score(canvas_in_object_frame(est, scan.object.shape), scan)
            row.append(f"{m['amp_ssim']:.3f} / {m['phase_ssim']:.3f} ({dt:.2f})")
        rows.append(row)
        print(" | ".join(row), flush=True)
    if args.large:
        amps, pos, probe = large_scan(args.large)
        row = [f"{args.large} patterns (random), seconds"]
        for b in args.batch_sizes:
            _, dt = prior_alone(amps, pos, probe, b)
            row.append(f"{dt:.1f}")
        rows.append(row)
        print(" | ".join(row), flush=True)
    table = markdown_table(headers, rows)
    print(table)
    if args.record:
        from _record import append_section

        append_section(
            "The scan prior's mini-batch size (bench_prior_batch.py)", table,
            notes="The physics prior alone (no network) as a default model computes it "
            "(4 passes, amplitude step 0.5, half-scan FRC filter), true probe, canvas read "
            "directly; amp / phase SSIM against the truth in the scanned region, compute s "
            f"({args.threads} threads, one run each). `model.prior_batch_size` is the batch "
            "size (64 by default).")


if __name__ == "__main__":
    main()
