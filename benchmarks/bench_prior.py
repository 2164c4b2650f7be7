"""What the network adds to its physics prior, object by object.

For each simulation seed (the same scan as ``ptychopinn simulate --seed S``)
this script stitches, with the same inference code and stitching:

* the physics prior alone (`models.scan_prior.ScanPrior`: each pattern's patch
  of the scan-wide estimate, or its neighbourhood estimate, per the model's
  ``prior_scope``; the network bypassed),
* the trained network's patches (``--model``: a bundle or run directory),

and scores both against the truth (amplitude and phase SSIM), with the time of
the prior and of the prediction. Scans that the model was not trained on show
how it generalises. The prior depends on the model only through its probe,
scale and prior settings, never on its weights.

Usage::

    python benchmarks/bench_prior.py --model RUN [--seeds 0 3 5 11] [--prior-iterations K] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ptychi import score  # noqa: E402


class ModelVariant(torch.nn.Module):
    """Stands in for a `PtychoPINN` at inference: with ``prior_only`` its patches are
    the physics prior (the network bypassed); ``cfg`` (default the model's) is the
    model config the prior's settings are read from."""

    def __init__(self, model, prior_only: bool = True, cfg=None) -> None:  # noqa: ANN001
        super().__init__()
        self.inner = model
        self.cfg = model.cfg if cfg is None else cfg
        self.physics = model.physics
        self.prior_amplitude_scale = model.prior_amplitude_scale
        self.train_input_scale = model.train_input_scale
        self.prior_only = prior_only

    @property
    def probe(self):  # noqa: ANN201
        return self.inner.probe

    def predict_patches(self, amplitudes, input_scale, prior):  # noqa: ANN001, ANN201
        if self.prior_only:
            return prior
        return self.inner.predict_patches(amplitudes, input_scale, prior)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="bundle or run directory of a trained PINN")
    p.add_argument("--model-label", default=None, help="what the model was trained on")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 3, 5, 11])
    p.add_argument("--prior-iterations", type=int, default=None,
                   help="physics passes at inference (default: the model's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from dataclasses import replace

    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    loaded = load_pinn(args.model)
    mcfg = loaded.config.model
    if not mcfg.prior_iterations:
        raise SystemExit(f"{args.model}: the model takes raw diffraction (no physics prior).")
    prior_only = replace(loaded, model=ModelVariant(loaded.model))
    headers = ["seed", "pictures", "prior alone: amp / phase SSIM", "network: amp / phase SSIM",
               "prior s", "predict s", "stitch s"]
    rows = []
    for seed in args.seeds:
        scan = simulate_scan(SimulationConfig(seed=seed))
        obj_info = scan.metadata.get("simulation_resolved", {}).get("object", {})
        pics = "+".join(obj_info.get("pictures", []))
        got = {}
        for name, lm in (("prior", prior_only), ("network", loaded)):
            t0 = time.perf_counter()
            rec = reconstruct_pytorch(lm, scan, InferenceConfig(prior_iterations=args.prior_iterations))
            got[name] = (score(rec.object, scan), rec.timings_s, time.perf_counter() - t0)
        (pm, _, _), (nm, nt, _) = got["prior"], got["network"]
        rows.append([str(seed), pics or "-",
                     f"{pm['amp_ssim']:.3f} / {pm['phase_ssim']:.3f}",
                     f"{nm['amp_ssim']:.3f} / {nm['phase_ssim']:.3f}",
                     f"{nt['prior']:.2f}", f"{nt['predict']:.2f}", f"{nt['stitch']:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    table = "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    if args.record:
        from _record import append_section

        label = args.model_label or str(args.model)
        append_section(
            "Physics prior alone vs the network (bench_prior.py)", table,
            notes=f"model: {label}; prior: scope {mcfg.prior_scope!r}, "
            f"{args.prior_iterations or mcfg.prior_iterations} "
            f"passes/projections (neighbourhood: {mcfg.prior_neighbors} patterns), residual "
            f"heads: {mcfg.prior_residual}, gate: {mcfg.prior_residual_gate}")


if __name__ == "__main__":
    main()
