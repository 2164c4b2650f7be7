"""Benchmark: pty-chi LSQML on the measured Siemens star (APS, 516 x 128 x 128).

Loads ``siemens-star-small.npz.bz2`` from the shared data folder with
`ptychopinn.data.readers.load_scan` (positions shifted into a canvas, probe =
the zone-plate GUESS rescaled to the measured counts), writes it as an NPZ in
our contract (a uniform ``objectGuess`` fixes the object frame), reconstructs
it with pty-chi (``benchmarks/ptychi_runner.py`` in pty-chi's own venv, see
`bench_ptychi.run_ptychi`) and saves, under ``benchmarks/_work/`` (gitignored):

* ``siemens_ptychi.npz``: ``object`` (complex64, the frame of the loaded
  scan's ``positions_px``), ``probe``, ``positions_px`` (final),
  ``positions_in_px`` (given), ``loss``, ``reconstruction_s``,
  ``reconstruction_cpu_s``, ``setup_s``, ``import_s``, ``epochs``,
  ``batch_size``, ``threads``, ``refine_probe``, ``load_1m``,
  ``position_shift_px`` (tike scan + N/2 + shift = our positions);
* ``siemens_ptychi.png``: amplitude and phase inside the scanned region and
  the loss curve;
* ``siemens_ptychi_runner.npz``: the runner's own result, rewritten every
  ``--checkpoint-every`` epochs (``--from-result`` rebuilds the two files above
  from it, e.g. after stopping a long run).

Example::

    python benchmarks/bench_siemens.py --epochs 100 --refine-probe
    python benchmarks/bench_siemens.py --refine-probe --refine-positions --name siemens_ptychi_pos
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "siemens_star" / "siemens-star-small.npz.bz2"
WORK = HERE / "_work"

log = logging.getLogger(__name__)


def contract_scan(path: str | Path):
    """The star as a `Scan` with a uniform complex ``object`` spanning every patch."""
    from ptychopinn.data.readers import load_scan

    scan = load_scan(path)
    n = scan.patch_size
    hi = np.ceil(scan.positions_px.max(axis=0) + n / 2).astype(int) + 1
    return scan.replace(object=np.ones((int(hi[0]), int(hi[1])), dtype=np.complex64))


def save_figure(obj: np.ndarray, positions_px: np.ndarray, n: int, loss: np.ndarray,
                title: str, path: Path) -> Path:
    """Amplitude and phase of ``obj`` inside the scanned region, and the loss curve."""
    from ptychopinn.figures.images import new_figure, phase_display, show_image
    from ptychopinn.figures.images import save_figure as _save
    from ptychopinn.metrics import illuminated_region

    rows, cols = illuminated_region(obj.shape, positions_px, n)
    crop = obj[rows, cols]
    amp, phase = np.abs(crop), np.angle(crop)
    cmap, lim = phase_display(phase)
    fig = new_figure(15.0, 4.8)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    show_image(fig, ax1, amp, title=f"{title}: amplitude", cbar_label="amplitude")
    show_image(fig, ax2, phase, title=f"{title}: phase", cbar_label="phase (rad)", cmap=cmap,
               limits=lim)
    if loss.size:
        ax3.semilogy(np.arange(loss.size), loss)
    ax3.set_xlabel("epoch")
    ax3.set_ylabel("pty-chi loss (MSE of sqrt intensity)")
    ax3.set_title("loss", fontsize=9)
    return _save(fig, path)


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="the Siemens star .npz.bz2")
    p.add_argument("--algorithm", choices=["lsqml", "epie"], default="lsqml")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--refine-probe", action="store_true",
                   help="refine the probe too (the star's probe is only a zone-plate guess)")
    p.add_argument("--refine-positions", action="store_true",
                   help="correct the scan positions too (pty-chi's position correction)")
    p.add_argument("--noise-model", choices=["gaussian", "poisson"], default="gaussian")
    p.add_argument("--ptychi-python", default=None)
    p.add_argument("--out-dir", default=str(WORK), help="where the NPZ and PNG go")
    p.add_argument("--name", default="siemens_ptychi", help="file stem of the outputs")
    p.add_argument("--checkpoint-every", type=int, default=10,
                   help="the runner writes its partial result ({name}_runner.npz) this often")
    p.add_argument("--from-result", default=None,
                   help="skip pty-chi: rebuild the NPZ and figure from this runner result "
                        "(e.g. the partial {name}_runner.npz of a stopped run)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    sys.path.insert(0, str(HERE))
    from bench_ptychi import _load_1m, find_ptychi_python, read_result, run_ptychi

    if not Path(args.data).exists():
        print(f"bench_siemens: SKIPPED: {args.data} not found (the shared data folder).",
              file=sys.stderr)
        return None
    if args.from_result is None and find_ptychi_python(args.ptychi_python) is None:
        print("bench_siemens: SKIPPED: no pty-chi interpreter (see bench_ptychi.py --help).",
              file=sys.stderr)
        return None

    from ptychopinn.data import save_npz
    from ptychopinn.data.npz import atomic_savez

    scan = contract_scan(args.data)
    n = scan.patch_size
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load = _load_1m()
    if args.from_result is not None:
        r = read_result(args.from_result)
        refine_probe = bool(r["options"].get("refine_probe", False))
    else:
        refine_probe = bool(args.refine_probe)
        extra = ["--noise-model", args.noise_model,
                 "--checkpoint-every", str(args.checkpoint_every)]
        extra += ["--refine-probe"] if refine_probe else []
        extra += ["--refine-positions"] if args.refine_positions else []
        with tempfile.TemporaryDirectory(prefix="bench_siemens_") as tmp:
            path = save_npz(scan, Path(tmp) / "siemens.npz")
            r = run_ptychi(path, args.algorithm, args.epochs, args.threads,
                           batch_size=args.batch_size, python=args.ptychi_python,
                           extra_args=tuple(extra), out_path=out_dir / f"{args.name}_runner.npz")
    shift = scan.metadata.get("position_shift_px", [0, 0])
    arrays = {
        "object": r["object"].astype(np.complex64),
        "probe": r["probe"].astype(np.complex64),
        "positions_px": r["positions_px"],
        "positions_in_px": scan.positions_px,
        "loss": r["loss"],
        "position_shift_px": np.asarray(shift, dtype=np.int64),
        "refine_probe": np.asarray(refine_probe),
        "refine_positions": np.asarray(bool(r["options"].get("refine_positions", False))),
        "algorithm": np.asarray(r["algorithm"]),
        "epochs_requested": np.int64(r["epochs_requested"]),
        "load_1m": np.float64(np.nan if load is None else load),
        "options_json": np.asarray(json.dumps(r["options"])),
    }
    for k in ("reconstruction_s", "reconstruction_cpu_s", "setup_s", "import_s"):
        arrays[k] = np.float64(r[k])
    for k in ("epochs", "batch_size", "threads"):
        arrays[k] = np.int64(r[k])
    npz = atomic_savez(out_dir / f"{args.name}.npz", arrays)
    title = f"pty-chi {r['algorithm'].upper()} {r['epochs']} ep" + (
        " + probe" if refine_probe else "")
    png = save_figure(r["object"], scan.positions_px, n, r["loss"], title,
                      out_dir / f"{args.name}.png")
    summary = {
        "algorithm": r["algorithm"], "epochs": r["epochs"],
        "epochs_requested": r["epochs_requested"], "batch_size": r["batch_size"],
        "threads": r["threads"], "refine_probe": refine_probe,
        "reconstruction_s": round(r["reconstruction_s"], 2),
        "reconstruction_cpu_s": round(r["reconstruction_cpu_s"], 2),
        "setup_s": round(r["setup_s"], 2), "import_s": round(r["import_s"], 2),
        "final_loss": float(r["loss"][-1]) if r["loss"].size else None,
        "load_1m_before": load, "load_1m_after": _load_1m(),
        "npz": str(npz), "png": str(png),
    }
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
