"""Benchmark: physics refinement of a simulated scan from a flat object.

Simulates a scan (`ptychopinn.simulation`), runs `ptychopinn.refinement.refine`
from a flat object and prints amplitude/phase SSIM (`ptychopinn.metrics.evaluate`)
against the truth versus wall-clock and CPU seconds (the evaluation itself is
not counted). Example::

    python benchmarks/bench_refinement.py --photons 1e6 --epochs 40 --every 5
    python benchmarks/bench_refinement.py --method adam --learning-rate 0.02
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--positions", type=int, default=625)
    p.add_argument("--photons", type=float, default=1e6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--every", type=int, default=5, help="Evaluate every this many epochs.")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--method", choices=["pie", "adam"], default="pie")
    p.add_argument("--fit", choices=["amplitude", "poisson"], default=None)
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--constant-step", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="Print one JSON line per evaluation.")
    args = p.parse_args(argv)

    import torch

    from ptychopinn.metrics import evaluate
    from ptychopinn.refinement import refine
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    if args.threads:
        torch.set_num_threads(args.threads)
    scan = simulate_scan(
        SimulationConfig(N=args.N, n_positions=args.positions,
                         photons_per_pattern=args.photons, seed=args.seed)
    )
    kw = {k: v for k, v in (("learning_rate", args.learning_rate), ("fit", args.fit),
                            ("alpha", args.alpha), ("adaptive_step", False if args.constant_step else None)) if v is not None}
    rows: list[dict] = []
    cpu = {"t0": time.process_time(), "paused": 0.0}

    def on_epoch(epoch: int, record: dict, obj) -> None:
        c0 = time.process_time()
        if epoch == 1 or epoch % args.every == 0 or epoch == args.epochs:
            m = evaluate(obj, scan.object, positions_px=scan.positions_px, patch_size=args.N)
            row = {
                "epoch": epoch,
                "wall_s": round(record["seconds"], 2),
                "cpu_s": round(c0 - cpu["t0"] - cpu["paused"], 2),
                "loss": round(record["loss"], 5),
                "amp_ssim": round(m["amp_ssim"], 4),
                "phase_ssim": round(m["phase_ssim"], 4),
            }
            rows.append(row)
            print(json.dumps(row) if args.json else
                  f"epoch {epoch:4d}  wall {row['wall_s']:7.2f} s  cpu {row['cpu_s']:7.2f} s  "
                  f"loss {row['loss']:.5f}  amp_ssim {row['amp_ssim']:.4f}  "
                  f"phase_ssim {row['phase_ssim']:.4f}", flush=True)
        cpu["paused"] += time.process_time() - c0

    print(f"# N={args.N} positions={args.positions} photons={args.photons:g} "
          f"method={args.method} {kw} threads={torch.get_num_threads()}")
    refine(scan, None, epochs=args.epochs, batch_size=args.batch_size, method=args.method,
           device=args.device, progress=False, callback=on_epoch, **kw)
    return rows


if __name__ == "__main__":
    main()
