"""Passes of the physics prior at inference (``infer --prior-iterations``) on trained models,
and the half-scan agreement that decides the default's extra passes.

For each model of `train_models.py`'s layout (``MODELS/seedN`` trained on
``MODELS/scans/seedN.npz`` with the default 4 passes) the scan (or, with ``--cases``,
each of bench_side_by_side.py's simulated cases), and for each ``--run RUN SCAN`` that
scan, is reconstructed

* with the defaults: the prior's half-scan agreement (`physics.prior_frc.agreement`
  after the model's passes) and the passes it ran (the model's, plus
  ``prior_extra_iterations`` where the agreement is at least `EXTRA_PASS_AGREEMENT`; an
  over-relaxed prior adds none of those by default but up to 4 converge passes where its
  halves' agreement rises, `models.scan_prior.inference_pass_options`);
* with the defaults but no phase momentum (``prior_phase_momentum`` 0: the defaults
  before 2026-12-03, ninth session), and the agreement then;
* with exactly each pass count of ``--passes`` (default 4 6 8; no extra or converge
  passes, no phase momentum),

giving amplitude and phase SSIM against the truth and the median time of 3 inference +
stitching runs after a warm-up. Where more passes raise the scores the agreement should
be at or above the threshold, and below it where they lower them: the evidence for
`EXTRA_PASS_AGREEMENT`.

Usage::

    python benchmarks/train_models.py --out models --only seed2 seed7 seed11 seed13
    python benchmarks/bench_inference_passes.py --models models --seeds 2 7 11 13 [--record]
    python benchmarks/bench_inference_passes.py --models models --seeds 11 \
        --cases textured_1e4 textured_1e3 image     # low dose and the unseen picture
    python benchmarks/bench_inference_passes.py --run RUN SCAN --passes 12   # any trained run on a scan
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


def scores(model_path: Path, scan, scan_path, passes: list[int], repeats: int = 3) -> dict:
    """The defaults' agreement, passes and scores, and per pass count of ``passes`` the
    amp / phase SSIM and median seconds of one model on a scan (from ``scan_path``)."""
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import evaluate

    loaded = load_pinn(model_path)
    if scan.object is None:
        raise SystemExit(f"{scan_path}: no true object (objectGuess) to score against")

    def run(cfg: InferenceConfig) -> dict:
        reconstruct_pytorch(loaded, scan, cfg)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            rec = reconstruct_pytorch(loaded, scan, cfg)
            times.append(time.perf_counter() - t0)
        m = evaluate(rec.object, scan.object, positions_px=scan.positions_px,
                     patch_size=scan.patch_size)
        return {"amp": m["amp_ssim"], "phase": m["phase_ssim"], "s": statistics.median(times),
                "dtype": rec.network_dtype, "passes": rec.prior_passes,
                "agreement": rec.prior_agreement, "momentum": rec.prior_phase_momentum}

    # exactly k passes: no extra passes where the halves agree, no phase momentum
    return {"default": run(InferenceConfig()),
            "no_momentum": run(InferenceConfig(prior_phase_momentum=0.0)),
            "passes": [run(InferenceConfig(prior_iterations=k, prior_extra_iterations=0,
                                           prior_converge_passes=0,
                                           prior_phase_momentum=0.0))
                       for k in passes]}


def _cell(r: dict) -> str:
    return f"{r['amp']:.3f} / {r['phase']:.3f}, {r['s']:.2f}"


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from train_models import add_run_argument, add_seed_model_arguments, model_runs

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed_model_arguments(ap, required=False)
    add_run_argument(ap)
    ap.add_argument("--passes", type=int, nargs="*", default=[4, 6, 8],
                    help="exact pass counts to compare (none: only the defaults)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if any(k < 1 for k in args.passes):
        ap.error(f"--passes must be >= 1; found {args.passes}")
    runs = model_runs(ap, args)
    torch.set_num_threads(args.threads)
    from _record import print_and_record

    from ptychopinn.physics.prior_frc import EXTRA_PASS_AGREEMENT

    header = (["model (scan)", "half-scan agreement (in brackets: without momentum)",
               "default: passes run, phase momentum, amp / phase SSIM, s",
               "default without phase momentum: passes run, amp / phase SSIM, s"]
              + [f"{k} passes: amp / phase SSIM, s" for k in args.passes])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    dtype = "?"
    for label, model, load in runs:
        r = scores(model, *load(), args.passes)
        d, o = r["default"], r["no_momentum"]
        dtype = d["dtype"]
        agree = "-" if d["agreement"] is None else f"{d['agreement']:.3f}"
        if o["agreement"] is not None:
            agree += f" ({o['agreement']:.3f})"
        cells = [label, agree, f"{d['passes']}, {d['momentum'] or 0:g}: {_cell(d)}",
                 f"{o['passes']}: {_cell(o)}", *(_cell(x) for x in r["passes"])]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    scans = ("their own scans" if not args.cases else
             f"bench_side_by_side.py's cases {', '.join(args.cases)} simulated with the seed")
    which = ([f"models {args.models}/seedN (trained with 4 passes) on {scans}"] if args.seeds
             else []) + [f"{run} on {scan}" for run, scan in args.run]
    notes = (f"{'; '.join(which)} (625 patterns of 64x64 unless named otherwise); "
             "half-scan agreement: the FRC-filtered prior's (physics.prior_frc.agreement) "
             "after the model's passes (the default's, whose halves run with phase momentum; in "
             "brackets without it); default: `InferenceConfig()`, which adds "
             f"`prior_extra_iterations` passes and keeps `prior_phase_momentum` "
             f"where the agreement is >= {EXTRA_PASS_AGREEMENT} (else 0 momentum; for "
             "over-relaxed priors, the featureless recipe, neither unless given: "
             "models.scan_prior.inference_pass_options); "
             "'k passes': exactly k (`prior_iterations` k, `prior_extra_iterations` 0, "
             "`prior_phase_momentum` 0); "
             f"the network in {dtype}; torch threads {torch.get_num_threads()}; s: median "
             "of 3 inference + stitching runs after a warm-up.")
    print_and_record("The scan prior's passes at inference and the half-scan agreement "
                     "(bench_inference_passes.py)", table, notes, args.record)


if __name__ == "__main__":
    main()
