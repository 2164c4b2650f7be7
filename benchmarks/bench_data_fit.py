"""The fit to the measured counts that `ptychopinn infer` warns about, on trained models.

For each ``--case LABEL MODEL SCAN`` the model reconstructs the scan with the default
`InferenceConfig` (network inference + stitching) and then with ``--refine-epochs`` of
refinement; each object's Poisson deviance over its photon-noise floor is read as
`infer` reads it (`inference.reconstruct.sampled_data_consistency` on up to
``data_consistency_patterns`` patterns), with whether `poor_fit_warning` fires
(above `POOR_FIT_RATIO`) and, when the scan has a true object, the amplitude SSIM.

Usage::

    python benchmarks/bench_data_fit.py \\
        --case "seed 41" models/seed41 models/scans/seed41.npz \\
        --case "lines, Gaussian probe" models/hidden/lines_gaussian \\
               models/hidden/lines_gaussian.npz [--refine-epochs 40] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _record import markdown_table  # noqa: E402
from train_models import add_case_argument, checked_cases  # noqa: E402


def fit_row(label: str, model_path: str, scan_path: str, refine_epochs: int) -> list[str]:
    """One table row: the raw and the refined object's fit, warning and amp SSIM."""
    from ptychopinn import api
    from ptychopinn.config import InferenceConfig
    from ptychopinn.data import load_npz
    from ptychopinn.inference.reconstruct import poor_fit_warning, sampled_data_consistency
    from ptychopinn.metrics import evaluate

    scan = load_npz(scan_path)
    icfg = InferenceConfig(figures=False, execution={"progress_bar": False})
    cells = [label]
    for epochs in (0, refine_epochs):
        t0 = time.perf_counter()
        rec = api.reconstruct(model_path, scan,
                              icfg.model_copy(update={"refine_epochs": epochs}))
        secs = time.perf_counter() - t0
        fits = sampled_data_consistency(rec, scan, icfg.data_consistency_patterns)
        which = "refined" if epochs else "reconstruction"
        obj = rec.refined_object if epochs else rec.object
        ssim = "-"
        if scan.object is not None:
            ssim = f"{evaluate(obj, scan.object, positions_px=rec.positions_px, patch_size=scan.patch_size)['amp_ssim']:.3f}"
        warned = "yes" if poor_fit_warning(fits) else "no"
        cells += [f"{fits[which]['deviance_ratio']:.2f}", warned, ssim, f"{secs:.1f}"]
        print(label, which, cells[-4:], flush=True)
    return cells


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_argument(p, "a label, a trained model and a scan file")
    p.add_argument("--refine-epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.refine_epochs < 1:
        p.error(f"--refine-epochs must be >= 1; found {args.refine_epochs}")
    cases = checked_cases(p, args)
    torch.set_num_threads(args.threads)
    from ptychopinn.inference.reconstruct import POOR_FIT_RATIO

    rows = [fit_row(label, model, scan, args.refine_epochs) for label, model, scan in cases]
    r = args.refine_epochs
    table = markdown_table(
        ["scan", "network: deviance / noise floor", "warned", "amp SSIM", "s",
         f"+ {r} refinement epochs: deviance / noise floor", "warned", "amp SSIM", "s"], rows)
    notes = (f"`ptychopinn infer`'s fit to the measured counts (InferenceConfig defaults, "
             f"data_consistency_patterns patterns), the network's object and the object after "
             f"{r} refinement epochs; 'warned': `poor_fit_warning` fires (deviance above "
             f"{POOR_FIT_RATIO:g} times the photon-noise floor); amp SSIM against the scan's "
             "true object. Models: " + "; ".join(f"{lab}: {m} on {s}" for lab, m, s in cases))
    print(notes)
    print(table)
    if args.record:
        from _record import append_section

        append_section("The fit to the counts and infer's poor-fit warning (bench_data_fit.py)",
                       table, notes=notes)


if __name__ == "__main__":
    main()
