"""The scan prior's start (flat or com) and its centre-of-mass correction against the
probe's phase curvature.

The com start (`physics.com_phase`) integrates the patterns' centres of mass, which
measure the exit wave's mean phase gradient. Under a probe whose phase is curved where
it is bright, the object's amplitude structure adds a false gradient of about
``C grad log |O|^2`` (``C``: `physics.com_phase.probe_phase_curvature`, radians). This
script simulates the same object and scan (the simulator's defaults, ``--seed``) under
probes of growing curvature (the default disk, a more defocused disk, a Gaussian, the
zone plate, the default disk times a quadratic phase ``exp(i a r^2)``, and with
``--probe-file`` a real probe) and scores the scan prior alone,
as a model trained with the default ModelConfig computes it during training
(`models.scan_prior.ScanPrior`: ``model.prior_iterations`` passes, the FRC filter, the
true probe scaled to the counts by Parseval), started flat and from the centres of
mass, and started flat with the centre-of-mass correction between passes
(``model.prior_com_correction``), against the true object (amplitude / phase SSIM, `ptychopinn.metrics.evaluate`).
The network is not involved: its input is what changes.

Usage::

    python benchmarks/bench_prior_start.py [--sizes 625 2500] [--probe-file ../shared/data/run1084/run1084_recon.npz] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

PROBES = [("disk", 4.0), ("disk", 0.25), ("gaussian", 0.1), ("zoneplate", None)]
"""(probe_kind, defocus_fresnel_number); the first is the simulator's default. (The
simulator's disks and Gaussians keep their phase nearly flat, C < 1.2 rad, however
defocused: `CURVES` adds curvature by hand.)"""
CURVES = [0.01, 0.02, 0.03, 0.045]
"""``a`` (radians per pixel squared): the default disk times ``exp(i a r^2)``."""


def prior_scores(scan, start: str, correction: bool = False) -> dict:
    """The default training-time scan prior of ``scan`` started from ``start`` (with the
    centre-of-mass ``correction``), scored."""
    from ptychopinn.config import ModelConfig
    from ptychopinn.models.scan_prior import ScanPrior

    amps = torch.from_numpy(np.asarray(scan.diffraction, np.float32))
    probe = torch.from_numpy(np.asarray(scan.probe)).to(torch.complex64)
    power = float((probe.abs() ** 2).sum())
    # |O| ~ 1 where the counts are the median: the probe's scale by Parseval
    scale = float(np.sqrt(np.median(amps.square().sum((-2, -1)).numpy()) / power))
    prior = ScanPrior.for_config(ModelConfig(), amps, scan.positions_px, probe,
                                 prior_amplitude_scale=scale, train_input_scale=0.0,
                                 start_phase=start, com_correction=correction)
    m = estimate_scores(prior.estimate, scan)
    return {"amp": m["amp_ssim"], "phase": m["phase_ssim"], "passes": prior.passes}


def estimate_scores(est, scan) -> dict:
    """`ptychopinn.metrics.evaluate` of a scan prior's estimate (`ScanEstimate`) placed on
    ``scan``'s object frame (whole pixels), against its true object."""
    from ptychopinn.metrics import evaluate

    canvas = est.canvas.numpy()
    out = np.zeros(scan.object.shape, np.complex64)
    o = np.round(np.asarray(est.origin_px)).astype(int)
    h, w = canvas.shape
    ys, xs = max(o[0], 0), max(o[1], 0)
    ye, xe = min(o[0] + h, out.shape[0]), min(o[1] + w, out.shape[1])
    out[ys:ye, xs:xe] = canvas[ys - o[0]:ye - o[0], xs - o[1]:xe - o[1]]
    return evaluate(out, scan.object, positions_px=scan.positions_px,
                    patch_size=int(scan.diffraction.shape[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[625, 2500])
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--probe-file", default=None,
                    help="also a real probe (NPZ with 'probeGuess', or .npy)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if any(s < 4 for s in args.sizes):
        ap.error(f"--sizes must be >= 4 patterns; found {args.sizes}")
    if args.probe_file is not None and not Path(args.probe_file).exists():
        ap.error(f"--probe-file {args.probe_file} not found")
    sys.path.insert(0, str(Path(__file__).parent))
    from _record import print_and_record

    from ptychopinn.physics.com_phase import COM_CURVATURE_LIMIT, probe_phase_curvature
    from ptychopinn.physics.prior_scan import COM_CORRECTION_STEP
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    torch.set_num_threads(args.threads)
    probes = [(f"{k}" + ("" if f is None else f" F={f:g}"),
               dict(probe_kind=k, defocus_fresnel_number=f)) for k, f in PROBES]
    tmp = tempfile.TemporaryDirectory()
    disk = simulate_scan(SimulationConfig(N=64, n_positions=4, seed=args.seed)).probe
    r2 = (np.arange(64) - 32.0)[:, None] ** 2 + (np.arange(64) - 32.0)[None, :] ** 2
    for a in CURVES:
        path = Path(tmp.name) / f"disk_quadratic_{a:g}.npy"
        np.save(path, (disk * np.exp(1j * a * r2)).astype(np.complex64))
        probes.append((f"disk F=4 x exp(i {a:g} r^2)", dict(probe_kind="file", probe_file=str(path))))
    if args.probe_file:
        probes.append((Path(args.probe_file).name,
                       dict(probe_kind="file", probe_file=str(args.probe_file))))
    header = ["probe", "curvature C (rad)", "patterns", "flat: amp / phase SSIM",
              "com: amp / phase SSIM", "com - flat phase", "flat + correction: amp / phase SSIM",
              "correction - flat phase"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    passes = set()
    for name, spec in probes:
        for size in args.sizes:
            scan = simulate_scan(SimulationConfig(N=64, n_positions=size, seed=args.seed, **spec))
            curv = probe_phase_curvature(torch.from_numpy(np.asarray(scan.probe)))
            flat, com = prior_scores(scan, "flat"), prior_scores(scan, "com")
            corr = prior_scores(scan, "flat", correction=True)
            passes.update([flat["passes"], com["passes"], corr["passes"]])
            lines.append(f"| {name} | {curv:.2f} | {scan.n_patterns} | {flat['amp']:.3f} / "
                         f"{flat['phase']:.3f} | {com['amp']:.3f} / {com['phase']:.3f} | "
                         f"{com['phase'] - flat['phase']:+.3f} | {corr['amp']:.3f} / "
                         f"{corr['phase']:.3f} | {corr['phase'] - flat['phase']:+.3f} |")
            print(lines[-1], flush=True)
    tmp.cleanup()
    notes = (f"Scans simulated with the simulator's defaults but the probe "
             f"(SimulationConfig(n_positions=..., seed={args.seed}, probe_kind=..., "
             f"defocus_fresnel_number=...)); the scan prior alone as the default ModelConfig "
             f"computes it in training (passes run: {', '.join(str(p) for p in sorted(passes))}), "
             f"the true probe scaled to the median counts; scores: ptychopinn.metrics.evaluate "
             f"against the true object. The scan prior logs a warning when a com start meets "
             f"a curvature above COM_CURVATURE_LIMIT = {COM_CURVATURE_LIMIT:g} rad; the "
             f"correction turns by COM_CORRECTION_STEP = {COM_CORRECTION_STEP:g} of each "
             f"integrated difference. torch "
             f"threads {torch.get_num_threads()}.")
    print_and_record("The prior's start and centre-of-mass correction against the probe's "
                     "phase curvature "
                     "(bench_prior_start.py)", "\n".join(lines), notes, args.record)


if __name__ == "__main__":
    main()
