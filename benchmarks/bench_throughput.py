"""Training and inference throughput, and the fraction of attainable compute.

For N in (64, 128) and gridsize in (1, 2), on the current machine:

* training throughput: patterns per second through a full optimisation step
  (network + physics + Poisson NLL + backward + Adam), batch of 16 groups;
* inference throughput: patterns per second, forward only (`predict_patches`
  under `inference_mode`) and forward + stitching of a simulated scan;
* FLOPs per pattern of the generator (torch.utils.flop_counter) and the
  achieved FLOP/s divided by the dense matmul FLOP/s measured in the same run.

Usage::

    python benchmarks/bench_throughput.py [--architecture unet] [--threads 2] [--record]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ptychopinn.config import InferenceConfig, TrainingConfig
from ptychopinn.models.pinn import PtychoPINN
from ptychopinn.physics.losses import poisson_nll


def matmul_flops(seconds: float = 2.0, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0)


def _model(n: int, gridsize: int, arch: str) -> PtychoPINN:
    cfg = TrainingConfig(model={"N": n, "gridsize": gridsize, "architecture": arch})
    probe = torch.polar(torch.rand(1, n, n) + 0.1, torch.rand(1, n, n))
    return PtychoPINN(cfg.model, probe)


def _prior(model: PtychoPINN, x: torch.Tensor) -> torch.Tensor | None:
    """A stand-in prior of the right shape (the scan's is computed once per pattern and
    looked up; its cost is measured by `reconstruct` below)."""
    if not model.cfg.prior_iterations:
        return None
    return torch.polar(torch.rand_like(x) + 0.5, torch.randn_like(x))


def generator_flops(model: PtychoPINN, n: int, c: int) -> float:
    """Forward FLOPs of the generator per pattern (the physics prior's FFTs, computed
    once per scan, are not counted by torch's flop counter; its time is the 'prior s'
    column)."""
    x = torch.rand(1, c, n, n)
    with torch.inference_mode():
        inp = model.network_input(x, 1.0, _prior(model, x))
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model.generator(inp)
    return fc.get_total_flops() / c


def train_rate(model: PtychoPINN, n: int, c: int, seconds: float, batch: int = 16) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, c, n, n) * 3
    counts = x.square()
    offs = torch.randn(batch, c, 2) * 4
    # training computes the physics prior once per scan (models.scan_prior.ScanPrior)
    prior = _prior(model, x)

    def step():
        patches = model.predict_patches(x, 1.0, prior)
        loss = poisson_nll(model.expected_counts(patches, offs), counts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        k += 1
    return k * batch * c / (time.perf_counter() - t0)


def infer_rates(model: PtychoPINN, n: int, gridsize: int, arch: str, seconds: float):
    from ptychopinn.bundle.pytorch import LoadedModel
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    c = gridsize * gridsize
    model.eval()
    x = torch.rand(64, c, n, n)
    prior = _prior(model, x)
    with torch.inference_mode():
        model.predict_patches(x[:8], 1.0, None if prior is None else prior[:8])
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.predict_patches(x, 1.0, prior)
            k += 1
    fwd = k * 64 * c / (time.perf_counter() - t0)
    scan = simulate_scan(SimulationConfig(N=n, n_positions=625, seed=1))
    cfg = TrainingConfig(model={"N": n, "gridsize": gridsize, "architecture": arch})
    loaded = LoadedModel(model=model, config=cfg, manifest={}, path=Path("<bench>"))
    reconstruct_pytorch(loaded, scan, InferenceConfig())
    t0 = time.perf_counter()
    rec = reconstruct_pytorch(loaded, scan, InferenceConfig())
    dt = time.perf_counter() - t0
    # patterns of the scan per second (each pattern is predicted once per group it is in)
    return fwd, scan.n_patterns / dt, rec.timings_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--architecture", default="unet")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_flops()
    rows = []
    for n in (64, 128):
        for g in (1, 2):
            c = g * g
            torch.manual_seed(0)
            model = _model(n, g, args.architecture)
            flops = generator_flops(model, n, c)
            tr = train_rate(model, n, c, args.seconds)
            fwd, stitched, timings = infer_rates(model, n, g, args.architecture, args.seconds)
            util_train = 3 * flops * tr / peak  # backward ~ 2x forward
            util_inf = flops * fwd / peak
            rows.append(
                [
                    n,
                    g,
                    f"{flops / 1e6:.0f}",
                    f"{tr:.0f}",
                    f"{fwd:.0f}",
                    f"{stitched:.0f}",
                    f"{timings.get('prior', 0.0):.2f}",
                    f"{timings['predict']:.2f}",
                    f"{timings['stitch']:.2f}",
                    f"{100 * util_train:.0f}%",
                    f"{100 * util_inf:.0f}%",
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "N",
        "gridsize",
        "MFLOP/pattern (fwd)",
        "train patterns/s",
        "infer patterns/s (fwd)",
        "infer+stitch scan patterns/s",
        "prior s per 625",
        "predict s per 625",
        "stitch s per 625",
        "train FLOP/s / matmul",
        "infer FLOP/s / matmul",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    table = "\n".join(lines)
    notes = (
        f"architecture={args.architecture}, torch threads={torch.get_num_threads()}, "
        f"measured dense matmul {peak / 1e9:.1f} GFLOP/s (float32, 1024^3). Training FLOPs "
        "are taken as 3x the forward FLOPs of the generator. 'infer patterns/s (fwd)' is the "
        "generator given each pattern's physics prior (batches of 64 groups; the prior is "
        "computed once per scan, its time is the 'prior s' column). 'infer+stitch' "
        "counts the scan's 625 patterns per second of `reconstruct` with the default "
        "inference options (the prior, cover grouping, prediction of those groups, phase "
        "synchronisation, stitching); the model is untrained (speed does not depend on "
        "the weights)."
    )
    print(table)
    print(notes)
    if args.record:
        sys.path.insert(0, str(Path(__file__).parent))
        from _record import append_section

        append_section(f"Throughput ({args.architecture})", table, notes=notes)



if __name__ == "__main__":
    main()
