"""Where inference + stitching spends its time: the physics prior, the network and the
stitching, for several inference batch sizes (`InferenceConfig.batch_size`, groups per
forward pass), on the CPU or a GPU.

On a GPU our inference is launch-bound (many small kernels, sequential prior passes),
so the split says which stage a speed-up must come from; on a CPU it says whether the
batch size matters. Each variant runs once as a warm-up, then ``--repeats`` times; the
table gives each stage's median seconds and the objects' amplitude / phase SSIM against
the truth (the batch size must not change the object beyond float rounding).

The repeats run round-robin over the batch sizes (one run of each, then the next round), so
a machine whose speed drifts during the run (a shared or throttled CPU) shifts every batch
size alike. ``auto`` among the batch sizes is `InferenceConfig.batch_size`'s default, shown
with the number it resolved to (`ptychopinn.inference.precision.network_batch_size`).

Usage::

    python benchmarks/bench_inference_stages.py --run models/seed11 models/scans/seed11.npz \\
        [--models models --seeds 5 7] [--device cuda] [--batch-sizes 16 32 64 auto] \\
        [--untrained 128:2] [--repeats 5] [--record]

``--untrained N:G`` (repeatable) adds an untrained default model of patch size N and
gridsize G on a simulated 625-pattern scan (seed 1) of that size: the stages' times do not
depend on the weights (its scores mean nothing).

``--run RUN SCAN`` (repeatable) and ``--models`` / ``--seeds`` / ``--cases`` name the
models and scans as in the other benchmarks (`train_models.model_runs`).

On a GPU the stages are not synchronised one by one: each ends where its results reach
the next, so the split is approximate; the total is exact (the reconstruction comes back
as host arrays).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

STAGES = ("prior", "predict", "stitch", "total")


def untrained(n: int, gridsize: int):
    """An untrained default model of patch size ``n`` and ``gridsize`` (seed 0) as a
    `LoadedModel`, and a simulated 625-pattern scan (seed 1) for it."""
    from ptychopinn.bundle.pytorch import LoadedModel
    from ptychopinn.config import TrainingConfig
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=n, n_positions=625, seed=1))
    cfg = TrainingConfig(model={"N": n, "gridsize": gridsize})
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), 4.0)
    torch.manual_seed(0)
    model = PtychoPINN(cfg.model, probe)
    return LoadedModel(model=model, config=cfg, manifest={}, path=Path(f"<untrained {n}:{gridsize}>")), scan


def time_variants(model_path, scan, scan_path, device: str, batch_sizes: list,
                  repeats: int) -> list[dict]:
    """One row per batch size (a number or 'auto'): median seconds of each of `STAGES` over
    ``repeats`` runs after a warm-up, the runs round-robin over the batch sizes, and the last
    run's amplitude / phase SSIM (``scan`` loaded from ``scan_path``, which names it in
    errors; ``model_path`` a bundle or a `LoadedModel`)."""
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import evaluate

    if scan.object is None:
        raise SystemExit(f"bench_inference_stages: {scan_path}: no true object "
                         "(key 'objectGuess') to score against")
    loaded = load_pinn(model_path) if isinstance(model_path, (str, Path)) else model_path
    cfgs = [InferenceConfig(batch_size=bs, execution={"accelerator": device})
            for bs in batch_sizes]
    for cfg in cfgs:
        reconstruct_pytorch(loaded, scan, cfg)  # warm-up
    runs = [[] for _ in cfgs]
    for _ in range(repeats):  # round-robin: a drifting machine shifts every size alike
        for k, cfg in enumerate(cfgs):
            runs[k].append(reconstruct_pytorch(loaded, scan, cfg))
    rows = []
    for bs, done in zip(batch_sizes, runs, strict=True):
        m = evaluate(done[-1].object, scan.object, positions_px=scan.positions_px,
                     patch_size=scan.patch_size)
        row = {k: statistics.median(r.timings_s[k] for r in done) for k in STAGES}
        used = done[-1].network_batch_size
        row.update(batch=bs if bs != "auto" else f"auto ({used})", used=used,
                   amp=m["amp_ssim"], phase=m["phase_ssim"],
                   patterns=scan.n_patterns, groups=done[-1].timings_s["n_groups"])
        rows.append(row)
    return rows


def batch_size_arg(text: str) -> int | str:
    """``--batch-sizes``' items: a whole number >= 1 or 'auto'."""
    from ptychopinn.inference.precision import batch_size_from_text

    try:
        return batch_size_from_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def untrained_arg(text: str) -> tuple[int, int]:
    """``--untrained N:G``."""
    try:
        n, g = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N:G (patch size and gridsize, e.g. "
                                         f"128:2); found {text!r}") from None
    if n < 16 or g < 1:
        raise argparse.ArgumentTypeError(f"expected N >= 16 and G >= 1; found {text!r}")
    return n, g


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from train_models import add_run_argument, add_seed_model_arguments, model_runs

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seed_model_arguments(ap, required=False)
    add_run_argument(ap)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batch-sizes", type=batch_size_arg, nargs="+", default=[16, 32, 64, "auto"])
    ap.add_argument("--untrained", type=untrained_arg, action="append", default=[],
                    metavar="N:G", help="an untrained model of patch size N, gridsize G, on a "
                    "simulated 625-pattern scan (repeatable)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1; found {args.repeats}")
    runs = model_runs(ap, args) if (args.run or args.models or not args.untrained) else []
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    from _record import print_and_record

    header = ["model", "scan", "batch", "prior s", "network s", "stitch s", "total s",
              "patterns/s", "amp / phase SSIM"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    cases = [(model, *load()) for _, model, load in runs]
    for n, g in args.untrained:
        loaded, scan = untrained(n, g)
        cases.append((loaded, scan, f"simulated N={n} (seed 1)"))
    for model, scan, scan_path in cases:
        label = str(model) if isinstance(model, (str, Path)) else str(model.path)
        for r in time_variants(model, scan, scan_path, args.device, args.batch_sizes,
                               args.repeats):
            cells = [label, Path(scan_path).name, str(r["batch"]), f"{r['prior']:.3f}",
                     f"{r['predict']:.3f}", f"{r['stitch']:.3f}", f"{r['total']:.3f}",
                     f"{r['patterns'] / r['total']:.0f}", f"{r['amp']:.3f} / {r['phase']:.3f}"]
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    where = (f"device {torch.cuda.get_device_name()} (torch {torch.__version__})"
             if args.device == "cuda" else f"CPU, torch threads {torch.get_num_threads()}")
    notes = (f"{where}; default inference options but InferenceConfig.batch_size (groups "
             f"per forward pass; 'auto' with the number it resolved to); each stage the median "
             f"of {args.repeats} runs after a warm-up, the runs round-robin over the batch "
             "sizes (Reconstruction.timings_s; on a GPU the split between stages is "
             "approximate, the total exact). Untrained models' scores mean nothing.")
    print_and_record("Inference stages by batch size (bench_inference_stages.py)",
                     "\n".join(lines), notes, args.record)


if __name__ == "__main__":
    main()
