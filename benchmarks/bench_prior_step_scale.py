"""The scan prior's over-relaxation (``prior_step_scale``): the prior alone and the network.

For each ``--case LABEL MODEL SCAN`` this script reconstructs the scan with the
model's inference defaults, changing only ``InferenceConfig.prior_step_scale``
(each of ``--scales``), ``prior_iterations`` (each of ``--passes``),
``prior_settle_passes`` (each of ``--settle-passes``; default: the model's),
``prior_converge_passes`` (each of ``--converge-passes``; default: the inference default,
4 for an over-relaxed prior), ``prior_orders`` (each of ``--orders``: mini-batch orders the
whole scan's estimate averages; default: the model's, 2 for over-relaxed passes) and, with
``--batch-sizes``, the model's ``prior_batch_size`` (patterns per update of the
prior's passes; default: the model's) and, with ``--object-momenta``, the model's
``prior_object_momentum`` (default: the model's) and, with ``--frc-min-coverages``, the
model's ``prior_frc_min_coverage`` (default: the model's), and scores against the scan's true object:

* the physics prior alone (the network bypassed, `bench_prior.ModelVariant`),
* with ``--network``, the network's output on that prior as well.

The prior depends on the model only through its probe, scale and prior settings.
A model trained with another ``model.prior_step_scale`` sees priors at inference
unlike those it was trained on; the scale it was trained with is printed.

Usage::

    python benchmarks/bench_prior_step_scale.py \
        --case "textured, Gaussian probe" models/hidden/textured_gaussian models/hidden/textured_gaussian.npz \
        --case "seed 11" models/seed11 models/scans/seed11.npz --scales 1 2 3 --passes 4 [--network] [--record]
    python benchmarks/bench_prior_step_scale.py --case ... --scales 3 --passes 8 12 --batch-sizes 16 32 64
    python benchmarks/bench_prior_step_scale.py --case ... --scales 3 --passes 12 --settle-passes 0 2 4
    python benchmarks/bench_prior_step_scale.py --case ... --scales 3 --passes 12 --converge-passes 0 12 --network
    python benchmarks/bench_prior_step_scale.py --case ... --scales 3 2 --object-momenta 0 0.8 --passes 12 --network
    python benchmarks/bench_prior_step_scale.py --case ... --scales 2 --frc-min-coverages 0 3 --passes 12 16 20
    python benchmarks/bench_prior_step_scale.py --case ... --scales 2 --passes 20 --orders 1 2 4 --network
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import markdown_table, print_and_record  # noqa: E402
from bench_prior import ModelVariant  # noqa: E402
from bench_ptychi import score  # noqa: E402
from train_models import add_case_argument, checked_cases  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_argument(p, "a label, a trained model (bundle or run directory) and a scan NPZ "
                         "with its true object")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    p.add_argument("--passes", type=int, nargs="+", default=[4])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="the prior's patterns per update (model.prior_batch_size; default: "
                        "the model's)")
    p.add_argument("--object-momenta", type=float, nargs="+", default=None,
                   help="the prior's heavy-ball momentum on the object "
                        "(model.prior_object_momentum; default: the model's)")
    p.add_argument("--frc-min-coverages", type=float, nargs="+", default=None,
                   help="the coverage below which an over-relaxed prior leaves the FRC "
                        "filter's halves out (model.prior_frc_min_coverage; default: the "
                        "model's; 0: the halves on any scan)")
    p.add_argument("--settle-passes", type=int, nargs="+", default=[None],
                   help="plain passes the prior's whole-scan estimate ends with "
                        "(InferenceConfig.prior_settle_passes; default: the model's)")
    p.add_argument("--converge-passes", type=int, nargs="+", default=[None],
                   help="passes the prior may add while its halves agree more "
                        "(InferenceConfig.prior_converge_passes; default: inference's)")
    p.add_argument("--orders", type=int, nargs="+", default=[None],
                   help="InferenceConfig.prior_orders values (default: the model's)")
    p.add_argument("--network", action="store_true", help="also score the network's output")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    p.add_argument("--note", default="", help="added to the recorded heading")
    args = p.parse_args(argv)
    cases = checked_cases(p, args)
    torch.set_num_threads(args.threads)
    from dataclasses import replace

    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.data.npz import load_npz
    from ptychopinn.inference.reconstruct import reconstruct_pytorch

    headers = ["scan", "trained with", "updates of", "passes", "step scale", "object momentum",
               "halves below coverage", "FRC halves ran", "then plain passes",
               "converge passes", "passes ran", "orders",
               "prior alone: amp / phase SSIM", "network: amp / phase SSIM", "prior s",
               "half-scan agreement"]
    rows = []
    for label, model_path, scan_path in cases:
        loaded = load_pinn(model_path)
        mcfg = loaded.config.model
        if not mcfg.prior_iterations or mcfg.prior_scope != "scan":
            raise SystemExit(f"{model_path}: the model has no scan prior.")
        scan = load_npz(scan_path)
        if scan.object is None:
            raise SystemExit(f"{scan_path}: no true object to score against.")
        trained = loaded.model.cfg
        for batch, momentum, least in itertools.product(
                args.batch_sizes or [mcfg.prior_batch_size],
                args.object_momenta or [mcfg.prior_object_momentum],
                args.frc_min_coverages or [mcfg.prior_frc_min_coverage]):
            # the prior reads its batch size, object momentum and minimum coverage of the
            # halves from the model's config (not inference options)
            loaded.model.cfg = trained.model_copy(update={
                "prior_batch_size": int(batch), "prior_object_momentum": float(momentum),
                "prior_frc_min_coverage": float(least)})
            prior_only = replace(loaded, model=ModelVariant(loaded.model))
            for passes, scale, settle, converge, orders in itertools.product(
                    args.passes, args.scales, args.settle_passes, args.converge_passes,
                    args.orders):
                icfg = InferenceConfig(prior_iterations=passes, prior_step_scale=scale,
                                       prior_settle_passes=settle,
                                       prior_converge_passes=converge, prior_orders=orders)
                rec = reconstruct_pytorch(prior_only, scan, icfg)
                pm = score(rec.object, scan)
                net = "-"
                if args.network:
                    nm = score(reconstruct_pytorch(loaded, scan, icfg).object, scan)
                    net = f"{nm['amp_ssim']:.3f} / {nm['phase_ssim']:.3f}"
                agree = "-" if rec.prior_agreement is None else f"{rec.prior_agreement:.3f}"
                trained_with = f"{mcfg.prior_step_scale:g}" + (
                    f", momentum {mcfg.prior_object_momentum:g}"
                    if mcfg.prior_object_momentum else "") + (
                    f" + {mcfg.prior_settle_passes} plain" if mcfg.prior_settle_passes else "") + (
                    ", whole below coverage " + f"{mcfg.prior_frc_min_coverage:g}"
                    if mcfg.prior_frc_min_coverage and mcfg.prior_step_scale != 1 else "")
                rows.append([label, trained_with, str(batch), str(passes),
                             f"{scale:g}", f"{momentum:g}", f"{least:g}",
                             "yes" if rec.prior_frc_filter else "no",
                             str(rec.prior_settle_passes),
                             "default" if converge is None else str(converge),
                             str(rec.prior_passes), str(rec.prior_orders),
                             f"{pm['amp_ssim']:.3f} / {pm['phase_ssim']:.3f}",
                             net, f"{rec.timings_s['prior']:.2f}", agree])
                print(" | ".join(rows[-1]), flush=True)
        loaded.model.cfg = trained
    heading = "The scan prior's over-relaxation (bench_prior_step_scale.py)"
    if args.note:
        heading += f" [{args.note}]"
    notes = ("InferenceConfig defaults but prior_iterations (passes) and prior_step_scale (step "
             "scale: every mini-batch update of the prior's passes applied this many times over; "
             "1 is plain PIE), model.prior_object_momentum ('object momentum': heavy-ball "
             "momentum of the passes on the complex object, the model's unless given), "
             "model.prior_frc_min_coverage ('halves below coverage': an over-relaxed prior on a "
             "scan covered less often runs the whole scan's passes without the FRC filter's "
             "halves, 8 more of them unless the passes are given as here; 'FRC halves ran' "
             "says which) and "
             "prior_settle_passes ('then plain passes': plain passes the "
             "whole scan's estimate ends with, default the model's) and prior_converge_passes "
             "('converge passes': at most that many passes added 4 at a time while the FRC "
             "filter's halves agree more; 'default': inference's, 4 for over-relaxed passes, "
             "0 for plain; 'passes ran': the halves' passes in the end); 'orders': the "
             "mini-batch orders the whole scan's estimate averaged (prior_orders; 1 with the "
             "halves); 'updates of': the prior's "
             "patterns per update; 'prior alone' bypasses the network; 'trained with' is the "
             "model's model.prior_step_scale (and its prior_settle_passes). Scores "
             "against each scan's true object. Cases: "
             + "; ".join(f"{lab}: {m} on {s}" for lab, m, s in cases)
             + f" ({time.strftime('%Y-%m-%d')}).")
    print_and_record(heading, markdown_table(headers, rows), notes, args.record)


if __name__ == "__main__":
    main()
