"""The photon-sparse rule of the refinement, on and off, at low doses with a real probe.

`refine(sparse_counts=True)` (``InferenceConfig.refine_sparse_counts``): below 3
counts per photon (`refinement.steps.counts_per_photon`) the object step is
scaled by counts_per_photon / 3 and the momentum is off. This script measures
why: Fermat scans of unseen textured objects through the real X-ray-laser
probe of ``../shared/data/run1084`` at 1e3, 3e3 and 1e4 photons per pattern,
refined for ``--epochs`` from a pretrained model's object with the options of
``ptychopinn infer --refine-epochs`` (rule off: the old default, step 1 and
momentum 0.8; rule off and momentum 0; the rule) and from a flat object (plain
PIE, rule off / on). Amplitude / phase SSIM against the truth at the last epoch.

Usage::

    python benchmarks/bench_sparse_rule.py --model PRE_RP [--epochs 40] [--record]

(``PRE_RP``: see `bench_pretrained_scans`.)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_hard_scans import REAL_PROBE  # noqa: E402
from bench_pretrained_scans import real_probe_sim  # noqa: E402
from bench_ptychi import score  # noqa: E402
from bench_side_by_side import pinn_inference  # noqa: E402

SCANS = {  # name: (seed, photons per pattern)
    "fermat, textured, seed 25, 1e3 photons": (25, 1e3),
    "fermat, textured, seed 25, 3e3 photons": (25, 3e3),
    "fermat, textured, seed 24, 1e4 photons": (24, 1e4),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="pretrained run or bundle")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)
    if not REAL_PROBE.exists():
        print(f"bench_sparse_rule: SKIPPED: {REAL_PROBE} not found.")
        return
    torch.set_num_threads(args.threads)
    from ptychopinn.api import load_bundle
    from ptychopinn.config import InferenceConfig
    from ptychopinn.refinement import refine
    from ptychopinn.refinement.reconstruction import refine_options
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    model = load_bundle(args.model)
    variants = [
        ("network start, rule off (step 1, momentum 0.8)", {"refine_sparse_counts": False}),
        ("network start, rule off, momentum 0",
         {"refine_sparse_counts": False, "refine_momentum": 0.0}),
        ("network start, the rule", {}),
    ]
    rows = []
    for name, (seed, photons) in SCANS.items():
        sim = real_probe_sim() | {"pattern": "fermat", "n_positions": 600, "seed": seed,
                                  "photons_per_pattern": photons}
        scan = simulate_scan(SimulationConfig(**sim))
        rec, _ = pinn_inference(model, scan)
        for label, over in variants:
            icfg = InferenceConfig(refine_epochs=args.epochs, **over)
            kw = refine_options(icfg) | {"initial_object": rec.object,
                                         "positions_px": rec.positions_px, "progress": False}
            res = refine(scan, **kw)
            rows.append((name, label, res, score(res.object, scan)))
            print(" | ".join(_cells(rows[-1])), flush=True)
        for rule in (False, True):
            res = refine(scan, epochs=args.epochs, progress=False, sparse_counts=rule)
            label = f"flat start, plain PIE, rule {'on' if rule else 'off'}"
            rows.append((name, label, res, score(res.object, scan)))
            print(" | ".join(_cells(rows[-1])), flush=True)
    headers = ["scan (real probe)", "refinement", "counts per photon", "step scale",
               "amp SSIM", "phase SSIM"]
    table = "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                      + ["| " + " | ".join(_cells(r)) + " |" for r in rows])
    notes = (f"model: {args.model}; {args.epochs} epochs; counts per photon is measured only "
             "with the rule on (nan: not measured).")
    print(table)
    print(notes)
    if args.record:
        from _record import append_section

        append_section("Photon-sparse rule on / off (bench_sparse_rule.py)", table, notes=notes)


def _cells(row) -> list[str]:
    name, label, res, m = row
    return [name, label, f"{res.counts_per_photon:.2f}", f"{res.step_scale:.2f}",
            f"{m['amp_ssim']:.3f}", f"{m['phase_ssim']:.3f}"]


if __name__ == "__main__":
    main()
