"""The scan prior's amplitude step: its estimate alone, scored against the truth.

`physics.prior_scan.scan_error_reduction` splits each pixel's PIE update into a
part along the object (the amplitude change, to first order) and one across it
(the phase change) and applies ``amplitude_step`` of the first
(`ModelConfig.prior_amplitude_step`; 1 is plain PIE). This script runs the
prior alone - no network - with the true probe on simulated scans, reads its
canvas directly (whole-pixel grid, no interpolation) and scores amplitude and
phase SSIM inside the scanned region for several steps and pass counts, with
the prior's compute seconds (one run each, after a warm-up).

Scans: the default simulation with seeds 0, 3, 5 and 11 (``ptychopinn
simulate --seed S``) and, when ``../shared/data/run1084`` is present, the
real-probe Fermat scan of `bench_hard_scans` (``realprobe``).

Usage::

    python benchmarks/bench_prior_step.py [--steps 1 0.5 0.25] [--passes 4 8 16] [--record]
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
from bench_ptychi import score  # noqa: E402


def canvas_in_object_frame(estimate, shape: tuple[int, int]) -> np.ndarray:
    """The estimate's canvas (whole-pixel origin) pasted into an object-sized array
    (ones outside it); only the scanned region is scored."""
    out = np.ones(shape, np.complex64)
    o = np.round(estimate.origin_px).astype(int)
    c = estimate.canvas.cpu().numpy()
    y0, x0 = max(o[0], 0), max(o[1], 0)
    y1, x1 = min(o[0] + c.shape[0], shape[0]), min(o[1] + c.shape[1], shape[1])
    out[y0:y1, x0:x1] = c[y0 - o[0]:y1 - o[0], x0 - o[1]:x1 - o[1]]
    return out


def scans(include_real: bool = True) -> dict:
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    out = {f"seed {s}": simulate_scan(SimulationConfig(seed=s)) for s in (0, 3, 5, 11)}
    if include_real:
        from bench_hard_scans import REAL_PROBE, simulate_case

        if REAL_PROBE.exists():
            out["real probe, Fermat 1e5"] = simulate_case("realprobe")
        else:
            print(f"skipping the real-probe scan: {REAL_PROBE} not found", file=sys.stderr)
    return out


def prior_scores(scan, passes: int, step: float) -> tuple[float, float, float]:
    """(amp SSIM, phase SSIM, seconds) of the prior alone with the true probe."""
    from ptychopinn.physics.prior_scan import scan_error_reduction

    t0 = time.perf_counter()
    est = scan_error_reduction(torch.from_numpy(scan.diffraction), scan.positions_px,
                               torch.from_numpy(scan.probe), passes, integer_grid=True,
                               amplitude_step=step)
    dt = time.perf_counter() - t0
    m = score(canvas_in_object_frame(est, scan.object.shape), scan)
    return m["amp_ssim"], m["phase_ssim"], dt


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    p.add_argument("--passes", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    headers = ["scan", "passes"] + [f"step {s:g}: amp / phase SSIM (s)" for s in args.steps]
    rows = []
    for name, scan in scans().items():
        prior_scores(scan, 1, 1.0)  # warm-up: the first call pays for allocations
        for k in args.passes:
            cells = []
            for step in args.steps:
                a, ph, dt = prior_scores(scan, k, step)
                cells.append(f"{a:.3f} / {ph:.3f} ({dt:.2f})")
            rows.append([name, str(k), *cells])
            print(" | ".join(rows[-1]), flush=True)
    table = markdown_table(headers, rows)
    print(table)
    if args.record:
        from _record import append_section

        append_section(
            "The scan prior's amplitude step (bench_prior_step.py)", table,
            notes="The physics prior alone (no network), true probe, canvas read directly; "
            "amp / phase SSIM against the truth in the scanned region, compute s of the "
            f"prior ({args.threads} threads, one run). Step 1 is plain "
            "mini-batch PIE (the prior before 2026-12-02); 0.5 is the default since then.")


if __name__ == "__main__":
    main()
