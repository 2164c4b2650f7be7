"""Benchmark: how many phase-only epochs the refinement of a network's object should start
with (`InferenceConfig.refine_phase_first`), judged by issue 5's target.

For each ``--case LABEL MODEL SCAN`` the model reconstructs the scan (inference +
stitching, infer's defaults), then the object is refined with the options of ``ptychopinn
infer --refine-epochs 40`` (`bench_side_by_side.refine_curve`) once per ``--firsts``
value of ``refine_phase_first``, ``--floor-afters`` value of ``refine_floor_after``
(the epochs the amplitude is refined before the noise floor may hold it; default 0,
infer's), ``--preconditioners`` value of ``refine_preconditioner`` (default infer's) and
``--release-restarts`` value of ``refine_release_restart`` (default infer's),
every epoch scored against the scan's true object. Each
run goes on past 40 epochs while it has not reached pty-chi LSQML-100's amplitude and
phase SSIM and is within half of LSQML-100's time less the inference's (issue 5's target:
network + refinement at LSQML-100's SSIMs in at most half its time). LSQML-100 runs in the
same process run (`bench_ptychi.run_ptychi`, which leaves ``<stem>_ptychi_lsqml_100.npz``
beside the scan); with ``--reuse-lsqml`` that file is read instead when it is newer than
the scan (what ``bench_side_by_side.py --scan`` left: its time then comes from that run,
and the notes say so).

Each cell gives the verdict, the first epoch at LSQML's SSIMs and its time (inference
included), the amplitude / phase SSIM after 40 epochs, and the object step of the first
epoch that refines the amplitude as a fraction of the full step (the plateau schedule
halves it while the loss stalls, also in the phase-only epochs).

Usage::

    python benchmarks/bench_refine_phase_first.py \\
        --case "grf, disk" models/hidden/grf_disk_s32 models/hidden/grf_disk.npz \\
        [--case ...] [--firsts 20 10 0] [--floor-afters 0 10] [--preconditioners batch scan]
        [--release-restarts on off] [--reuse-lsqml] [--record]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import markdown_table, print_and_record  # noqa: E402
from bench_ptychi import result_path, run_ptychi, score  # noqa: E402
from bench_side_by_side import (  # noqa: E402
    pinn_inference,
    refine_budget,
    refine_curve,
    refine_met,
)
from train_models import add_case_argument, checked_cases  # noqa: E402

#: The refinement's first epochs that the table reads (``refine_epochs`` of the runs).
EPOCHS = 40


def lsqml_100(scan_path: str, reuse: bool = False) -> tuple[np.ndarray, float, str]:
    """pty-chi LSQML-100's object and compute seconds on ``scan_path``, and where they came
    from: a new run (which leaves its result beside the scan), or with ``reuse`` that result
    from an earlier run where it is newer than the scan (an older one is refused, naming
    both files: the scan was written again since)."""
    cached = result_path(scan_path)
    if reuse and cached.is_file():
        if cached.stat().st_mtime < Path(scan_path).stat().st_mtime:
            raise SystemExit(f"--reuse-lsqml: {cached} is older than {scan_path} (the scan "
                             "was written again since); run without --reuse-lsqml")
        with np.load(cached, allow_pickle=False) as z:
            return z["object"], float(z["reconstruction_s"]), f"reused {cached.name}"
    r = run_ptychi(scan_path)
    return r["object"], float(r["reconstruction_s"]), "run here"


def settings(firsts: list[int], floor_afters: list[int],
             preconditioners: list[str] | None = None,
             restarts: list[bool] | None = None) -> list[dict]:
    """The `InferenceConfig` overrides compared: every ``refine_phase_first`` value with
    every ``refine_floor_after`` value, every ``refine_preconditioner`` and every
    ``refine_release_restart`` (the last two default to infer's only), in that order."""
    from ptychopinn.config import InferenceConfig

    if not preconditioners:
        preconditioners = [InferenceConfig().refine_preconditioner]
    if not restarts:
        restarts = [InferenceConfig().refine_release_restart]
    return [{"refine_phase_first": f, "refine_floor_after": a, "refine_preconditioner": p,
             "refine_release_restart": r}
            for f in firsts for a in floor_afters for p in preconditioners for r in restarts]


def setting_label(setting: dict) -> str:
    """A column heading: ``refine_phase_first F`` and each other option where it is not
    infer's default, marked where the whole setting is infer's default."""
    from ptychopinn.config import InferenceConfig

    default = InferenceConfig()
    text = f"refine_phase_first {setting['refine_phase_first']}"
    for key, value in setting.items():
        if key != "refine_phase_first" and getattr(default, key) != value:
            text += f", {key} {value}"
    if all(getattr(default, k) == v for k, v in setting.items()):
        text += " (infer's default)"
    return text


def phase_first_cells(scan, rec, infer_s: float, lsq: dict, lsq_s: float,
                      compared: list[dict]) -> list[str]:
    """One cell per setting of `settings`: the verdict of issue 5's target, the first
    epoch at LSQML's SSIMs (time with the inference) or how far it ran, and the SSIMs
    after `EPOCHS` epochs."""
    cells = []
    for setting in compared:
        curve = refine_curve(scan, rec.object, rec.positions_px, EPOCHS, lsq,
                             overrides=setting, budget_s=refine_budget(infer_s, lsq_s))
        hit, rows = curve["hit"], curve["rows"]
        at = rows[min(EPOCHS, len(rows)) - 1]
        reach = (f"epoch {hit[0]}, {infer_s + hit[1]:.1f} s" if hit
                 else f"not in {rows[-1][0]} epochs")
        verdict = "MET" if refine_met(hit, infer_s, lsq_s) else "NOT MET"
        cells.append(f"{verdict} ({reach}); {at[0]} ep "
                     f"{at[2]['amp_ssim']:.3f} / {at[2]['phase_ssim']:.3f}; "
                     f"step at release x{release_step(setting, curve['steps']):.3g}")
    return cells


def release_step(setting: dict, steps: list[float]) -> float:
    """The object step of the first epoch that refines the amplitude (after infer's
    phase-only epochs, min(refine_phase_first, `EPOCHS` // 2)), relative to infer's
    learning rate: the plateau schedule's fraction then (NaN if the run ended first)."""
    from ptychopinn.config import InferenceConfig

    first = min(setting["refine_phase_first"], EPOCHS // 2)
    lr = InferenceConfig().refine_learning_rate
    return steps[first] / lr if first < len(steps) else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_case_argument(ap, "a label, a trained run (or bundle) and a scan NPZ with its true "
                          "object")
    ap.add_argument("--firsts", type=int, nargs="+", default=[20, 10, 0],
                    help="refine_phase_first values to compare (default: 20 10 0; 20 is "
                         "infer's default)")
    ap.add_argument("--floor-afters", type=int, nargs="+", default=[0],
                    help="refine_floor_after values, each with every --firsts value "
                         "(default: 0, infer's default: the noise floor may hold the "
                         "amplitude from the first epoch)")
    ap.add_argument("--preconditioners", nargs="+", choices=("batch", "scan"), default=None,
                    help="refine_preconditioner values, each with every other setting "
                         "(default: infer's)")
    ap.add_argument("--release-restarts", nargs="+", choices=("on", "off"), default=None,
                    help="refine_release_restart values (on: the step schedule starts again "
                         "from the full step when the amplitude is released; off: it carries "
                         "on, the behaviour before 2026-12-07), each with every other setting "
                         "(default: infer's)")
    ap.add_argument("--reuse-lsqml", action="store_true",
                    help="read LSQML-100 from the <stem>_ptychi_lsqml_100.npz an earlier run "
                         "left beside each scan (refused where older than the scan) instead "
                         "of running it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args(argv)
    cases = checked_cases(ap, args)
    for name in ("firsts", "floor_afters"):
        if any(v < 0 for v in getattr(args, name)):
            ap.error(f"--{name.replace('_', '-')} must be >= 0; found {getattr(args, name)}")
    restarts = None if args.release_restarts is None else [
        v == "on" for v in args.release_restarts]
    compared = settings(args.firsts, args.floor_afters, args.preconditioners, restarts)
    torch.set_num_threads(args.threads)
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.data.npz import load_npz

    rows, sources = [], []
    for label, model, scan_path in cases:
        scan = load_npz(scan_path)
        if scan.object is None:
            raise SystemExit(f"{scan_path}: no true object (objectGuess) to score against.")
        obj, lsq_s, source = lsqml_100(scan_path, args.reuse_lsqml)
        lsq = score(obj, scan)
        rec, infer_s = pinn_inference(load_pinn(model), scan, "cpu", None, repeats=1)
        net = score(rec.object, scan)
        rows.append([label, f"{lsq['amp_ssim']:.3f} / {lsq['phase_ssim']:.3f} "
                            f"({lsq_s:.1f} s; half {0.5 * lsq_s:.1f} s)",
                     f"{net['amp_ssim']:.3f} / {net['phase_ssim']:.3f} ({infer_s:.1f} s)",
                     *phase_first_cells(scan, rec, infer_s, lsq, lsq_s, compared)])
        sources.append(f"{label}: {model} on {scan_path}, LSQML-100 {source}")
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
    headers = ["scan", "LSQML-100 amp / phase SSIM (s)", "network amp / phase SSIM (s)",
               *(setting_label(c) for c in compared)]
    notes = ("Issue 5's target per refine_phase_first: network + refinement (infer's "
             "options, the noise floor on) at LSQML-100's amplitude and phase SSIM within "
             "half of LSQML-100's time (inference included); each run goes on past "
             f"{EPOCHS} epochs while it has not reached them and the time lasts; "
             f"'{EPOCHS} ep': the SSIMs after {EPOCHS} epochs; 'step at release': the "
             "object step of the first epoch that refines the amplitude, as a fraction of "
             "the full step. " + "; ".join(sources))
    print_and_record("Refinement: phase-only epochs first (bench_refine_phase_first.py)",
                     markdown_table(headers, rows), notes, args.record)


if __name__ == "__main__":
    main()
