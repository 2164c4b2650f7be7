"""The network's precision at inference: float32 against bfloat16 on the same models.

For each trained model of `train_models.py`'s layout (``MODELS/seedN`` trained on
``MODELS/scans/seedN.npz``) the scan is reconstructed with ``execution.precision``
``32-true`` and ``bf16-mixed`` (the generator under bfloat16 autocast; what ``auto``,
the default, picks on a CPU with AMX-BF16 units): amplitude and phase SSIM against
the truth, the largest difference between the two objects, and the median time of
3 runs after a warm-up (whole inference and its prediction step).

Usage::

    python benchmarks/train_models.py --out models --only seed2 seed7 seed11 seed13
    python benchmarks/bench_precision.py --models models --seeds 2 7 11 13 [--record]
    python benchmarks/bench_precision.py --models models --seeds 11 \
        --cases textured_1e4 textured_1e3 image     # the seed-11 model on the side-by-side's
                                                    # low-dose scans and unseen picture

On a CPU without AMX-BF16 bfloat16 is emulated: expect it to be slower there (the
reason ``auto`` keeps float32 on such CPUs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

PRECISIONS = ("32-true", "bf16-mixed")


def compare_scan(model_path: Path, scan, scan_path, repeats: int = 3) -> dict:
    """Scores and times of one model on a scan (loaded from ``scan_path``) in each of
    `PRECISIONS`."""
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import evaluate

    loaded = load_pinn(model_path)
    if scan.object is None:
        raise SystemExit(f"{scan_path}: no true object (objectGuess) to score against")
    out = {}
    for prec in PRECISIONS:
        cfg = InferenceConfig(execution={"precision": prec})
        reconstruct_pytorch(loaded, scan, cfg)  # warm-up
        times, predict = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rec = reconstruct_pytorch(loaded, scan, cfg)
            times.append(time.perf_counter() - t0)
            predict.append(rec.timings_s["predict"])
        m = evaluate(rec.object, scan.object, positions_px=scan.positions_px,
                     patch_size=scan.patch_size)
        out[prec] = {"rec": rec, "amp": m["amp_ssim"], "phase": m["phase_ssim"],
                     "s": statistics.median(times), "predict_s": statistics.median(predict)}
    a, b = (out[p]["rec"] for p in PRECISIONS)
    lit = a.weight > 0
    out["max_diff"] = float(np.abs(a.object - b.object)[lit].max())
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from train_models import add_seed_model_arguments, seed_model_runs

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed_model_arguments(ap)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.models)
    from _record import print_and_record

    header = ["model seed (scan)", "float32: amp / phase SSIM", "bfloat16: amp / phase SSIM",
              "max abs. object difference", "float32: s (predict s)", "bfloat16: s (predict s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, model, load in seed_model_runs(root, args.seeds, args.cases):
        r = compare_scan(model, *load())
        a, b = r["32-true"], r["bf16-mixed"]
        lines.append(f"| {label} | {a['amp']:.4f} / {a['phase']:.4f} | {b['amp']:.4f} / "
                     f"{b['phase']:.4f} | {r['max_diff']:.4f} | {a['s']:.2f} "
                     f"({a['predict_s']:.2f}) | {b['s']:.2f} ({b['predict_s']:.2f}) |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    scans = ("their own scans" if not args.cases else
             f"bench_side_by_side.py's cases {', '.join(args.cases)} simulated with the seed")
    notes = (f"models {root}/seedN on {scans} (625 patterns of 64x64); torch threads {torch.get_num_threads()}; times: median of 3 "
             "inference + stitching runs after a warm-up, the prediction step in brackets; "
             "the difference is over the stitched pixels (objects of amplitude ~0.5-1).")
    print_and_record("The network in float32 vs bfloat16 at inference (bench_precision.py)",
                     table, notes, args.record)


if __name__ == "__main__":
    main()
