"""The scan prior's half-scan FRC filter: its estimate alone, scored against the truth.

`physics.prior_frc.frc_filtered_estimate` estimates two random halves of a scan
on the whole scan's canvas and filters the whole estimate's amplitude by the
Fourier ring correlation of the two half amplitudes (`model.prior_frc_filter`).
This script runs the prior alone - no network - with the true probe, with and
without the filter, reads the canvas directly (whole-pixel grid) and scores
amplitude and phase SSIM in the scanned region, with the compute seconds of
each (one run each, after a warm-up) and the halves' FRC at a quarter, half and
three quarters of the Nyquist frequency.

Scans: those of `bench_prior_step.py` (the default simulation with seeds 0, 3, 5
and 11, and the real-probe Fermat scan when ``../shared/data/run1084`` exists).

Usage::

    python benchmarks/bench_prior_frc.py [--passes 4 16] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _record import markdown_table  # noqa: E402
from bench_prior_step import canvas_in_object_frame, scans  # noqa: E402
from bench_ptychi import score  # noqa: E402


def run(scan, passes: int, frc_filter: bool):
    """(amp SSIM, phase SSIM, seconds, FRC of the halves or None) of the prior alone."""
    from ptychopinn.physics.prior_frc import frc_filtered_estimate
    from ptychopinn.physics.prior_scan import scan_error_reduction

    args = (torch.from_numpy(scan.diffraction), scan.positions_px,
            torch.from_numpy(scan.probe), passes)
    kw = {"integer_grid": True, "amplitude_step": 0.5}
    t0 = time.perf_counter()
    if frc_filter:
        est, frc = frc_filtered_estimate(*args, **kw)
    else:
        est, frc = scan_error_reduction(*args, **kw), None
    dt = time.perf_counter() - t0
    m = score(canvas_in_object_frame(est, scan.object.shape), scan)
    return m["amp_ssim"], m["phase_ssim"], dt, frc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--passes", type=int, nargs="+", default=[4, 16])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    if any(k < 1 for k in args.passes):
        p.error(f"--passes must be >= 1; found {args.passes}")
    torch.set_num_threads(args.threads)
    from ptychopinn.physics.prior_frc import FRC_RINGS

    q = [FRC_RINGS // 4, FRC_RINGS // 2, 3 * FRC_RINGS // 4]
    headers = ["scan", "passes", "plain: amp / phase SSIM (s)", "FRC filter: amp / phase SSIM (s)",
               "halves' FRC at 1/4, 1/2, 3/4 Nyquist"]
    rows = []
    for name, scan in scans().items():
        run(scan, 1, False)  # warm-up
        for k in args.passes:
            a0, p0, t0, _ = run(scan, k, False)
            a1, p1, t1, frc = run(scan, k, True)
            rows.append([name, str(k), f"{a0:.3f} / {p0:.3f} ({t0:.2f})",
                         f"{a1:.3f} / {p1:.3f} ({t1:.2f})",
                         ", ".join(f"{frc[i]:.2f}" for i in q)])
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(headers, rows)
    print(table)
    if args.record:
        from _record import append_section

        append_section(
            "The scan prior's half-scan FRC filter (bench_prior_frc.py)", table,
            notes="The physics prior alone (no network), true probe, amplitude step 0.5, "
            "canvas read directly; amp / phase SSIM against the truth in the scanned region, "
            f"compute s ({args.threads} threads, one run each). 'FRC filter': "
            "`model.prior_frc_filter` (the whole scan's amplitude filtered by 2F/(1+F) of the "
            "FRC F of two random half-scan estimates; physics/prior_frc.py).")


if __name__ == "__main__":
    main()
