"""Phase synchronisation of the stitched groups: 'global' (`inference.phase_sync`, the
default since 2026-12-04) against greedy 'waves' (the default before; and waves with more
polishing passes, whose limit the global rotations are), on trained models.

For each model of `train_models.py`'s layout (``MODELS/seedN`` on ``MODELS/scans/seedN.npz``,
or with ``--cases`` bench_side_by_side.py's simulated cases) the scan is reconstructed
with the default inference options but each synchronisation, giving amplitude and phase
SSIM against the truth and the median stitching time of ``--repeats`` runs after a
warm-up (the prior and the prediction are the same in every column).

Usage::

    python benchmarks/train_models.py --out models --only seed5 seed7
    python benchmarks/bench_phase_sync.py --models models --seeds 5 7 [--record]
    python benchmarks/bench_phase_sync.py --run models/realprobe models/scans/realprobe.npz

``--run RUN SCAN`` (repeatable) adds any trained run on any scan with its true object
(``objectGuess``), e.g. train_models.py's ``realprobe`` or a scan of one's own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

# (label, InferenceConfig.phase_sync_method, polishing passes: None = the method's default)
VARIANTS = [("global (default)", "global", None), ("waves, 1 polishing pass", "waves", None),
            ("waves, 8 polishing passes", "waves", 8)]


def scores(model_path: Path, scan, scan_path, repeats: int) -> list[dict]:
    """Amp / phase SSIM and median stitching seconds of each of `VARIANTS`."""
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import evaluate

    if scan.object is None:
        raise SystemExit(f"{scan_path}: no true object (objectGuess) to score against")
    loaded = load_pinn(model_path)
    out = []
    for _, method, polish in VARIANTS:
        cfg = InferenceConfig(phase_sync_method=method, phase_sync_polish=polish)
        reconstruct_pytorch(loaded, scan, cfg)  # warm-up
        runs = [reconstruct_pytorch(loaded, scan, cfg) for _ in range(repeats)]
        m = evaluate(runs[-1].object, scan.object, positions_px=scan.positions_px,
                     patch_size=scan.patch_size)
        out.append({"amp": m["amp_ssim"], "phase": m["phase_ssim"], "ran": runs[-1].phase_sync,
                    "stitch": statistics.median(r.timings_s["stitch"] for r in runs),
                    "groups": runs[-1].timings_s["n_groups"]})
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from train_models import add_run_argument, add_seed_model_arguments, model_runs

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed_model_arguments(ap, required=False)
    add_run_argument(ap)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1; found {args.repeats}")
    runs = model_runs(ap, args)
    torch.set_num_threads(args.threads)
    from _record import print_and_record

    header = ["model (scan)", "groups"] + [f"{label}: amp / phase SSIM, stitch s"
                                                for label, _, _ in VARIANTS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    gains = []
    for label, model, load in runs:
        r = scores(model, *load(), args.repeats)
        if r[0]["ran"] != "global":
            label += f" (ran {r[0]['ran']})"
        gains.append(r[0]["phase"] - r[1]["phase"])
        cells = [label, str(r[0]["groups"])] + [
            f"{x['amp']:.3f} / {x['phase']:.3f}, {x['stitch']:.2f}" for x in r]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    sources = ([] if not args.seeds else [
        f"models {args.models}/seedN on " + (
            "their own scans" if not args.cases else
            f"bench_side_by_side.py's cases {', '.join(args.cases)} simulated with the seed")])
    sources += [f"run {run} on {scan}" for run, scan in args.run]
    notes = ("; ".join(sources) + "; default inference options but the phase synchronisation "
             "(InferenceConfig.phase_sync_method and phase_sync_polish); "
             f"stitch s: median of {args.repeats} runs after a warm-up, torch threads "
             f"{torch.get_num_threads()}; global minus waves (1 polishing pass) phase SSIM: "
             f"{min(gains):+.3f} to {max(gains):+.3f}, mean {statistics.mean(gains):+.3f}.")
    print_and_record("Phase synchronisation of the stitched groups (bench_phase_sync.py)",
                     table, notes, args.record)


if __name__ == "__main__":
    main()
