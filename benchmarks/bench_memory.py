"""Peak memory (RSS) of inference + stitching over large simulated scans.

For each scan size (default 1e4, 3e4, 1e5 patterns at N=64) a scan is simulated
and saved, then a FRESH process loads it and reconstructs it with an untrained
default model (memory does not depend on the weights) and reports its peak RSS.
Inference streams groups in chunks and accumulates the stitched object, so the
peak should be the input data plus a bounded working set.

Usage::

    python benchmarks/bench_memory.py [--sizes 10000,30000,100000] [--record]
    python benchmarks/bench_memory.py --sizes 5000,10000 --phase-sync global  # its limit

``--phase-sync global`` stitches with ``InferenceConfig.phase_sync_method='global'``
(the groups' overlap matrix is built in memory; above its limit, ~11,000 patterns of
64x64, inference falls back to 'waves', which the table's last column says).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import json, resource, sys, time
import torch
from ptychopinn.bundle.pytorch import LoadedModel
from ptychopinn.config import InferenceConfig, TrainingConfig
from ptychopinn.data import load_npz
from ptychopinn.inference.reconstruct import reconstruct_pytorch
from ptychopinn.models.pinn import PtychoPINN

path, sync, bench = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, bench)
from _rss import reset_peak, status_mb

scan = load_npz(path)
load_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
rss_data = status_mb("VmRSS")
reset = reset_peak()  # so the peak measures inference alone
cfg = TrainingConfig(model={"N": scan.patch_size})
model = PtychoPINN(cfg.model, torch.from_numpy(scan.probe)).eval()
loaded = LoadedModel(model=model, config=cfg, manifest={}, path=None)
t0 = time.perf_counter()
rec = reconstruct_pytorch(loaded, scan, InferenceConfig(phase_sync_method=sync))
dt = time.perf_counter() - t0
peak = status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"n": scan.n_patterns, "data_mb": scan.diffraction.nbytes / 2**20,
                  "load_peak_mb": load_peak, "peak_reset": reset,
                  "rss_after_load_mb": rss_data, "peak_rss_mb": peak, "seconds": dt,
                  "object_shape": list(rec.object.shape), "prior_s": rec.timings_s["prior"],
                  "prior_passes": rec.prior_passes, "prior_agreement": rec.prior_agreement,
                  "prior_phase_momentum": rec.prior_phase_momentum,
                  "phase_sync": rec.phase_sync}))
"""


def _run_child(path: Path, sync: str) -> str:
    """Run the measuring child; it dies with this process (even on SIGTERM)."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), sync,
                             str(Path(__file__).resolve().parent)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        out, err = proc.communicate()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed on {path} (exit {proc.returncode}):\n{err[-2000:]}")
    return out


def main() -> None:
    from ptychopinn.config import InferenceConfig, TrainingConfig

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,30000,100000")
    ap.add_argument("--N", type=int, default=64)
    ap.add_argument("--phase-sync", choices=("waves", "global"), default=None,
                    help="InferenceConfig.phase_sync_method (default: infer's, "
                         f"{InferenceConfig().phase_sync_method})")
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    sync = args.phase_sync or InferenceConfig().phase_sync_method
    from ptychopinn.data import save_npz
    from ptychopinn.models.scan_prior import INFERENCE_EXTRA_PASSES, INFERENCE_PHASE_MOMENTUM
    from ptychopinn.physics.prior_frc import EXTRA_PASS_AGREEMENT
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            path = Path(tmp) / f"scan_{n}.npz"
            scan = simulate_scan(SimulationConfig(N=args.N, n_positions=n, seed=1))
            save_npz(scan, path)
            del scan
            r = json.loads(_run_child(path, sync).strip().splitlines()[-1])
            r["overhead_mb"] = r["peak_rss_mb"] - r["rss_after_load_mb"]
            rows.append(r)
            print(r, flush=True)
            path.unlink()
    header = ["patterns", "diffraction data (MB)", "peak RSS of loading (MB)",
              "RSS after loading (MB)", "peak RSS of inference (MB)", "inference overhead (MB)",
              "inference + stitch (s)", "patterns/s", "of which the prior (s)",
              "prior passes run, phase momentum (half-scan agreement)", "phase sync run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(f"| {r['n']} | {r['data_mb']:.0f} | {r['load_peak_mb']:.0f} | "
                     f"{r['rss_after_load_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['overhead_mb']:.0f} | {r['seconds']:.1f} | {r['n'] / r['seconds']:.0f} | "
                     f"{r['prior_s']:.1f} | {r['prior_passes']}, "
                     f"{r['prior_phase_momentum'] or 0:g}"
                     + ("" if r["prior_agreement"] is None else f" ({r['prior_agreement']:.2f})")
                     + f" | {r['phase_sync']} |")
    table = "\n".join(lines)
    notes = ("Each size runs in a fresh process: load the NPZ, reconstruct with the default "
             "model and inference options (gridsize 2, cover groups ~n/3, batches of 64 "
             "groups, the scan-wide physics prior held as one object canvas, predictions "
             "cached up to 1 GiB else recomputed for the phase-polish pass). "
             "The peak RSS is reset after loading (Linux /proc/self/clear_refs), so 'peak RSS "
             "of inference' is the inference's own peak and 'inference overhead' = that peak "
             "minus the RSS after loading; it should stay roughly constant as the scan grows "
             "(chunked prior, prediction and stitching). The prior runs the model's "
             f"{TrainingConfig().model.prior_iterations} passes, plus "
             f"{INFERENCE_EXTRA_PASSES} where its half-scan agreement is "
             f"at least {EXTRA_PASS_AGREEMENT} (`InferenceConfig.prior_extra_iterations`), "
             f"with phase momentum {INFERENCE_PHASE_MOMENTUM:g} there "
             "(`InferenceConfig.prior_phase_momentum`; else 0). Phase synchronisation "
             f"asked for: {sync} (`InferenceConfig.phase_sync_method`; above ~11,000 "
             "patterns 'global' runs as 'waves': the last column).")
    print(table)
    print(notes)
    if args.record:
        sys.path.insert(0, str(Path(__file__).parent))
        from _record import append_section

        append_section("Inference peak memory" + (
            f" [phase_sync_method={args.phase_sync}]" if args.phase_sync else ""),
            table, notes=notes)


if __name__ == "__main__":
    main()
