"""The scan prior's decisions, scan by scan: what its halves read and what it then ran.

The FRC-filtered scan prior (`physics.prior_frc.frc_filtered_estimate`) decides on every
scan from the agreement of two half-scan estimates: extra passes and the phase momentum
where the halves agree, plain converge blocks (4 passes at a time, kept while each raises
the agreement or lowers the halves' held-out misfit enough, continued with the phase
momentum) where they disagree or agree only marginally, else the plain passes alone. This script runs the priors the network gets, as ``ptychopinn train`` and
``ptychopinn infer`` build them for the scan (train's default configuration with
``model.N`` the scan's, the model's normalised probe and initial amplitude scale,
`ScanPrior.for_config`; the true probe, no network), and prints for each:

- the scan's coverage, the passes run (those asked for + those added: 2 extra passes where
  the halves agreed, converge blocks otherwise), the halves' agreement (after the last
  kept block) against the one needed, and the phase momentum the passes ran with;
- the converge blocks it tried: each one's rise in the halves' agreement and, where that
  was too little to keep it, the change of their held-out amplitude misfit (each half's
  estimate against the other half's patterns: kept where it fell by more than
  `physics.prior_frc.PLAIN_CONVERGE_MISFIT_FALL`);
- the prior's amplitude and phase SSIM against the true object (scanned region, after
  registration; ``-`` on the measured Siemens star, whose object is unknown) and its
  compute seconds (one run each, after a warm-up).

Priors: ``inference`` (infer's defaults), ``inference, no blocks``
(``--prior-converge-passes 0``: the inference prior before the thirty-eighth session's
plain blocks), ``training`` (train's defaults: ``model.prior_train_converge``) and
``training, no blocks`` (``model.prior_train_converge=false``, bundles before the fortieth
session); ``--converge-passes K`` adds inference priors with at most K converge passes
(infer's ``--prior-converge-passes``). Where the halves agree, each pair is the same estimate; where they disagree the
blocks either were kept (more passes, momentum 0.7) or were all dropped.

Scans: simulated textured, low-dose, grf + zone plate and real-probe kinds (where blocks
must not run: their halves disagree for noise), the hidden strong-phase scans of
docs/benchmarks.md re-simulated from their seeds (where blocks should run), the measured
Siemens star when ``../shared/data/siemens_star`` exists, and any ``--scan`` NPZ files.

Usage::

    python benchmarks/bench_prior_converge.py [--only NAME ...] [--scan X.npz ...]
        [--priors inference training] [--converge-passes 16 20] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _record import markdown_table, print_and_record  # noqa: E402

from ptychopinn.models.scan_prior import INFERENCE_PLAIN_CONVERGE_PASSES  # noqa: E402

REAL_PROBE = ROOT.parent / "shared" / "data" / "run1084" / "run1084_recon.npz"
SIEMENS = ROOT.parent / "shared" / "data" / "siemens_star" / "siemens-star-small.npz.bz2"

SIMULATED = {
    # kinds whose halves disagree for noise or detail: the blocks must not change them
    "textured, seed 0": {"seed": 0},
    "textured, seed 5": {"seed": 5},
    "textured, 3e4 photons, seed 83": {"photons_per_pattern": 3e4, "seed": 83},
    "textured, 1e4 photons, seed 11": {"photons_per_pattern": 1e4, "seed": 11},
    "textured, 1e4 photons, seed 73": {"photons_per_pattern": 1e4, "seed": 73},
    "grf, zone plate, seed 17": {"object_kind": "grf", "probe_kind": "zoneplate", "seed": 17},
    "real probe, Fermat, 1e4 photons": {
        "probe_kind": "file", "probe_file": str(REAL_PROBE), "pattern": "fermat",
        "n_positions": 600, "photons_per_pattern": 1e4, "seed": 21},
    "real probe, Fermat, 1e5 photons": {
        "probe_kind": "file", "probe_file": str(REAL_PROBE), "pattern": "fermat",
        "n_positions": 600, "photons_per_pattern": 1e5, "seed": 21},
    # the hidden strong-phase scans (docs/benchmarks.md, thirty-eighth to fortieth sessions)
    "phase -1.5..1.5, seed 403": {"phase_range_rad": (-1.5, 1.5), "seed": 403},
    "phase -2..2, seed 405": {"phase_range_rad": (-2.0, 2.0), "seed": 405},
    "phase -2.5..2.5, seed 401": {"phase_range_rad": (-2.5, 2.5), "seed": 401},
    "phase -2.5..2.5, seed 427": {"phase_range_rad": (-2.5, 2.5), "seed": 427},
    "phase -2.5..2.5, seed 433": {"phase_range_rad": (-2.5, 2.5), "seed": 433},
    "phase -3..3, seed 413": {"phase_range_rad": (-3.0, 3.0), "seed": 413},
    "phase -3..3, seed 421": {"phase_range_rad": (-3.0, 3.0), "seed": 421},
    "lines, phase -3..3, seed 423": {"object_kind": "lines", "phase_range_rad": (-3.0, 3.0),
                                     "seed": 423},
}
SIEMENS_NAME = "measured Siemens star"
PRIORS = {
    "inference": (False, {}),
    "inference, no blocks": (False, {"converge_passes": 0}),
    "training": (True, {}),
    "training, no blocks": (True, {"prior_train_converge": False}),
}
"""name -> (training prior?, options: `ScanPrior.for_config` keywords, or the model's
``prior_train_converge``)."""


def load(name: str):
    """The scan ``name`` (a key of `SIMULATED`, `SIEMENS_NAME` or an NPZ path) and whether
    its object is the truth."""
    if name in SIMULATED:
        from ptychopinn.simulation import SimulationConfig, simulate_scan

        return simulate_scan(SimulationConfig(**SIMULATED[name])), True
    if name == SIEMENS_NAME:
        from bench_siemens import contract_scan

        return contract_scan(SIEMENS), False
    from ptychopinn.data.readers import load_scan

    scan = load_scan(name)
    if scan.object is None:
        raise SystemExit(f"--scan {name}: the scan has no 'objectGuess' (the truth to score)")
    return scan, True


def prior(scan, training: bool, options: dict):
    """The scan prior ``ptychopinn train`` (``training``) or ``ptychopinn infer`` builds
    for ``scan`` with train's default configuration, and its compute seconds."""
    from ptychopinn.config import TrainingConfig
    from ptychopinn.models.scan_prior import ScanPrior
    from ptychopinn.training.data import prepare
    from ptychopinn.training.runner import initial_physics, settle_prior_recipe

    # infer passes its pass options as None (`inference_pass_options`' defaults); train none
    options = ({} if training else dict.fromkeys(
        ("extra_iterations", "phase_momentum", "converge_passes"))) | options
    model = {"N": int(scan.patch_size)}
    if "prior_train_converge" in options:
        model["prior_train_converge"] = options.pop("prior_train_converge")
    cfg = TrainingConfig.model_validate({"model": model})
    data = prepare(scan, cfg)
    probe, units, log_s = initial_physics(cfg, scan, data)
    cfg = settle_prior_recipe(cfg, scan, probe, data, float(np.exp(log_s)))
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = ScanPrior.for_config(
            cfg.model, data.amplitudes, data.positions_px, probe,
            prior_amplitude_scale=float(np.exp(log_s)), train_input_scale=data.input_scale,
            valid=data.valid, amplitude_units=units, training=training,
            **options)
    return out, time.perf_counter() - t0


def blocks_read(blocks) -> str:
    """The converge blocks a prior tried (`ScanPrior.converge_blocks`): each one's passes,
    agreement rise, held-out misfit change where read, kept or dropped."""
    if not blocks:
        return "-"
    return "; ".join(
        f"{b.passes}: {b.rise:+.3f}"
        + ("" if b.misfit_fall is None else f", misfit {-100 * b.misfit_fall:+.1f} %")
        + (" kept" if b.kept else " dropped") for b in blocks)


def scores(est, scan) -> tuple[float, float]:
    from bench_prior_start import estimate_scores

    m = estimate_scores(est, scan)
    return m["amp_ssim"], m["phase_ssim"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only the built-in scans whose names contain one of these")
    p.add_argument("--scan", nargs="+", default=[], metavar="NPZ",
                   help="also these scans (NPZ contract, with the true object)")
    p.add_argument("--priors", nargs="+", default=list(PRIORS), choices=list(PRIORS),
                   metavar="PRIOR", help=f"the priors to run (default: all of {list(PRIORS)})")
    p.add_argument("--converge-passes", type=int, nargs="+", default=[], metavar="K",
                   help="also inference priors with at most K converge passes (infer's "
                        "--prior-converge-passes; its default for plain passes: "
                        f"{INFERENCE_PLAIN_CONVERGE_PASSES})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    if any(k < 0 for k in args.converge_passes):
        p.error(f"--converge-passes must be >= 0; found {args.converge_passes}")
    for path in args.scan:
        if not Path(path).is_file():
            p.error(f"--scan {path}: no such file")
    torch.set_num_threads(args.threads)

    names = list(SIMULATED) + [SIEMENS_NAME]
    if args.only:
        names = [n for n in names if any(o.lower() in n.lower() for o in args.only)]
        if not names and not args.scan:
            p.error(f"--only {args.only} matches none of {list(SIMULATED) + [SIEMENS_NAME]}")
    skipped = []
    if not REAL_PROBE.exists():
        skipped += [n for n in names if "real probe" in n]
    if not SIEMENS.exists():
        skipped += [n for n in names if n == SIEMENS_NAME]
    for n in skipped:
        print(f"skipping {n!r}: {REAL_PROBE if 'real' in n else SIEMENS} not found",
              file=sys.stderr)
    names = [n for n in names if n not in skipped] + list(args.scan)

    from ptychopinn.physics.coverage import scan_coverage

    headers = ["scan", "prior", "coverage", "passes", "halves' agreement (needed)",
               "momentum", "blocks tried", "amp / phase SSIM", "s"]
    rows = []
    warmed = False
    for name in names:
        scan, truth = load(name)
        if not warmed:  # the first prior pays for imports and thread start-up
            prior(scan, False, {"converge_passes": 0})
            warmed = True
        coverage = scan_coverage(scan.positions_px, torch.from_numpy(scan.probe))
        variants = [(w, *PRIORS[w]) for w in args.priors] + [
            (f"inference, {k} converge passes", False, {"converge_passes": k})
            for k in args.converge_passes]
        for which, training, options in variants:
            est, dt = prior(scan, training, options)
            added = est.passes - est.iterations
            agree = "-" if est.agreement is None else f"{est.agreement:.3f}"
            ssim = "- / -"
            if truth:
                a, ph = scores(est.estimate, scan)
                ssim = f"{a:.3f} / {ph:.3f}"
            rows.append([Path(name).name if name.endswith(".npz") else name, which,
                         f"{coverage:.2f}", f"{est.iterations} + {added}",
                         f"{agree} ({est.agreement_threshold:.3f})",
                         f"{est.phase_momentum:g}", blocks_read(est.converge_blocks), ssim,
                         f"{dt:.2f}"])
            print(" | ".join(rows[-1]), flush=True)
    notes = (
        "The priors `ptychopinn train` and `ptychopinn infer` build for each scan (train's "
        "default configuration, the true probe normalised as the model's, no network; "
        "`benchmarks/bench_prior_converge.py`). passes: asked for + added (2 extra passes "
        "where the halves agreed, else the converge blocks kept); agreement: the halves' FRC "
        "agreement after the last kept block, against the one the extra passes and momentum "
        "need; blocks tried: each converge block's passes after it, the halves' agreement's "
        "rise over it and, where that was too little to keep it, the change of their held-out "
        "amplitude misfit (each half against the other half's patterns), then kept or "
        "dropped; SSIM: the prior alone against the true object (scanned region, registered; "
        "'-' where the object is unknown); s: the prior's compute seconds, one run each.")
    print_and_record("Scan prior decisions (bench_prior_converge)",
                     markdown_table(headers, rows), notes, args.record)


if __name__ == "__main__":
    main()
