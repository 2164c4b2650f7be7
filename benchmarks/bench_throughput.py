"""Training and inference throughput, and the fraction of attainable compute.

For N in (64, 128) and gridsize in (1, 2), on the current machine:

* training throughput: patterns per second through a full optimisation step
  (network + physics + Poisson NLL + backward + Adam), batch of 16 groups;
* inference throughput: patterns per second, forward only (`predict_patches`
  under `inference_mode`) and forward + stitching of a simulated scan;
* FLOPs per pattern of the generator (torch.utils.flop_counter) and the
  achieved FLOP/s divided by the dense matmul FLOP/s measured in the same run
  (for inference, in the dtype the network runs in: ``--precision``, default
  ``auto`` as `ptychopinn infer`, is bfloat16 on a CPU with AMX-BF16 units).

With ``--device cuda`` everything runs on the GPU (timers wait for it) and
the matmul reference is a float32 8192^3 product there.

Usage::

    python benchmarks/bench_throughput.py [--architecture unet] [--threads 2] [--record]
    python benchmarks/bench_throughput.py --device cuda --train-batch 64 --record
    python benchmarks/bench_throughput.py --infer-batch 16 --record   # groups per forward pass
    python benchmarks/bench_throughput.py --set model.subpixel=probe_shift \
        --set model.prior_iterations=16 --record      # the probe-shift recipe's speed

``--set model.KEY=VALUE`` (repeatable) changes the model section of every
configuration measured (N, gridsize and the architecture stay the script's).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ptychopinn.config import InferenceConfig, TrainingConfig
from ptychopinn.inference.precision import (
    INFERENCE_PRECISIONS,
    network_autocast,
    network_batch_size,
    network_dtype,
)
from ptychopinn.models.pinn import PtychoPINN
from ptychopinn.physics.losses import poisson_nll


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(seconds: float = 2.0, n: int = 1024, device: torch.device | None = None,
                 dtype: torch.dtype = torch.float32) -> float:
    device = device or torch.device("cpu")
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
        if count % 8 == 0:
            _sync(device)
    _sync(device)
    return 2 * n**3 * count / (time.perf_counter() - t0)


def _config(n: int, gridsize: int, arch: str, overrides: dict | None = None) -> TrainingConfig:
    """The training configuration measured: defaults, ``overrides`` (a parsed
    ``--set`` dict), then this row's N, gridsize and architecture."""
    from ptychopinn.config.io import build, merge

    data = merge(overrides or {}, {"model": {"N": n, "gridsize": gridsize, "architecture": arch}})
    return build(TrainingConfig, data, where="--set")


def _model(n: int, gridsize: int, arch: str, device: torch.device,
           overrides: dict | None = None) -> PtychoPINN:
    cfg = _config(n, gridsize, arch, overrides)
    probe = torch.polar(torch.rand(1, n, n) + 0.1, torch.rand(1, n, n))
    return PtychoPINN(cfg.model, probe).to(device)


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
    x = torch.rand(1, c, n, n, device=model.probe.device)
    with torch.inference_mode():
        inp = model.network_input(x, 1.0, _prior(model, x))
    with FlopCounterMode(display=False) as fc, torch.inference_mode():
        model.generator(inp)
    return fc.get_total_flops() / c


def train_rate(model: PtychoPINN, n: int, c: int, seconds: float, batch: int = 16) -> float:
    dev = model.probe.device
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, c, n, n, device=dev) * 3
    counts = x.square()
    offs = torch.randn(batch, c, 2, device=dev) * 4
    # training computes the physics prior once per scan (models.scan_prior.ScanPrior)
    prior = _prior(model, x)

    def step():
        patches = model.predict_patches(x, 1.0, prior)
        loss = poisson_nll(model.expected_counts(patches, offs), counts)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    _sync(dev)
    k, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        k += 1
        if k % 4 == 0:
            _sync(dev)
    _sync(dev)
    return k * batch * c / (time.perf_counter() - t0)


def infer_rates(model: PtychoPINN, n: int, gridsize: int, arch: str, seconds: float,
                overrides: dict | None = None, precision: str = "auto", repeats: int = 5,
                batch: int | None = None):
    """``(forward patterns/s, scan patterns/s with stitching, timings_s)``: the scan's
    `reconstruct` is timed ``repeats`` times after a warm-up; the rate and each stage's
    time are the medians over the repeats (one run moved by up to 1.5x on a shared
    2-core machine). ``batch``: groups per forward pass (`InferenceConfig.batch_size`;
    None: its default)."""
    from ptychopinn.bundle.pytorch import LoadedModel
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    c = gridsize * gridsize
    dev = model.probe.device
    model.eval()
    batch = network_batch_size(batch or InferenceConfig().batch_size, n,
                               network_dtype(precision, dev), dev)
    x = torch.rand(batch, c, n, n, device=dev)
    prior = _prior(model, x)
    # the generator in the precision `reconstruct` gives it (execution.precision)
    with torch.inference_mode(), network_autocast(network_dtype(precision, dev), dev):
        model.predict_patches(x[:8], 1.0, None if prior is None else prior[:8])
        _sync(dev)
        k, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.predict_patches(x, 1.0, prior)
            k += 1
            if k % 4 == 0:
                _sync(dev)
        _sync(dev)
    fwd = k * batch * c / (time.perf_counter() - t0)
    scan = simulate_scan(SimulationConfig(N=n, n_positions=625, seed=1))
    cfg = _config(n, gridsize, arch, overrides)
    loaded = LoadedModel(model=model, config=cfg, manifest={}, path=Path("<bench>"))
    icfg = InferenceConfig(batch_size=batch,
                           execution={"accelerator": "cuda" if dev.type == "cuda" else "cpu",
                                      "precision": precision})
    reconstruct_pytorch(loaded, scan, icfg)
    runs, stages = [], []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        rec = reconstruct_pytorch(loaded, scan, icfg)  # returns host arrays: the device is done
        runs.append(time.perf_counter() - t0)
        stages.append(rec.timings_s)
    timings = {k: float(np.median([t.get(k, 0.0) for t in stages]))
               for k in ("prior", "predict", "stitch")}
    # patterns of the scan per second (each pattern is predicted once per group it is in)
    return fwd, scan.n_patterns / float(np.median(runs)), timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--architecture", default="unet")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--train-batch", type=int, default=16, help="groups per training step")
    ap.add_argument("--set", action="append", default=[], metavar="model.KEY=VALUE",
                    help="model-section override of every configuration (repeatable)")
    ap.add_argument("--precision", choices=INFERENCE_PRECISIONS, default="auto",
                    help="the network's precision at inference (execution.precision; default "
                         "auto, as `ptychopinn infer`); training runs in float32")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed reconstructions of the scan per row (their median is reported)")
    ap.add_argument("--infer-batch", type=int, default=None,
                    help="groups per inference forward pass (InferenceConfig.batch_size; "
                         f"default {InferenceConfig().batch_size})")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1; found {args.repeats}")
    from ptychopinn.config.io import parse_set
    from ptychopinn.errors import ConfigError

    try:
        overrides = parse_set(args.set)
    except ConfigError as exc:
        ap.error(str(exc))
    if set(overrides) - {"model"}:
        ap.error(f"--set takes model.KEY=VALUE only; found {sorted(set(overrides) - {'model'})}")
    try:
        _config(64, 2, args.architecture, overrides)
    except ConfigError as exc:
        ap.error(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")
    if args.train_batch < 1:
        ap.error(f"--train-batch must be >= 1; found {args.train_batch}")
    if args.infer_batch is not None and args.infer_batch < 1:
        ap.error(f"--infer-batch must be >= 1; found {args.infer_batch}")
    infer_batch = args.infer_batch or InferenceConfig().batch_size
    device = torch.device(args.device)
    if infer_batch == "auto":
        dt = network_dtype(args.precision, device)
        batch_words = ("'auto' (" + ", ".join(f"{network_batch_size('auto', n, dt, device)} at "
                                               f"N={n}" for n in (64, 128)) + ")")
    else:
        batch_words = str(infer_batch)
    size = 8192 if device.type == "cuda" else 1024
    peak = matmul_flops(n=size, device=device)
    net_dtype = network_dtype(args.precision, device) or torch.float32
    # inference's reference: the matmul in the dtype the network runs in
    peak_inf = peak if net_dtype == torch.float32 else matmul_flops(n=size, device=device,
                                                                    dtype=net_dtype)
    rows = []
    for n in (64, 128):
        for g in (1, 2):
            c = g * g
            torch.manual_seed(0)
            model = _model(n, g, args.architecture, device, overrides)
            flops = generator_flops(model, n, c)
            tr = train_rate(model, n, c, args.seconds, batch=args.train_batch)
            fwd, stitched, timings = infer_rates(model, n, g, args.architecture, args.seconds,
                                                 overrides, args.precision, args.repeats,
                                                 infer_batch)
            util_train = 3 * flops * tr / peak  # backward ~ 2x forward
            util_inf = flops * fwd / peak_inf
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
    where = (f"device {torch.cuda.get_device_name(device)} (torch {torch.__version__}; "
             "convolutions may use TF32, torch's default for cuDNN, the matmul reference does "
             "not), " if device.type == "cuda" else "")
    dname = str(net_dtype).removeprefix("torch.")
    prec = ("" if net_dtype == torch.float32 else
            f"; {dname} {peak_inf / 1e9:.1f} GFLOP/s, the reference of 'infer FLOP/s / matmul'")
    notes = (
        f"{where}architecture={args.architecture}"
        + "".join(f", --set {kv}" for kv in args.set)
        + f", torch threads={torch.get_num_threads()}, "
        f"training batch {args.train_batch} groups, "
        f"inference precision {args.precision} (the network in {dname}), "
        f"measured dense matmul {peak / 1e9:.1f} GFLOP/s (float32, {size}^3{prec}). Training FLOPs "
        "are taken as 3x the forward FLOPs of the generator. 'infer patterns/s (fwd)' is the "
        f"generator given each pattern's physics prior (batches of {batch_words} groups, also "
        "`reconstruct`'s InferenceConfig.batch_size; the prior is "
        "computed once per scan, its time is the 'prior s' column). 'infer+stitch' "
        "counts the scan's 625 patterns per second of `reconstruct` with the default "
        "inference options (the prior, cover grouping, prediction of those groups, phase "
        "synchronisation, stitching); the model is untrained (speed does not depend on "
        f"the weights). The scan columns are medians of {args.repeats} timed reconstructions."
    )
    print(table)
    print(notes)
    if args.record:
        sys.path.insert(0, str(Path(__file__).parent))
        from _record import append_section

        title = f"Throughput ({args.architecture}" + (", GPU)" if device.type == "cuda" else ")")
        tags = list(args.set) + ([] if args.precision == "auto" else
                                 [f"execution.precision={args.precision}"])
        if tags:
            title += " [" + ", ".join(tags) + "]"
        append_section(title, table, notes=notes)



if __name__ == "__main__":
    main()
