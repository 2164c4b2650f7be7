"""Passes of the physics prior at inference (``infer --prior-iterations``) on trained models.

For each model of `train_models.py`'s layout (``MODELS/seedN`` trained on
``MODELS/scans/seedN.npz`` with the default 4 passes) the scan is reconstructed
with each pass count of ``--passes`` (default 4 6 8) and the defaults otherwise:
amplitude and phase SSIM against the truth and the median time of 3 inference +
stitching runs after a warm-up.

Usage::

    python benchmarks/train_models.py --out models --only seed2 seed7 seed11 seed13
    python benchmarks/bench_inference_passes.py --models models --seeds 2 7 11 13 [--record]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


def scores(model_path: Path, scan_path: Path, passes: list[int], repeats: int = 3) -> list[dict]:
    """Amp / phase SSIM and median seconds of one model on its scan per pass count."""
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.data.npz import load_npz
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import evaluate

    loaded = load_pinn(model_path)
    scan = load_npz(scan_path)
    if scan.object is None:
        raise SystemExit(f"{scan_path}: no true object (objectGuess) to score against")
    out = []
    for k in passes:
        # exactly k passes (no extra passes where the halves agree)
        cfg = InferenceConfig(prior_iterations=k, prior_extra_iterations=0)
        reconstruct_pytorch(loaded, scan, cfg)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rec = reconstruct_pytorch(loaded, scan, cfg)
            times.append(time.perf_counter() - t0)
        m = evaluate(rec.object, scan.object, positions_px=scan.positions_px,
                     patch_size=scan.patch_size)
        out.append({"amp": m["amp_ssim"], "phase": m["phase_ssim"],
                    "s": statistics.median(times), "dtype": rec.network_dtype})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="train_models.py's --out folder")
    ap.add_argument("--seeds", type=int, nargs="+", required=True)
    ap.add_argument("--passes", type=int, nargs="+", default=[4, 6, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if any(k < 1 for k in args.passes):
        ap.error(f"--passes must be >= 1; found {args.passes}")
    torch.set_num_threads(args.threads)
    root = Path(args.models)
    sys.path.insert(0, str(Path(__file__).parent))
    from _record import print_and_record
    from train_models import seed_models

    pairs = seed_models(root, args.seeds)
    header = ["seed"] + [f"{k} passes: amp / phase SSIM, s" for k in args.passes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    dtype = "?"
    for s, model, scan in pairs:
        rows = scores(model, scan, args.passes)
        dtype = rows[-1]["dtype"]
        lines.append(f"| {s} | " + " | ".join(
            f"{r['amp']:.3f} / {r['phase']:.3f}, {r['s']:.2f}" for r in rows) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    notes = (f"models {root}/seedN (trained with 4 passes) on their own scans (625 patterns "
             "of 64x64); inference with the defaults but `prior_iterations` and "
             "`prior_extra_iterations` 0: exactly the passes given (the network in "
             f"{dtype}); torch threads {torch.get_num_threads()}; s: median of 3 inference + "
             "stitching runs after a warm-up.")
    print_and_record("The scan prior's passes at inference (bench_inference_passes.py)",
                     table, notes, args.record)


if __name__ == "__main__":
    main()
