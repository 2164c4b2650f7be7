"""The scan prior's centre-of-mass correction with and without its misfit check.

Between passes the scan prior turns its phase by the integrated difference of the
measured and the predicted patterns' centres of mass (`physics.prior_scan`). Since the
thirty-fifth session a turn is applied only where it lowers the canvas's amplitude misfit
to the measured patterns (``com_check``). This script scores the scan prior alone, as a
model with the default ModelConfig computes it in training and inference
(`models.scan_prior.ScanPrior`: its passes, the FRC filter, the true probe scaled to the
median counts by Parseval), with the correction off, unchecked (as before) and checked,
against the true object (amplitude / phase SSIM, `ptychopinn.metrics.evaluate`), with each
prior's compute time (one run each, after a warm-up).

The scans: the real X-ray-laser probe (``../shared/data/run1084``) on the nine unseen
scans of `bench_pretrained_scans.py` (1e3 to 1e5 photons; skipped with a reason when the
probe is absent), the simulator's default scan (seed 11) and any ``--scan LABEL=PATH``
(an NPZ with its true object, e.g. ``models/hidden/*.npz``).

Usage::

    python benchmarks/bench_com_check.py [--iterations 16] [--scan grf=models/hidden/grf_disk.npz] [--record]
    python benchmarks/bench_com_check.py --check-patterns 256  # more checked patterns
    python benchmarks/bench_com_check.py --timing 5 [--record]  # the prior's time, N=64 / 128
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

MODES = (("off", False, True), ("unchecked", True, False), ("checked", True, True))
"""(label, com_correction, com_check)."""


def prior_run(scan, correction: bool, check: bool, iterations: int | None) -> dict:
    """The default ModelConfig's scan prior of ``scan`` (``iterations`` passes instead of
    the model's when given), placed on the object's frame and scored; with its seconds."""
    from bench_prior_start import estimate_scores

    from ptychopinn.config import ModelConfig
    from ptychopinn.models.scan_prior import ScanPrior

    amps = torch.from_numpy(np.asarray(scan.diffraction, np.float32))
    probe = torch.from_numpy(np.asarray(scan.probe)).to(torch.complex64)
    power = float((probe.abs() ** 2).sum())
    scale = float(np.sqrt(np.median(amps.square().sum((-2, -1)).numpy()) / power))
    t0 = time.perf_counter()
    prior = ScanPrior.for_config(ModelConfig(), amps, scan.positions_px, probe,
                                 prior_amplitude_scale=scale, train_input_scale=0.0,
                                 iterations=iterations, com_correction=correction,
                                 com_check=check)
    seconds = time.perf_counter() - t0
    m = estimate_scores(prior.estimate, scan)
    return {"amp": m["amp_ssim"], "phase": m["phase_ssim"], "passes": prior.passes,
            "s": seconds}


def timing_lines(repeats: int, sizes: tuple[int, ...] = (64, 128),
                 patterns: int = 625) -> list[str]:
    """The prior's seconds on the throughput benchmark's scans (`bench_throughput`: 625
    patterns of N=64 and N=128, seed 1) with the correction off, unchecked and checked:
    medians of ``repeats`` runs, the three modes alternating."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    lines = ["| N | patterns | off s | unchecked s | checked s | the correction's share | "
             "the check's share |", "|---|---|---|---|---|---|---|"]
    for n in sizes:
        scan = simulate_scan(SimulationConfig(N=n, n_positions=patterns, seed=1))
        prior_run(scan, True, True, 1)  # warm-up
        t = {m: [] for m, _, _ in MODES}
        for _ in range(repeats):
            for m, c, k in MODES:
                t[m].append(prior_run(scan, c, k, None)["s"])
        lines.append(timing_row(n, scan.n_patterns,
                                *(float(np.median(t[m])) for m, _, _ in MODES)))
        print(lines[-1], flush=True)
    return lines


def timing_row(n: int, patterns: int, off: float, unchecked: float, checked: float) -> str:
    """A --timing row: the seconds and the correction's and the check's shares of the
    checked prior's time."""
    return (f"| {n} | {patterns} | {off:.2f} | {unchecked:.2f} | {checked:.2f} "
            f"| {(unchecked - off) / checked:.0%} | {(checked - unchecked) / checked:.0%} |")


def scans(extra: list[str]) -> tuple[list[tuple[str, object]], list[str]]:
    """``[(label, scan)]`` and the reasons for what was skipped."""
    from bench_pretrained_scans import REAL_PROBE, cases, more_cases

    from ptychopinn.data import load_npz
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    out, skipped = [], []
    given = []  # read first, so a scan without its truth is refused before any simulation
    for item in extra:
        label, path = item.split("=", 1)
        scan = load_npz(path)
        if scan.object is None:
            raise SystemExit(f"--scan {item}: {path} has no true object to score against")
        given.append((label, scan))
    if Path(REAL_PROBE).exists():
        for label, spec in {**cases(), **more_cases()}.items():
            out.append((f"real probe: {label}", simulate_scan(SimulationConfig(**spec))))
    else:
        skipped.append(f"the real-probe scans ({REAL_PROBE} not found)")
    out.append(("simulator default, seed 11", simulate_scan(SimulationConfig(seed=11))))
    out += given
    return out, skipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, nargs="*", default=[],
                    help="pass counts to run besides the model's (e.g. 16)")
    ap.add_argument("--scan", action="append", default=[], metavar="LABEL=PATH",
                    help="a further scan with its true object (NPZ)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-patterns", type=int, default=None, metavar="K",
                    help="check each turn on K to 2K patterns spread over the scan (every "
                         "pattern below 2K) instead of physics.prior_scan.COM_CHECK_PATTERNS")
    ap.add_argument("--timing", type=int, default=0, metavar="REPEATS",
                    help="instead of the scores: the prior's time at N=64 and N=128 on 625 "
                         "patterns, off / unchecked / checked, medians of REPEATS runs")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    for item in args.scan:
        if "=" not in item or not Path(item.split("=", 1)[1]).exists():
            ap.error(f"--scan expects LABEL=PATH of an existing file; found {item!r}")
    if any(i < 1 for i in args.iterations):
        ap.error(f"--iterations must be >= 1; found {args.iterations}")
    if args.timing < 0:
        ap.error(f"--timing must be >= 0; found {args.timing}")
    if args.check_patterns is not None and args.check_patterns < 1:
        ap.error(f"--check-patterns must be >= 1; found {args.check_patterns}")
    sys.path.insert(0, str(Path(__file__).parent))
    from _record import print_and_record

    from ptychopinn.physics import prior_scan

    if args.check_patterns is not None:  # read by scan_error_reduction at each call
        prior_scan.COM_CHECK_PATTERNS = args.check_patterns
    COM_CHECK_PATTERNS, COM_CORRECTION_STEP = (prior_scan.COM_CHECK_PATTERNS,
                                               prior_scan.COM_CORRECTION_STEP)
    torch.set_num_threads(args.threads)
    checked_on = (f"on every pattern below {2 * COM_CHECK_PATTERNS}, else on "
                  f"{COM_CHECK_PATTERNS} to twice as many")
    if args.timing:
        lines = timing_lines(args.timing)
        notes = ("The scan prior of the default ModelConfig (its passes, the FRC filter) on "
                 "bench_throughput's simulated scans (625 patterns, seed 1), the true probe "
                 "scaled to the median counts: seconds, medians of "
                 f"{args.timing} runs with the three modes alternating (after a warm-up). "
                 "'off': no centre-of-mass correction; 'unchecked': every correction applied; "
                 f"'checked': the default, each turn checked ({checked_on}). The correction's "
                 "share: (unchecked - off) / checked; the check's: (checked - unchecked) / "
                 f"checked. torch threads {torch.get_num_threads()}.")
        print_and_record("The centre-of-mass correction's and its check's time "
                         "(bench_com_check.py --timing)", "\n".join(lines), notes, args.record)
        return
    todo, skipped = scans(args.scan)
    header = ["scan", "passes"] + [f"{m}: amp / phase SSIM" for m, _, _ in MODES] + [
        "checked - unchecked phase", "checked - off phase"] + [f"{m} s" for m, _, _ in MODES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    prior_run(todo[-1][1], True, True, 2)  # warm-up
    for label, scan in todo:
        for iters in [None, *args.iterations]:
            r = {m: prior_run(scan, c, k, iters) for m, c, k in MODES}
            passes = r["checked"]["passes"]
            cells = [f"{r[m]['amp']:.3f} / {r[m]['phase']:.3f}" for m, _, _ in MODES]
            d1 = r["checked"]["phase"] - r["unchecked"]["phase"]
            d2 = r["checked"]["phase"] - r["off"]["phase"]
            lines.append(f"| {label} | {passes} | " + " | ".join(cells) +
                         f" | {d1:+.3f} | {d2:+.3f} | " +
                         " | ".join(f"{r[m]['s']:.2f}" for m, _, _ in MODES) + " |")
            print(lines[-1], flush=True)
    notes = ("The scan prior alone as the default ModelConfig computes it (passes: the "
             "model's, more on scans that overlap less, or --iterations), the true probe "
             "scaled to the median counts; 'off': no centre-of-mass correction; 'unchecked': "
             "every correction applied (before the thirty-fifth session); 'checked': only "
             f"those that lower the amplitude misfit ({checked_on}); each turns by COM_CORRECTION_STEP = {COM_CORRECTION_STEP:g} of the "
             "integrated difference. Scores: ptychopinn.metrics.evaluate against the true "
             f"object; seconds: one run each. torch threads {torch.get_num_threads()}."
             + (f" Skipped: {'; '.join(skipped)}." if skipped else ""))
    print_and_record("The centre-of-mass correction's misfit check (bench_com_check.py)",
                     "\n".join(lines), notes, args.record)


if __name__ == "__main__":
    main()
