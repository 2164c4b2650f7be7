"""The refinement's noise floor and momentum on a network's object, epoch by epoch.

For a trained model and a scan with its true object, this script refines the network's
object as ``ptychopinn infer --refine-epochs`` does (`refinement.reconstruction.
refine_options`), once with the momentum on the phase only (infer's default) and once
with it moving the amplitude too (``refine_momentum_amplitude``), and prints every
``--every``-th epoch: amplitude / phase SSIM, the Poisson NLL, the noise-floor estimate
made in that epoch (``noise_floor_estimate``, every 4th epoch), the floor in use (the
lowest estimate so far) and whether the amplitude is held. The truth's own NLL (the
refinement's first epoch from the true object with a vanishing step) shows how far above
it the estimates made from the network's object lie.

Usage::

    python benchmarks/bench_refine_floor.py --model models/hidden/grf_zoneplate \\
        --scan models/hidden/grf_zoneplate.npz [--epochs 40] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _record import markdown_table  # noqa: E402


def truth_nll(scan, subpixel: str) -> float:
    """The refinement's NLL of the scan's true object (one epoch, a vanishing step)."""
    from ptychopinn.refinement import refine

    r = refine(scan, scan.object, epochs=1, learning_rate=1e-9, adaptive_step=False,
               progress=False, subpixel=subpixel)
    return r.history[0]["loss"]


def curve(scan, recon, epochs: int, every: int, momentum_amplitude: bool) -> list[list[str]]:
    """Rows of one refinement from the network's object (infer's options)."""
    from ptychopinn.config import InferenceConfig
    from ptychopinn.metrics import evaluate
    from ptychopinn.refinement import refine
    from ptychopinn.refinement.reconstruction import refine_options

    cfg = InferenceConfig(refine_epochs=epochs, refine_momentum_amplitude=momentum_amplitude,
                          execution={"progress_bar": False})
    rows: list[list[str]] = []
    label = "amplitude and phase" if momentum_amplitude else "phase only (infer)"

    def cb(epoch: int, rec: dict, obj) -> None:
        if epoch % every and epoch != epochs and "noise_floor_estimate" not in rec:
            return
        m = evaluate(obj, scan.object, positions_px=recon.positions_px,
                     patch_size=scan.patch_size)
        est = rec.get("noise_floor_estimate")
        floor = rec.get("noise_floor")
        rows.append([label, str(epoch), f"{m['amp_ssim']:.3f}", f"{m['phase_ssim']:.3f}",
                     f"{rec['loss']:.6f}", "-" if est is None else f"{est:.6f}",
                     "-" if floor is None else f"{floor:.6f}",
                     "yes" if rec.get("amplitude_held") else "no"])

    kw = refine_options(cfg) | {"initial_object": recon.object,
                                "positions_px": recon.positions_px}
    refine(scan, callback=cb, **kw)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="bundle or run directory")
    p.add_argument("--scan", required=True, help="NPZ scan with its true object (objectGuess)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--every", type=int, default=5, help="print every this many epochs "
                   "(and every epoch that re-estimates the floor)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    for path, what in ((args.model, "--model"), (args.scan, "--scan")):
        if not Path(path).exists():
            p.error(f"{what} {path} does not exist")
    if args.epochs < 1 or args.every < 1:
        p.error(f"--epochs and --every must be >= 1; found {args.epochs}, {args.every}")
    torch.set_num_threads(args.threads)
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.data import load_npz
    from ptychopinn.inference.reconstruct import reconstruct_pytorch

    scan = load_npz(args.scan)
    if scan.object is None:
        p.error(f"--scan {args.scan}: no true object (objectGuess) to score against")
    recon = reconstruct_pytorch(load_pinn(args.model), scan, InferenceConfig())
    rows = []
    headers = ["momentum moves", "epoch", "amp SSIM", "phase SSIM", "NLL", "floor estimate",
               "floor in use", "amplitude held"]
    for momentum_amplitude in (False, True):
        rows += curve(scan, recon, args.epochs, args.every, momentum_amplitude)
        print(markdown_table(headers, rows[-3:]))
    nll = truth_nll(scan, InferenceConfig().refine_subpixel)
    table = markdown_table(headers, rows)
    notes = (f"Refinement of {args.model}'s object of {args.scan} with infer's options "
             f"(--refine-epochs {args.epochs}); the true object's NLL: {nll:.6f}. 'floor "
             "estimate': made in that epoch (every 4th); 'floor in use': the lowest so far.")
    print(table)
    print(notes)
    if args.record:
        from _record import append_section

        append_section("The refinement's noise floor and momentum (bench_refine_floor.py)",
                       table, notes=notes)


if __name__ == "__main__":
    main()
