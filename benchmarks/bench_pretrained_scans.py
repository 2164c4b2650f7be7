"""A model pretrained for a real probe, on new scans of unseen objects, against pty-chi.

The issue-5 scenario on hidden-like scans: pretrain once for the real
X-ray-laser probe of ``../shared/data/run1084`` and its Fermat geometry, e.g.::

    ptychopinn simulate rp.npz --probe file --probe-file ../shared/data/run1084/run1084_recon.npz \\
        --pattern fermat --n-positions 600 --photons 1e5 --seed 21
    ptychopinn pretrain --scan rp.npz --output-dir pre_rp --max-minutes 10

then reconstruct scans the model never saw (other seeds, hence other objects;
one a held-out picture on a raster scan, one a random scan pattern; doses 1e5,
1e4, 3e3 and 1e3 photons per pattern) with that model:

* pty-chi LSQML, 100 epochs (own virtual environment, see `bench_ptychi`);
* inference + stitching with the model's prior passes and with ``--prior-iterations``;
* inference + refinement with the options of ``ptychopinn infer --refine-epochs``
  (every epoch scored; the first epoch at which both SSIMs reach LSQML's).

Usage::

    python benchmarks/bench_pretrained_scans.py --model pre_rp [--case-set main|more|all] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_hard_scans import REAL_PROBE  # noqa: E402
from bench_ptychi import find_ptychi_python, run_ptychi, score  # noqa: E402
from bench_side_by_side import (  # noqa: E402
    INFERENCE_REPEATS,
    add_subpixel_args,
    pinn_inference,
    prior_note,
    refine_budget,
    refine_curve,
    refine_overrides,
    refine_target,
)


def real_probe_sim() -> dict:
    """`SimulationConfig` fields of the real X-ray-laser probe at 1e5 photons."""
    return {"probe_kind": "file", "probe_file": str(REAL_PROBE), "photons_per_pattern": 1e5}


def more_cases() -> dict[str, dict]:
    """Three further hidden-like scans (``--case-set more``): another raster dose, a
    random pattern over a held-out picture, and a dose between 1e3 and 3e3."""
    from ptychopinn.simulation import HELD_OUT_IMAGES

    probe = real_probe_sim()
    return {
        "raster, textured, seed 31, 3e4 photons": dict(
            probe, pattern="raster", n_positions=625, seed=31, photons_per_pattern=3e4),
        f"random, '{HELD_OUT_IMAGES[-1]}', seed 32, 1e4 photons": dict(
            probe, pattern="random", n_positions=600, seed=32, object_kind="image",
            object_image=HELD_OUT_IMAGES[-1], photons_per_pattern=1e4),
        "fermat, textured, seed 33, 2e3 photons": dict(
            probe, pattern="fermat", n_positions=600, seed=33, photons_per_pattern=2e3),
    }


def cases() -> dict[str, dict]:
    from ptychopinn.simulation import HELD_OUT_IMAGES

    probe = real_probe_sim()
    return {
        "fermat, textured, seed 22": dict(probe, pattern="fermat", n_positions=600, seed=22),
        "fermat, textured, seed 24, 1e4 photons": dict(
            probe, pattern="fermat", n_positions=600, seed=24, photons_per_pattern=1e4),
        f"raster, '{HELD_OUT_IMAGES[0]}', seed 23": dict(
            probe, pattern="raster", n_positions=625, seed=23, object_kind="image",
            object_image=HELD_OUT_IMAGES[0]),
        "fermat, textured, seed 27, 3e3 photons": dict(
            probe, pattern="fermat", n_positions=600, seed=27, photons_per_pattern=3e3),
        "fermat, textured, seed 25, 1e3 photons": dict(
            probe, pattern="fermat", n_positions=600, seed=25, photons_per_pattern=1e3),
        "random, textured, seed 26": dict(probe, pattern="random", n_positions=600, seed=26),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="pretrained run or bundle (see above)")
    p.add_argument("--prior-iterations", type=int, default=16,
                   help="the second inference row's prior passes")
    p.add_argument("--refine-epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    add_subpixel_args(p)
    p.add_argument("--case-set", choices=("main", "more", "all"), default="main",
                   help="main: the six scans of the docs' tables; more: three further ones")
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)
    overrides = refine_overrides(args)
    if not REAL_PROBE.exists():
        print(f"bench_pretrained_scans: SKIPPED: {REAL_PROBE} not found.")
        return
    if find_ptychi_python() is None:
        print("bench_pretrained_scans: SKIPPED: no pty-chi interpreter (see bench_ptychi.py)")
        return
    torch.set_num_threads(args.threads)
    from ptychopinn.api import load_bundle
    from ptychopinn.data import save_npz
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    model = load_bundle(args.model)
    rows, targets, prior_notes = [], [], []

    def add(case, what, secs, m, ratio=None):
        rows.append([case, what, f"{secs:.2f}" if secs < 1 else f"{secs:.1f}",
                     "-" if ratio is None else f"{ratio:.0f}x",
                     f"{m['amp_ssim']:.3f}", f"{m['phase_ssim']:.3f}"])
        print(" | ".join(rows[-1]), flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        chosen = {"main": cases, "more": more_cases,
                  "all": lambda: cases() | more_cases()}[args.case_set]()
        for name, kw in chosen.items():
            extra = {} if args.sim_subpixel is None else {"subpixel": args.sim_subpixel}
            scan = simulate_scan(SimulationConfig(**kw, **extra))
            path = save_npz(scan, Path(tmp) / "scan.npz")
            lsq = run_ptychi(path, "lsqml", 100, args.threads)
            lsq_m, lsq_s = score(lsq["object"], scan), lsq["reconstruction_s"]
            add(name, "pty-chi LSQML, 100 epochs", lsq_s, lsq_m)
            rec0 = infer_s0 = None
            for iters in (None, args.prior_iterations):
                rec, secs = pinn_inference(model, scan, "cpu", iters)
                m = score(rec.object, scan)
                label = "model's" if iters is None else str(iters)
                add(name, f"pretrained: inference + stitch ({label} prior passes)", secs, m,
                    lsq_s / secs)
                ok = m["amp_ssim"] >= lsq_m["amp_ssim"] - 0.1 and secs * 20 <= lsq_s
                targets.append(
                    f"{name}, {label} passes: inference alone within 0.1 amp SSIM of LSQML-100 "
                    f"and >= 20x faster: {'MET' if ok else 'NOT MET'} ({m['amp_ssim']:.3f} vs "
                    f"{lsq_m['amp_ssim']:.3f}, {lsq_s / secs:.0f}x)")
                if note := prior_note(f"{name}, {label}", rec):
                    prior_notes.append(note)
                if iters is None:
                    rec0, infer_s0 = rec, secs
            pr = refine_curve(scan, rec0.object, rec0.positions_px, args.refine_epochs, lsq_m,
                              overrides=overrides, budget_s=refine_budget(infer_s0, lsq_s))
            ep, t, m = pr["rows"][min(args.refine_epochs, len(pr["rows"])) - 1]
            add(name, f"pretrained + refine (infer defaults), {ep} ep", infer_s0 + t, m)
            hit = pr["hit"]
            if hit:
                add(name, f"pretrained + refine: first epoch >= LSQML ({hit[0]})",
                    infer_s0 + hit[1], hit[2])
            targets.append(f"{name}: "
                           + refine_target(hit, infer_s0, lsq_s, pr))
    headers = ["scan (real probe, 1e5 photons unless said)", "engine", "compute s", "vs LSQML",
               "amp SSIM", "phase SSIM"]
    table = "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    notes = (f"model: {args.model} (pretrained for the run1084 probe and Fermat geometry; "
             "these objects and scans unseen); simulated with subpixel="
             f"{args.sim_subpixel or 'the default (probe_shift)'}; refine_subpixel="
             f"{args.refine_subpixel or 'infer default'}; inference time: median of "
             f"{INFERENCE_REPEATS} runs after a warm-up."
             + "".join(f" {n}." for n in prior_notes))
    print(table)
    print("\n".join(targets))
    if args.record:
        from _record import append_section

        title = "Pretrained for a real probe, new scans (bench_pretrained_scans.py)"
        if args.case_set != "main":
            title += f" --case-set {args.case_set}"
        append_section(title,
                       table + "\n\n" + "\n".join(f"- {t}" for t in targets), notes=notes)


if __name__ == "__main__":
    main()
