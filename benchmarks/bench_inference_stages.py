"""Where inference + stitching spends its time: the physics prior, the network and the
stitching, for several inference batch sizes (`InferenceConfig.batch_size`, groups per
forward pass), on the CPU or a GPU.

On a GPU our inference is launch-bound (many small kernels, sequential prior passes),
so the split says which stage a speed-up must come from; on a CPU it says whether the
batch size matters. Each variant runs once as a warm-up, then ``--repeats`` times; the
table gives each stage's median seconds and the objects' amplitude / phase SSIM against
the truth (the batch size must not change the object beyond float rounding).

Usage::

    python benchmarks/bench_inference_stages.py --run models/seed11 models/scans/seed11.npz \\
        [--models models --seeds 5 7] [--device cuda] [--batch-sizes 16 64 256] \\
        [--repeats 5] [--record]

``--run RUN SCAN`` (repeatable) and ``--models`` / ``--seeds`` / ``--cases`` name the
models and scans as in the other benchmarks (`train_models.model_runs`).

On a GPU the stages are not synchronised one by one: each ends where its results reach
the next, so the split is approximate; the total is exact (the reconstruction comes back
as host arrays).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

STAGES = ("prior", "predict", "stitch", "total")


def time_variants(model_path, scan, scan_path, device: str, batch_sizes: list[int],
                  repeats: int) -> list[dict]:
    """One row per batch size: median seconds of each of `STAGES` over ``repeats`` runs
    after a warm-up, and the last run's amplitude / phase SSIM (``scan`` loaded from
    ``scan_path``, which names it in errors)."""
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import evaluate

    if scan.object is None:
        raise SystemExit(f"bench_inference_stages: {scan_path}: no true object "
                         "(key 'objectGuess') to score against")
    loaded = load_pinn(model_path)
    rows = []
    for bs in batch_sizes:
        cfg = InferenceConfig(batch_size=bs, execution={"accelerator": device})
        reconstruct_pytorch(loaded, scan, cfg)  # warm-up
        runs = [reconstruct_pytorch(loaded, scan, cfg) for _ in range(repeats)]
        m = evaluate(runs[-1].object, scan.object, positions_px=scan.positions_px,
                     patch_size=scan.patch_size)
        row = {k: statistics.median(r.timings_s[k] for r in runs) for k in STAGES}
        row.update(batch=bs, amp=m["amp_ssim"], phase=m["phase_ssim"],
                   patterns=scan.n_patterns, groups=runs[-1].timings_s["n_groups"])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from train_models import add_run_argument, add_seed_model_arguments, model_runs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seed_model_arguments(ap, required=False)
    add_run_argument(ap)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1; found {args.repeats}")
    if any(b < 1 for b in args.batch_sizes):
        ap.error(f"--batch-sizes must be >= 1; found {args.batch_sizes}")
    runs = model_runs(ap, args)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    from _record import print_and_record

    header = ["model", "scan", "batch", "prior s", "network s", "stitch s", "total s",
              "patterns/s", "amp / phase SSIM"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, model, load in runs:
        scan, scan_path = load()
        for r in time_variants(model, scan, scan_path, args.device, args.batch_sizes,
                               args.repeats):
            cells = [str(model), Path(scan_path).name, str(r["batch"]), f"{r['prior']:.3f}",
                     f"{r['predict']:.3f}", f"{r['stitch']:.3f}", f"{r['total']:.3f}",
                     f"{r['patterns'] / r['total']:.0f}", f"{r['amp']:.3f} / {r['phase']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    where = (f"device {torch.cuda.get_device_name()} (torch {torch.__version__})"
             if args.device == "cuda" else f"CPU, torch threads {torch.get_num_threads()}")
    notes = (f"{where}; default inference options but InferenceConfig.batch_size (groups "
             f"per forward pass); each stage the median of {args.repeats} runs after a "
             "warm-up (Reconstruction.timings_s; on a GPU the split between stages is "
             "approximate, the total exact).")
    print_and_record("Inference stages by batch size (bench_inference_stages.py)",
                     "\n".join(lines), notes, args.record)


if __name__ == "__main__":
    main()
