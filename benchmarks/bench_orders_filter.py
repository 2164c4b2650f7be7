"""The physics prior's FRC filter between mini-batch orders (``prior_orders_filter``): the
prior alone and the network, with the filter off and on, on trained models.

Where the featureless recipe runs on the whole scan (a Gaussian beam, coverage below
``model.prior_frc_min_coverage``) the prior's estimate is the mean of two mini-batch
orders; `physics.prior_orders.filter_orders` filters its amplitude by the FRC of the two.
For each ``--case LABEL MODEL SCAN`` the scan is reconstructed with infer's defaults but
``InferenceConfig.prior_orders_filter`` off and on, by the network and by its prior alone
(the network bypassed, `bench_prior.ModelVariant`), and scored against the scan's true
object; the table gives amplitude / phase SSIM, the prior's seconds (one run each, after a
warm-up of the first variant) and the orders' agreement (`physics.prior_frc.agreement`).

Usage::

    python benchmarks/bench_orders_filter.py \\
        --case "steps of 12 px, 1e5 photons" models/hidden/M models/hidden/S.npz [--case ...] \\
        [--record]

A model trained with the filter on (``train``'s default since the thirty-first session) and
one trained without it (``--set model.prior_orders_filter=false``, or a bundle from
before) both take either setting at inference; 'trained with' says which the model had.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import print_and_record  # noqa: E402
from train_models import add_case_argument, checked_cases  # noqa: E402

VARIANTS = (("off", False), ("on", True))


def score_case(model_path: str, scan_path: str) -> dict:
    """``{(setting, 'prior' | 'network'): (amp SSIM, phase SSIM, prior s, agreement)}`` and
    the model's own setting under ``'trained'``."""
    from bench_prior import ModelVariant

    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.data import load_npz
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import evaluate

    scan = load_npz(scan_path)
    if scan.object is None:
        raise SystemExit(f"bench_orders_filter: {scan_path}: no true object (key "
                         "'objectGuess') to score against")
    loaded = load_pinn(model_path)
    prior_only = replace(loaded, model=ModelVariant(loaded.model))
    # bundles from before the option (no key in their manifest) were trained without it
    raw = (loaded.manifest.get("config") or {}).get("model") or {}
    out: dict = {"trained": raw.get("prior_orders_filter", False)}
    reconstruct_pytorch(loaded, scan, InferenceConfig(prior_orders_filter=False))  # warm-up
    for name, flag in VARIANTS:
        cfg = InferenceConfig(prior_orders_filter=flag)
        for what, model in (("prior", prior_only), ("network", loaded)):
            rec = reconstruct_pytorch(model, scan, cfg)
            m = evaluate(rec.object, scan.object, positions_px=scan.positions_px,
                         patch_size=scan.patch_size)
            out[name, what] = (m["amp_ssim"], m["phase_ssim"], rec.timings_s["prior"],
                               rec.prior_orders_agreement, rec.prior_orders)
    return out


def _cell(r: dict, key: tuple) -> str:
    return f"{r[key][0]:.3f} / {r[key][1]:.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_argument(ap, "a label, a trained run (or bundle) and a scan with its true object")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args(argv)
    cases = checked_cases(ap, args)
    torch.set_num_threads(args.threads)

    header = ["scan", "trained with", "orders", "prior alone, off", "prior alone, on",
              "network, off", "network, on", "network amp change", "prior s off / on",
              "orders' agreement"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, model, scan in cases:
        r = score_case(model, scan)

        agree = r["on", "network"][3]
        cells = [label, "on" if r["trained"] else "off", str(r["on", "network"][4]),
                 _cell(r, ("off", "prior")), _cell(r, ("on", "prior")),
                 _cell(r, ("off", "network")), _cell(r, ("on", "network")),
                 f"{r['on', 'network'][0] - r['off', 'network'][0]:+.3f}",
                 f"{r['off', 'network'][2]:.2f} / {r['on', 'network'][2]:.2f}",
                 "-" if agree is None else f"{agree:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    notes = ("; ".join(f"{label}: {model} on {scan}" for label, model, scan in cases)
             + "; infer's defaults but InferenceConfig.prior_orders_filter off / on; cells "
             "amplitude / phase SSIM against each scan's true object; 'prior alone' bypasses "
             "the network (bench_prior.ModelVariant); 'trained with': the model's "
             "model.prior_orders_filter (off for bundles from before the option, which "
             "take it on at inference by default); 'orders': the mini-batch orders the whole scan's "
             "estimate averaged (1: no filter to apply); prior s: one run each after a "
             f"warm-up, torch threads {torch.get_num_threads()}.")
    print_and_record("The prior's FRC filter between mini-batch orders (bench_orders_filter.py)",
                     "\n".join(lines), notes, args.record)


if __name__ == "__main__":
    main()
