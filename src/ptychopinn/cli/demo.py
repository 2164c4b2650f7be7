"""``ptychopinn demo``: the main job end to end on the built-in default scan."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ptychopinn.atomic import atomic_write_text, check_output_dir, ensure_dir
from ptychopinn.errors import OutputPathError

DEMO_MARKER = ".ptychopinn-demo"
"""The file by which the demo knows its own output folder (written before anything
else); a folder with it, or with an earlier demo's summary.json, is replaced on a rerun."""


def _written_by_demo(out: Path) -> bool:
    if (out / DEMO_MARKER).is_file():
        return True
    try:  # the folder of a demo run before the marker existed
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and {"scan", "bundle", "amp_ssim"} <= summary.keys()


def check_demo_folder(out: Path) -> None:
    """`OutputPathError` when ``out`` holds a scan.npz, a trained model (run/) or a
    reconstruction/ that an earlier demo did not write: the demo would replace them."""
    from ptychopinn.training.checks import trained_run_files

    if not out.is_dir() or _written_by_demo(out):
        return
    found = [out / n for n in ("scan.npz", "reconstruction") if (out / n).exists()]
    found += trained_run_files(out / "run")
    if found:
        raise OutputPathError(
            f"--output-dir {out}: already holds {', '.join(str(f) for f in found)}, which "
            f"an earlier demo did not write (no {DEMO_MARKER} or demo summary.json); expected "
            "a new folder or an earlier demo's folder, since the demo replaces these. Give "
            "another --output-dir."
        )


def run_demo(out: Path, *, minutes: float | None, accelerator: str, seed: int) -> int:
    """Simulate -> train (self-supervised) -> reconstruct in a fresh load -> figures/metrics."""
    from ptychopinn.api import load_bundle, reconstruct, simulate, train
    from ptychopinn.config.io import build
    from ptychopinn.config.schema import InferenceConfig, TrainingConfig
    from ptychopinn.data.npz import save_npz
    from ptychopinn.figures import plot_positions, plot_probe
    from ptychopinn.inference.reconstruct import write_outputs
    from ptychopinn.simulation import SimulationConfig

    # the options are checked before anything is simulated or written
    check_output_dir(out, "--output-dir")
    data_path = out / "scan.npz"
    overrides = {
        "output_dir": str(out / "run"),
        "train_data_file": str(data_path),
        "seed": seed,
        "save_reconstruction": False,
        "execution": {"accelerator": accelerator},
    }
    if minutes is not None:
        overrides["max_time_minutes"] = minutes
    cfg = build(TrainingConfig, overrides, where="demo options")
    icfg = build(InferenceConfig, {"output_dir": str(out / "reconstruction"),
                                   "execution": {"accelerator": accelerator}},
                 where="demo options")
    sim = build(SimulationConfig, {"seed": seed}, where="demo options")
    if cfg.backend == "pytorch":
        from ptychopinn.training.checks import check_torch_accelerator

        check_torch_accelerator(cfg.execution.accelerator)
    check_demo_folder(out)

    ensure_dir(out, "--output-dir")
    atomic_write_text(out / DEMO_MARKER, "written by `ptychopinn demo`; a rerun replaces "
                      "scan.npz, run/ and reconstruction/ in this folder\n")
    t0 = time.perf_counter()
    print("1/4 simulating the default scan (textured object, 625 positions, 1e6 photons)")
    scan = simulate(sim)
    save_npz(scan, data_path)
    plot_probe(scan.probe, out / "probe.png")
    plot_positions(scan.positions_px, out / "positions.png", object_shape=scan.object.shape)
    print("2/4 training the PINN (self-supervised, Poisson likelihood)")
    result = train(cfg, scan, overwrite=True)  # the demo's own run folder: a rerun replaces it
    print("3/4 reconstructing from the saved bundle")
    model = load_bundle(result.bundle_path)
    recon = reconstruct(model, scan, icfg)
    print("4/4 writing figures and metrics")
    files = write_outputs(recon, out / "reconstruction", scan=scan,
                          data_consistency_patterns=icfg.data_consistency_patterns)
    m = (recon.metrics or {}).get("reconstruction", {})
    fit = (recon.metrics or {}).get("data_consistency", {}).get("reconstruction", {})
    summary = {
        "scan": str(data_path),
        "bundle": str(result.bundle_path),
        "reconstruction": str(files["reconstruction"]),
        "amp_ssim": m.get("amp_ssim"),
        "phase_ssim": m.get("phase_ssim"),
        "deviance_over_noise_floor": fit.get("deviance_ratio"),
        "train_seconds": result.timings_s.get("fit"),
        "inference_seconds": recon.timings_s.get("total"),
        "total_seconds": time.perf_counter() - t0,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return 0
