"""When the over-relaxed scan prior overshoots: the check behind ``model.prior_recipe='auto'``.

For simulated scans with a Gaussian beam (or the disk) of each ``--diameters`` width and
each ``--positions`` count, this script prints the probe's far-field tail
(`physics.probe.far_field_tail`), the scan prior's rms amplitude error against the truth
(over the well-lit pixels) with the default plain passes (4 passes, 64 patterns per
update), plain passes with the recipe's 12 passes of 32, the recipe's over-relaxed ones
(step scale 3) and those followed by its plain passes (the recipe as trained), then
`models.prior_recipe.overshoot_check`'s misfit ratio (over-relaxed / plain; for every
case, also where the far-field tail decides), the check's time in seconds and what
'auto' chooses. ``--object``, ``--seed``, ``--n``, ``--photons`` and ``--fresnel`` pick
the simulated scan.

Usage::

    python benchmarks/bench_prior_overshoot.py --diameters 12 16 20 25.6 32 40 --positions 225 625 [--record]
    python benchmarks/bench_prior_overshoot.py --probe disk --fresnel 1 --object lines --seed 2 --diameters 48 56 --positions 625 --n 64
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import markdown_table, print_and_record  # noqa: E402


def amplitude_error(est, scan) -> float:  # noqa: ANN001
    """rms amplitude error of a `ScanEstimate` against the scan's object, over the pixels
    where the probe's intensity is above 0.3 of its peak."""
    from ptychopinn.physics.geometry import extract_patches

    n, pos = scan.patch_size, torch.from_numpy(scan.positions_px)
    ill = torch.from_numpy(scan.probe).abs().square().sum(0)
    lit = ill / ill.max() > 0.3
    truth = extract_patches(torch.from_numpy(scan.object), pos, n)[:, lit].abs()
    return float((est.patches(scan.positions_px, n)[:, lit].abs() - truth).square().mean().sqrt())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--probe", default="gaussian", help="simulate's probe kind")
    p.add_argument("--diameters", type=float, nargs="+", default=[12, 16, 20, 25.6, 32, 40])
    p.add_argument("--positions", type=int, nargs="+", default=[225, 625])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--object", default="textured", help="simulate's object kind")
    p.add_argument("--n", type=int, default=64, help="pattern size N (diameters in its pixels)")
    p.add_argument("--photons", type=float, default=1e6, help="photons per pattern")
    p.add_argument("--fresnel", default="4", help="the probe's defocus as simulate's Fresnel "
                   "number, or 'none' (in focus)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    p.add_argument("--note", default="", help="added to the recorded heading")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ptychopinn.config import ModelConfig
    from ptychopinn.config.schema import FEATURELESS_RECIPE
    from ptychopinn.models.prior_recipe import (
        CHECK_STEP_SCALE,
        overshoot_check,
        resolve_prior_recipe,
    )
    from ptychopinn.physics.prior_scan import canvas_frame, scan_error_reduction
    from ptychopinn.physics.probe import FEATURELESS_TAIL, far_field_tail
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    passes, batch = int(FEATURELESS_RECIPE["prior_iterations"]), int(
        FEATURELESS_RECIPE["prior_batch_size"])
    scale, settle = (float(FEATURELESS_RECIPE["prior_step_scale"]),
                     int(FEATURELESS_RECIPE["prior_settle_passes"]))
    momentum = float(FEATURELESS_RECIPE["prior_object_momentum"])
    headers = ["object", "N", "seed", "probe", "Fresnel number", "diameter (px)", "patterns",
               "far-field tail beyond 4 px", "plain, 4 x 64", f"plain, {passes} x {batch}",
               f"step {scale:g}, {passes} x {batch}",
               f"step {scale:g}, object momentum {momentum:g}, {passes} x {batch}, then "
               f"{settle} plain (the recipe)",
               f"misfit ratio (the check's step {CHECK_STEP_SCALE:g} / plain)", "check s",
               "'auto' chooses"]
    rows = []
    try:
        fresnel = None if args.fresnel.lower() == "none" else float(args.fresnel)
    except ValueError:
        p.error(f"--fresnel: expected a number or 'none'; found {args.fresnel!r}")
    for n_pos in args.positions:
        for d in args.diameters:
            scan = simulate_scan(SimulationConfig(
                N=args.n, n_positions=n_pos, seed=args.seed, object_kind=args.object,
                photons_per_pattern=args.photons, probe_kind=args.probe, probe_diameter_px=d,
                defocus_fresnel_number=fresnel))
            amps = torch.from_numpy(scan.diffraction).float()
            probe, pos = torch.from_numpy(scan.probe), scan.positions_px
            frame = canvas_frame(pos, scan.patch_size)
            errs = [amplitude_error(scan_error_reduction(
                amps, pos, probe, k, amplitude_step=0.5, batch_size=b, step_scale=s,
                settle_passes=sp, object_momentum=m, frame=frame), scan)
                for k, b, s, sp, m in ((4, 64, 1.0, 0, 0.0), (passes, batch, 1.0, 0, 0.0),
                                       (passes, batch, scale, 0, 0.0),
                                       (passes, batch, scale, settle, momentum))]
            # the simulated probe is in the counts' scale: amplitude scale 1
            model, _ = resolve_prior_recipe(ModelConfig(), probe, amplitudes=amps,
                                            positions_px=pos, amplitude_scale=1.0)
            t0 = time.perf_counter()
            plain, relaxed = overshoot_check(ModelConfig(), probe, amps, pos)
            check_s = time.perf_counter() - t0
            ratio = f"{relaxed / plain:.2f}"  # also where the far-field tail decides
            rows.append([args.object, str(args.n), str(args.seed), args.probe, args.fresnel,
                         f"{d:g}", str(n_pos), f"{far_field_tail(probe):.1e}"]
                        + [f"{e:.4f}" for e in errs] + [ratio, f"{check_s:.2f}",
                                                        model.prior_recipe])
            print(" | ".join(rows[-1]), flush=True)
    heading = "When the over-relaxed prior overshoots (bench_prior_overshoot.py)"
    if args.note:
        heading += f" [{args.note}]"
    notes = (f"Simulated scans ({args.photons:g} photons per pattern) under a "
             f"{args.probe} probe of each width (defocus: Fresnel number {args.fresnel}); "
             "the scan prior's rms amplitude error against "
             "the truth over the well-lit pixels (passes x patterns per update; half "
             "amplitude steps, no FRC filter or centre-of-mass correction); the misfit ratio "
             "is models.prior_recipe.overshoot_check's, over the scan's central 2048 "
             "patterns at most (computed for every case, also where the far-field tail already "
             "decides); 'auto' keeps 'plain' when the tail is at least "
             f"{FEATURELESS_TAIL:g} (physics.probe.FEATURELESS_TAIL) or the ratio is above "
             "OVERSHOOT_LIMIT.")
    print_and_record(heading, markdown_table(headers, rows), notes, args.record)


if __name__ == "__main__":
    main()
