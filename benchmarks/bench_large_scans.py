"""Larger scans: how the network's reconstruction holds up as the scan grows.

The benchmark scans of the other scripts have 625 patterns. Here a trained model
reconstructs simulated scans of 625, 2,500 and 10,000 patterns (``--sizes``; the
simulator's defaults, a new object per ``--seeds`` seed) with the default inference
options but the physics prior's start (``InferenceConfig.prior_start``: 'flat' or 'com',
`physics.com_phase`) and the phase synchronisation ('global' or 'waves'), scored
against the truth (amplitude / phase SSIM after alignment, `ptychopinn.metrics.evaluate`),
with the prior's and the whole reconstruction's seconds of one run.

Usage::

    python benchmarks/train_models.py --out models --only seed7
    python benchmarks/bench_large_scans.py --model models/seed7 [--record]
    python benchmarks/bench_large_scans.py --model models_com/seed7 --sizes 625 2500 10000 --record

``--prior-iterations K`` runs K passes instead of the model's (the cost of converging a
flat start by more passes instead).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

VARIANTS = [("flat", "global"), ("flat", "waves"), ("com", "global"), ("com", "waves")]


def run(loaded, scan, start: str, sync: str, passes: int | None) -> dict:
    """One reconstruction's scores and seconds."""
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import evaluate

    cfg = InferenceConfig(prior_start=start, phase_sync_method=sync, prior_iterations=passes,
                          figures=False)
    t = time.perf_counter()
    rec = reconstruct_pytorch(loaded, scan, cfg)
    total = time.perf_counter() - t
    m = evaluate(rec.object, scan.object, positions_px=scan.positions_px,
                 patch_size=scan.patch_size)
    return {"amp": m["amp_ssim"], "phase": m["phase_ssim"], "prior": rec.timings_s["prior"],
            "total": total, "ran": rec.phase_sync, "passes": rec.prior_passes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a trained run (N=64)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[625, 2500, 10000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[101])
    ap.add_argument("--variants", nargs="+", default=[f"{a}/{b}" for a, b in VARIANTS],
                    choices=[f"{a}/{b}" for a, b in VARIANTS], help="prior start / sync")
    ap.add_argument("--prior-iterations", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if not Path(args.model).exists():
        ap.error(f"--model {args.model} not found")
    if any(s < 4 for s in args.sizes):
        ap.error(f"--sizes must be >= 4 patterns; found {args.sizes}")
    if args.prior_iterations is not None and args.prior_iterations < 1:
        ap.error(f"--prior-iterations must be >= 1; found {args.prior_iterations}")
    sys.path.insert(0, str(Path(__file__).parent))
    from _record import print_and_record

    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    torch.set_num_threads(args.threads)
    loaded = load_pinn(args.model)
    if loaded.config.model.N != 64:
        ap.error(f"--model must be an N=64 model; {args.model} has N={loaded.config.model.N}")
    variants = [tuple(v.split("/")) for v in args.variants]
    header = ["patterns (seed)"] + [f"start {a}, sync {b}: amp / phase SSIM, prior s, total s"
                                    for a, b in variants]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    passes = set()
    for size in args.sizes:
        for seed in args.seeds:
            scan = simulate_scan(SimulationConfig(N=64, n_positions=size, seed=seed))
            cells = [f"{scan.n_patterns} ({seed})"]
            for start, sync in variants:
                r = run(loaded, scan, start, sync, args.prior_iterations)
                passes.add(r["passes"])
                ran = "" if r["ran"] == sync else f" (ran {r['ran']})"
                cells.append(f"{r['amp']:.3f} / {r['phase']:.3f}, {r['prior']:.1f}, "
                             f"{r['total']:.1f}{ran}")
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    mcfg = loaded.config.model
    notes = (f"model {args.model} (N=64, gridsize {mcfg.gridsize}, trained with "
             f"model.prior_start={mcfg.prior_start!r}, model.prior_com_correction="
             f"{mcfg.prior_com_correction}); scans simulated with the simulator's "
             f"defaults (SimulationConfig(n_positions=..., seed=...)); default inference "
             f"options but InferenceConfig.prior_start and phase_sync_method"
             + (f", prior_iterations={args.prior_iterations}" if args.prior_iterations else "")
             + f" (prior passes run: {', '.join(str(p) for p in sorted(passes))}); scores: "
             f"ptychopinn.metrics.evaluate against the true object; seconds of one run each, "
             f"torch threads {torch.get_num_threads()}.")
    print_and_record("Larger scans: the prior's start and the phase synchronisation "
                     "(bench_large_scans.py)", "\n".join(lines), notes, args.record)


if __name__ == "__main__":
    main()
