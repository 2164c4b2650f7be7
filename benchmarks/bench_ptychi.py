"""Benchmark: pty-chi's iterative engines (LSQML, ePIE) on simulated scans.

Simulates scans with `ptychopinn.simulation` (default `SimulationConfig`: N=64,
625 raster positions, 1e6 photons; the same at 1e4 photons; an unseen picture
from `HELD_OUT_IMAGES` as the object), writes them with `ptychopinn.data.save_npz`,
reconstructs each with pty-chi in ITS OWN virtual environment
(``benchmarks/ptychi_runner.py`` run by ``--ptychi-python`` / ``$PTYCHI_PYTHON``
/ ``/work/ptychi_venv/bin/python``; skipped with a message when absent) and
scores the result with `ptychopinn.metrics.evaluate`. Example::

    python benchmarks/bench_ptychi.py --cases textured --algorithms lsqml epie
    python benchmarks/bench_ptychi.py --record          # all cases, appended to docs

Other benchmark scripts reuse `simulate_case`, `run_ptychi`, `score` and
`table_row` to add their own engines (PINN inference, PINN + refinement) to the
same table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "ptychi_runner.py"
DEFAULT_PTYCHI_PYTHON = "/work/ptychi_venv/bin/python"
CASES: dict[str, dict] = {
    "textured": {},
    "textured_1e4": {"photons_per_pattern": 1e4},
    "textured_1e3": {"photons_per_pattern": 1e3},
    "image": {"object_kind": "image"},  # object_image chosen by --image
}
TABLE_HEADERS = ["engine", "object", "photons", "epochs", "compute s", "cpu s",
                 "amp SSIM", "phase SSIM", "FRC half-bit (1/px)", "load 1m"]


def find_ptychi_python(explicit: str | None = None) -> Path | None:
    """The pty-chi interpreter: ``explicit``, else ``$PTYCHI_PYTHON``, else the default
    venv; ``None`` when that file does not exist."""
    cand = explicit or os.environ.get("PTYCHI_PYTHON") or DEFAULT_PTYCHI_PYTHON
    path = Path(cand)
    if not path.exists():
        found = shutil.which(cand)
        return Path(found) if found else None
    return path


def simulate_case(case: str, workdir: Path, *, image: str | None = None, seed: int = 0,
                  n_positions: int = 625, N: int = 64, subpixel: str | None = None):
    """Simulate one named case of `CASES` into ``workdir``; returns ``(scan, path)``.
    ``subpixel`` overrides the simulator's sub-pixel model (None: its default)."""
    from ptychopinn.data import save_npz
    from ptychopinn.simulation import HELD_OUT_IMAGES, SimulationConfig, simulate_scan

    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; choose from {sorted(CASES)}")
    kw = dict(CASES[case])
    if kw.get("object_kind") == "image":
        kw["object_image"] = image or HELD_OUT_IMAGES[0]
    if subpixel is not None:
        kw["subpixel"] = subpixel
    cfg = SimulationConfig(N=N, n_positions=n_positions, seed=seed, **kw)
    scan = simulate_scan(cfg)
    path = save_npz(scan, workdir / f"scan_{case}.npz")
    return scan, Path(path)


def result_path(scan_path: str | os.PathLike, algorithm: str = "lsqml", epochs: int = 100
                ) -> Path:
    """Where `run_ptychi` leaves its result by default: ``<stem>_ptychi_<algorithm>_<epochs>
    .npz`` beside the scan."""
    scan_path = Path(scan_path)
    return scan_path.with_name(f"{scan_path.stem}_ptychi_{algorithm}_{epochs}.npz")


def run_ptychi(
    scan_path: str | os.PathLike,
    algorithm: str = "lsqml",
    epochs: int = 100,
    threads: int = 2,
    *,
    batch_size: int | None = None,
    out_path: str | os.PathLike | None = None,
    python: str | os.PathLike | None = None,
    extra_args: tuple[str, ...] = (),
    timeout_s: float | None = None,
    device: str = "cpu",
    warmup_epochs: int = 0,
) -> dict:
    """Reconstruct ``scan_path`` with pty-chi in its own interpreter.

    ``device`` is ``"cpu"`` (the GPU is hidden from the runner) or ``"gpu"``;
    ``warmup_epochs`` runs a throw-away task first (its time is ``warmup_s``).

    Returns
    -------
    dict
        ``object`` (complex64, the scan's object frame), ``probe``,
        ``positions_px``, ``loss`` (per epoch), ``setup_s``,
        ``reconstruction_s`` (wall, epochs only), ``reconstruction_cpu_s``,
        ``import_s``, ``process_s`` (whole subprocess, wall), ``algorithm``,
        ``epochs`` (done), ``epochs_requested``, ``batch_size``, ``threads``, ``result_path``, ``options``.

    Raises
    ------
    FileNotFoundError
        No pty-chi interpreter (see `find_ptychi_python`).
    RuntimeError
        The runner failed (its stderr tail is in the message).
    """
    exe = find_ptychi_python(None if python is None else str(python))
    if exe is None:
        raise FileNotFoundError(
            "pty-chi interpreter not found: pass --ptychi-python or set PTYCHI_PYTHON "
            f"(default {DEFAULT_PTYCHI_PYTHON})."
        )
    scan_path = Path(scan_path)
    out = Path(out_path) if out_path else result_path(scan_path, algorithm, epochs)
    cmd = [str(exe), str(RUNNER), str(scan_path), str(out), "--algorithm", algorithm,
           "--epochs", str(epochs), "--threads", str(threads), "--device", device,
           "--warmup-epochs", str(warmup_epochs), *extra_args]
    if batch_size is not None:
        cmd += ["--batch-size", str(batch_size)]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU benchmark, even where a GPU exists
    log.info("running %s", " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s,
                          check=False)
    process_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"pty-chi runner failed (exit {proc.returncode}) on {scan_path}:\n"
                           + proc.stderr[-3000:])
    return read_result(out, process_s)


def read_result(out: str | os.PathLike, process_s: float | None = None) -> dict:
    """The runner's result NPZ as the dict of `run_ptychi` (also for a partial
    checkpoint of a run that was stopped)."""
    with np.load(out, allow_pickle=False) as z:
        res = {k: z[k] for k in z.files}
    result: dict = {
        "object": res["object"],
        "probe": res["probe"],
        "positions_px": res["positions_px"],
        "loss": res["loss"],
        "process_s": process_s,
        "result_path": str(out),
        "options": json.loads(str(res["options_json"])),
    }
    for k in ("setup_s", "reconstruction_s", "reconstruction_cpu_s", "import_s"):
        result[k] = float(res[k])
    result["warmup_s"] = float(res["warmup_s"]) if "warmup_s" in res else 0.0
    for k in ("epochs", "batch_size", "threads"):
        result[k] = int(res[k])
    result["epochs_requested"] = int(res.get("epochs_requested", res["epochs"]))
    result["algorithm"] = str(res["algorithm"])
    return result


def scan_fingerprint(scan) -> str:
    """The first 12 hex digits of the SHA-256 of a scan's diffraction, positions, probe and
    true object (when it has one), each as little-endian float32 / complex64 in C order: two
    runs that print the same fingerprint measured the same scan (a scan simulated again
    with the same seed on another machine, or with other numpy / scipy / scikit-image
    versions, is checked so)."""
    h = hashlib.sha256()
    for arr, dtype in ((scan.diffraction, "<f4"), (scan.positions_px, "<f4"),
                       (scan.probe, "<c8"), (scan.object, "<c8")):
        if arr is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(np.asarray(arr).astype(dtype, copy=False))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def score(obj: np.ndarray, scan) -> dict:
    """`ptychopinn.metrics.evaluate` of ``obj`` against ``scan.object`` inside the
    illuminated region; adds ``frc_half_bit`` at the top level."""
    from ptychopinn.metrics import evaluate

    if scan.object is None:
        raise ValueError(f"{scan.source}: the scan has no true object to score against.")
    m = evaluate(obj, scan.object, positions_px=scan.positions_px,
                 patch_size=int(scan.diffraction.shape[-1]))
    m["frc_half_bit"] = m["frc"]["frc_half_bit"]
    return m


def _fmt_frc(v: float | None) -> str:
    return "≥ 0.5 (Nyquist)" if v is None else f"{v:.3f}"


def table_row(engine: str, object_name: str, photons: float | None, epochs: int | str,
              compute_s: float, cpu_s: float | None, metrics: dict,
              load_1m: float | None = None) -> list[str]:
    """One row of `TABLE_HEADERS` (shared with the benchmarks of our own methods)."""
    return [
        engine, object_name, "-" if photons is None else f"{photons:.0e}", str(epochs),
        f"{compute_s:.2f}" if compute_s < 1 else f"{compute_s:.1f}",
        "-" if cpu_s is None else f"{cpu_s:.1f}",
        f"{metrics['amp_ssim']:.3f}", f"{metrics['phase_ssim']:.3f}",
        _fmt_frc(metrics.get("frc_half_bit", metrics.get("frc", {}).get("frc_half_bit"))),
        "-" if load_1m is None else f"{load_1m:.1f}",
    ]


def _load_1m() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except OSError:  # pragma: no cover - not POSIX
        return None


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    p.add_argument("--algorithms", nargs="+", choices=["lsqml", "epie"],
                   default=["lsqml", "epie"])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None,
                   help="pty-chi batch size (default: the runner's, lsqml 100, epie 25)")
    p.add_argument("--image", default=None,
                   help="held-out picture of the 'image' case (default HELD_OUT_IMAGES[0])")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ptychi-python", default=None,
                   help=f"pty-chi interpreter (default $PTYCHI_PYTHON or {DEFAULT_PTYCHI_PYTHON})")
    p.add_argument("--workdir", default=None,
                   help="keep scans and results here (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="also print one JSON line per run")
    p.add_argument("--record", action="store_true", help="append the table to docs/benchmarks.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    exe = find_ptychi_python(args.ptychi_python)
    if exe is None:
        print("bench_ptychi: SKIPPED: no pty-chi interpreter found (pass --ptychi-python, set "
              f"PTYCHI_PYTHON, or create {DEFAULT_PTYCHI_PYTHON}: python3 -m venv, then "
              "pip install torch torchvision ptychi).", file=sys.stderr)
        return []

    tmp = None
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_ptychi_")
        workdir = Path(tmp.name)
    results: list[dict] = []
    rows: list[list[str]] = []
    try:
        for case in args.cases:
            scan, path = simulate_case(case, workdir, image=args.image, seed=args.seed)
            sim = scan.metadata.get("simulation", {})
            photons = sim.get("photons_per_pattern") if isinstance(sim, dict) else None
            obj_name = f"image:{sim.get('object_image')}" if case == "image" else case
            for alg in args.algorithms:
                load = _load_1m()
                r = run_ptychi(path, alg, args.epochs, args.threads, batch_size=args.batch_size,
                               python=exe)
                m = score(r["object"], scan)
                row = table_row(f"pty-chi {alg.upper()} (bs {r['batch_size']})", obj_name,
                                photons, r["epochs"], r["reconstruction_s"],
                                r["reconstruction_cpu_s"], m, load)
                rows.append(row)
                rec = {"engine": f"ptychi_{alg}", "case": case, "photons": photons,
                       "epochs": r["epochs"], "batch_size": r["batch_size"],
                       "threads": r["threads"],
                       "ptychi_version": r["options"].get("ptychi_version"),
                       "ptychi_torch": r["options"].get("torch_version"),
                       "reconstruction_s": r["reconstruction_s"],
                       "reconstruction_cpu_s": r["reconstruction_cpu_s"],
                       "setup_s": r["setup_s"], "import_s": r["import_s"],
                       "final_loss": float(r["loss"][-1]) if r["loss"].size else None,
                       "amp_ssim": m["amp_ssim"], "phase_ssim": m["phase_ssim"],
                       "frc_half_bit": m["frc_half_bit"], "load_1m_before": load,
                       "load_1m_after": _load_1m()}
                results.append(rec)
                if args.json:
                    print(json.dumps(rec), flush=True)
                print(" | ".join(row), flush=True)
    finally:
        if tmp is not None:
            tmp.cleanup()

    sys.path.insert(0, str(HERE))
    from _record import append_section, markdown_table

    table = markdown_table(TABLE_HEADERS, rows)
    print()
    print(table)
    notes = (
        f"pty-chi {results[0]['ptychi_version']} (its own venv, torch "
        f"{results[0]['ptychi_torch']}) on CPU, {args.threads} torch threads, "
        "known probe (not refined), uniform initial object, positions not refined. "
        "'compute s' is the wall time of the epochs only (no import, no setup), 'cpu s' the "
        "process CPU time of the same span; 'load 1m' is the 1-minute load average when the "
        "run started. FRC half-bit: first crossing in cycles/pixel (higher is better)."
    ) if results else ""
    if args.record and rows:
        out = append_section("pty-chi iterative engines on simulated scans", table, notes)
        print(f"recorded in {out}")
    return results


if __name__ == "__main__":
    main()
