"""How much of an amplitude-SSIM gap is data consistency, and how much smoothness?

For each scan: the truth, pty-chi LSQML-100 (when pty-chi is available, see
`bench_ptychi`) and our PINN inference (``--model-CASE RUN``, a model trained on
that scan) are each smoothed in amplitude only (Gaussian of ``sigma`` pixels,
phase kept), then scored against the truth (amplitude SSIM) and against the
measured data (`ptychopinn.metrics.data_consistency`: the Poisson deviance over
its photon-noise floor, 1 = explains the counts to within the noise; the truth
scores about 1).

A gap that smoothing closes while the misfit stays put is high-frequency
amplitude the data barely constrain; a gap in the misfit is a fit that is not
yet consistent with the data. Cases: ``seed5`` and ``realprobe`` of
`bench_hard_scans`, ``seed11`` (the default simulation, seed 11).

Usage::

    python benchmarks/bench_smoothness.py --model-seed5 RUN5 [--model-seed11 RUN11]
        [--model-realprobe RUNRP] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_hard_scans import REAL_PROBE, simulate_case  # noqa: E402
from bench_ptychi import find_ptychi_python, run_ptychi, score  # noqa: E402

SIGMAS = (0.0, 0.5, 0.7, 1.0, 1.5)


def smooth_amplitude(obj: np.ndarray, sigma: float) -> np.ndarray:
    """``obj`` with its amplitude Gaussian-filtered (``sigma`` pixels) and its phase kept."""
    from scipy.ndimage import gaussian_filter

    if sigma == 0:
        return obj
    return (gaussian_filter(np.abs(obj), sigma) * np.exp(1j * np.angle(obj))).astype(np.complex64)


def _scan(case: str):
    if case == "seed11":
        from ptychopinn.simulation import SimulationConfig, simulate_scan

        return simulate_scan(SimulationConfig(seed=11))
    return simulate_case(case)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for case in ("seed5", "seed11", "realprobe"):
        p.add_argument(f"--model-{case}", default=None, help=f"model trained on the {case} scan")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ptychopinn.api import load_bundle
    from ptychopinn.config import InferenceConfig
    from ptychopinn.data import save_npz
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import data_consistency

    models = {"seed5": args.model_seed5, "seed11": args.model_seed11,
              "realprobe": args.model_realprobe}
    cases = [c for c in models if models[c]]
    if not cases:
        raise SystemExit("bench_smoothness: give at least one --model-CASE RUN")
    if "realprobe" in cases and not REAL_PROBE.exists():
        cases.remove("realprobe")
        print(f"bench_smoothness: realprobe SKIPPED: {REAL_PROBE} not found.")
    has_ptychi = find_ptychi_python() is not None
    if not has_ptychi:
        print("bench_smoothness: pty-chi rows SKIPPED (no pty-chi interpreter; see bench_ptychi)")
    headers = ["scan", "object", *[f"sigma {s:g}: amp SSIM / deviance ratio" for s in SIGMAS]]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            scan = _scan(case)
            objects = [("truth", scan.object, scan.positions_px, None)]
            if has_ptychi:
                path = Path(tmp) / f"{case}.npz"
                save_npz(scan, path)
                r = run_ptychi(path, "lsqml", 100, args.threads)
                objects.append(("pty-chi LSQML-100", r["object"], r["positions_px"], r["probe"]))
            rec = reconstruct_pytorch(load_bundle(models[case]), scan,
                                      InferenceConfig(execution={"accelerator": "cpu"}))
            objects.append(("PINN inference", rec.object, rec.positions_px, rec.probe))
            for name, obj, pos, probe in objects:
                cells = []
                for sigma in SIGMAS:
                    sm = smooth_amplitude(np.asarray(obj, dtype=np.complex64), sigma)
                    m = score(sm, scan)
                    ratio = data_consistency(scan, sm, pos, probe)["deviance_ratio"]
                    cells.append(f"{m['amp_ssim']:.3f} / {ratio:.2f}")
                rows.append([case, name, *cells])
                print(" | ".join(rows[-1]), flush=True)
    table = "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    if args.record:
        from _record import append_section

        notes = ("deviance ratio: the Poisson deviance of the object's expected counts over "
                 "its photon-noise floor (`ptychopinn evaluate --scan`; 1 = explains the data "
                 "to within the noise); LSQML with its own probe, the PINN with its model's. "
                 "Models: "
                 + ", ".join(f"{c}={models[c]}" for c in cases)
                 + "; inference with the models' defaults.")
        append_section("Amplitude smoothness vs data consistency (bench_smoothness.py)", table,
                       notes=notes)


if __name__ == "__main__":
    main()
