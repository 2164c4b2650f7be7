"""Position correction: does it keep the grid's scale, and how accurate is it?

Two parts, each refining probe and positions jointly from a flat object
(`ptychopinn.refinement.refine` with ``refine_probe`` and ``refine_positions``,
as `retrieve_probe` / `correct_positions` do), once removing the global linear
part of the corrections after every epoch (the default) and once keeping it
(``position_keep_linear=True``):

* **the measured Siemens star** (`bench_siemens.contract_scan`; skipped when the
  data are absent): the affine fit of the corrections to the given positions
  (its diagonal: the grid's scale), the rms of what the fit leaves (the local
  corrections), how those correlate with pty-chi's (``bench_siemens.py
  --refine-probe --refine-positions --name siemens_ptychi_pos``, when present)
  and the final loss;
* **a simulated scan with known errors** (``ptychopinn simulate --seed 11``,
  positions perturbed by N(0, 1 px) per axis, seed 1): the rms position error
  after correction (common shift removed), with the true probe and with a rough
  guess (the true amplitude blurred by 1 px, no phase).

Usage::

    python benchmarks/bench_positions.py [--epochs 20] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_siemens import DEFAULT_DATA, WORK, contract_scan  # noqa: E402


def affine_fit(base: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(A, residual)``: the 2 x 2 map ``I + B`` with ``d ~ (base - mean) B + t``, and
    what the fit leaves of ``d``."""
    x = np.c_[base - base.mean(0), np.ones(len(base))]
    coef, *_ = np.linalg.lstsq(x, d, rcond=None)
    return np.eye(2) + coef[:2].T, d - x @ coef


def _rms(e: np.ndarray) -> float:
    e = e - e.mean(0)
    return float(np.sqrt((e ** 2).sum(1).mean()))


def _corrected(scan, epochs: int, keep: bool, **kw):
    from ptychopinn.refinement import refine

    t = time.perf_counter()
    res = refine(scan, None, epochs=epochs, refine_probe=True, refine_positions=True,
                 progress=False, position_keep_linear=keep, **kw)
    return res.positions_px + res.frame_offset_px, res, time.perf_counter() - t


def star_rows(epochs: int) -> list[list[object]]:
    if not DEFAULT_DATA.exists():
        print(f"bench_positions: the star skipped ({DEFAULT_DATA} not found)")
        return []
    star = contract_scan(DEFAULT_DATA)
    ref_res = None
    ref_file = WORK / "siemens_ptychi_pos.npz"
    rows = []
    if ref_file.exists():
        with np.load(ref_file, allow_pickle=False) as z:
            a, ref_res = affine_fit(z["positions_in_px"], z["positions_px"] - z["positions_in_px"])
        rows.append(["star: pty-chi LSQML-100 (probe, positions)", f"{a[0, 0]:.4f} / {a[1, 1]:.4f}",
                     f"{_rms(ref_res):.2f}", "1", "-", "-"])
    for keep in (True, False):
        pos, res, secs = _corrected(star, epochs, keep)
        a, local = affine_fit(star.positions_px, pos - star.positions_px)
        corr = "-" if ref_res is None else f"{np.corrcoef(local.ravel(), ref_res.ravel())[0, 1]:.2f}"
        rows.append([f"star: ours, {epochs} epochs, linear part {'kept' if keep else 'removed'}",
                     f"{a[0, 0]:.4f} / {a[1, 1]:.4f}", f"{_rms(local):.2f}", corr,
                     f"{res.history[-1]['loss']:.5g}", f"{secs:.1f}"])
    return rows


def simulated_rows(epochs: int) -> list[list[object]]:
    from scipy.ndimage import gaussian_filter

    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(seed=11))
    truth = scan.positions_px
    bad = scan.replace(positions_px=truth + np.random.default_rng(1).normal(0, 1.0, truth.shape))
    rough = (gaussian_filter(np.abs(scan.probe[0]), 1.0) * np.exp(0j)).astype(np.complex64)[None]
    rows = []
    for label, probe in (("true probe", scan.probe), ("rough probe", rough)):
        for keep in (True, False):
            pos, res, secs = _corrected(bad.replace(probe=probe), epochs, keep)
            rows.append([f"simulated seed 11, {label}, linear part "
                         f"{'kept' if keep else 'removed'}", "-",
                         f"{_rms(pos - truth):.3f} (from {_rms(bad.positions_px - truth):.3f})",
                         "-", f"{res.history[-1]['loss']:.5g}", f"{secs:.1f}"])
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    import torch
    from _record import append_section, markdown_table

    torch.set_num_threads(args.threads)
    rows = star_rows(args.epochs) + simulated_rows(args.epochs)
    table = markdown_table(["case", "affine scale (y / x)", "local rms, or error (px)",
                            "local vs pty-chi (corr.)", "final loss", "s"], rows)
    notes = ("Probe and positions refined jointly from a flat object (Adam, 0.3 px per epoch); "
             "star: affine fit of the corrections to the given positions, its diagonal (the "
             "grid's scale) and the rms of what it leaves, correlated with pty-chi's; simulated: "
             "rms error against the true positions after N(0, 1 px) errors, common shift removed.")
    print(table)
    print(notes)
    if args.record:
        append_section("Position correction: the grid's scale and the accuracy "
                       "(bench_positions.py)", table, notes=notes)


if __name__ == "__main__":
    main()
