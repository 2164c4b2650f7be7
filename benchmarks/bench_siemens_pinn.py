"""Benchmark: our PINN (+ refinement) on the measured Siemens star, beside pty-chi.

Run ``bench_siemens.py --refine-probe`` first: it leaves pty-chi's
reconstruction in ``benchmarks/_work/siemens_ptychi.npz``. This script then, on
the same data (`bench_siemens.contract_scan`):

1. refines the measured probe guess (``--probe-refine-epochs``, as
   ``ptychopinn train --probe-refine-epochs K`` does), then trains our
   self-supervised PINN with the defaults of ``ptychopinn train`` (only
   ``model.N=128`` for the 128 x 128 patterns, and the time budget);
2. reconstructs the scan by inference + stitching with the saved bundle;
3. refines that object, the probe and the positions against the counts;
4. compares raw and refined objects with pty-chi's (registration, global phase,
   SSIM, and the Fourier ring correlation between the two reconstructions),
   scores all three against the measured counts (no truth needed:
   `ptychopinn.metrics.data_consistency`, the Poisson deviance over its
   photon-noise floor, each object with its own probe and positions) and
   saves a side-by-side figure ``siemens_side_by_side.png`` (full field and the
   star's centre, where the spokes are finest).

Usage::

    python benchmarks/bench_siemens_pinn.py [--minutes 8] [--refine-epochs 30]
        [--probe-refine-epochs 20] [--correct-positions] [--subpixel probe_shift]
        [--prior-iterations K] [--phase-sync global|waves]
        [--model RUN] [--record]

``--correct-positions`` corrects the measured positions in that probe retrieval
(``ptychopinn train --probe-refine-positions``) and trains, infers and refines
at them; compare it with pty-chi run with ``bench_siemens.py --refine-probe
--refine-positions --name siemens_ptychi_pos`` (``--ptychi-result
benchmarks/_work/siemens_ptychi_pos.npz``).

``--subpixel probe_shift|bilinear`` trains the model with that ``model.subpixel``
(run directory and figures suffixed ``_ps`` / ``_bl``; default: train's, which is
'probe_shift' with the scan prior since 2026-12-02); ``--prior-iterations K`` trains
it with ``model.prior_iterations=K`` (and infers with the model's K passes; suffix
``_pK``); ``--prior-batch-size B`` with ``model.prior_batch_size=B`` (suffix
``_bB``). The 16-pass recipe of docs/benchmarks.md is ``--subpixel probe_shift
--prior-iterations 16`` (recorded before the FRC filter became a default).

``--phase-sync global|waves`` reconstructs with that
``InferenceConfig.phase_sync_method`` (default: infer's, 'global'); with ``--model`` it
compares the two on one trained model (figures suffixed ``_global`` / ``_waves``).

``--model RUN`` reuses a model trained earlier on this scan (e.g. this script's
``benchmarks/_work/siemens_pinn_run``) instead of training one.
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
from bench_siemens_prior import mean_amplitude  # noqa: E402


def _compare(obj: np.ndarray, ref: np.ndarray, scan) -> dict:
    from ptychopinn.metrics import evaluate

    return evaluate(obj, ref, positions_px=scan.positions_px, patch_size=scan.patch_size)


def _figure(panels: list[tuple[str, np.ndarray]], scan, path: Path) -> None:
    from ptychopinn.figures.images import new_figure, phase_display, save_figure, show_image
    from ptychopinn.metrics import illuminated_region

    rows, cols = illuminated_region(panels[0][1].shape, scan.positions_px, scan.patch_size)
    fig = new_figure(5.0 * len(panels), 13.0)
    axes = fig.subplots(3, len(panels))
    for j, (title, obj) in enumerate(panels):
        crop = obj[rows, cols]
        amp = np.abs(crop)
        phase = np.angle(crop * np.exp(-1j * np.angle(np.mean(crop))))
        cmap, lim = phase_display(phase)
        show_image(fig, axes[0, j], amp, title=f"{title}: amplitude", cbar_label="amplitude")
        show_image(fig, axes[1, j], phase, title=f"{title}: phase", cbar_label="rad",
                   cmap=cmap, limits=lim)
        h, w = phase.shape
        c = (slice(h // 2 - h // 6, h // 2 + h // 6), slice(w // 2 - w // 6, w // 2 + w // 6))
        show_image(fig, axes[2, j], phase[c], title=f"{title}: phase, centre", cbar_label="rad",
                   cmap=cmap, limits=lim)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--ptychi-result", default=str(WORK / "siemens_ptychi.npz"))
    p.add_argument("--minutes", type=float, default=8.0, help="training budget")
    p.add_argument("--refine-epochs", type=int, default=30)
    p.add_argument("--probe-refine-epochs", type=int, default=20,
                   help="probe retrieval before training (train --probe-refine-epochs); 0: off")
    p.add_argument("--correct-positions", action="store_true",
                   help="correct the positions in the probe retrieval (train --probe-refine-"
                        "positions) and train and infer at them")
    p.add_argument("--model", default=None,
                   help="reuse this trained run (trained on this scan) instead of training")
    p.add_argument("--subpixel", choices=("bilinear", "probe_shift"), default=None,
                   help="model.subpixel of the trained model (default: ptychopinn train's)")
    p.add_argument("--prior-iterations", type=int, default=None,
                   help="model.prior_iterations of the trained model (default: train's)")
    p.add_argument("--prior-batch-size", type=int, default=None,
                   help="model.prior_batch_size of the trained model (default: train's)")
    p.add_argument("--prior-start", choices=("flat", "com", "auto"), default=None,
                   help="model.prior_start of the trained model (default: train's)")
    p.add_argument("--prior-com-correction", choices=("on", "off"), default=None,
                   help="model.prior_com_correction of the trained model (default: train's)")
    p.add_argument("--phase-sync", choices=("global", "waves"), default=None,
                   help="InferenceConfig.phase_sync_method of the reconstruction (default: "
                        "infer's)")
    p.add_argument("--refine-preconditioner", choices=("batch", "scan"), default="batch",
                   help="the refinement's preconditioner (refine's default, batch, is what the "
                        "recorded tables used; infer's default is scan)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true")
    args = p.parse_args(argv)
    if args.prior_iterations is not None and args.prior_iterations < 1:
        p.error(f"--prior-iterations must be >= 1; found {args.prior_iterations}")
    if args.prior_batch_size is not None and args.prior_batch_size < 1:
        p.error(f"--prior-batch-size must be >= 1; found {args.prior_batch_size}")
    if args.prior_batch_size is not None and args.model:
        p.error("--prior-batch-size sets how a new model is trained; --model reuses one")
    if args.prior_iterations is not None and args.model:
        p.error("--prior-iterations sets how a new model is trained; --model reuses one")
    if args.prior_start is not None and args.model:
        p.error("--prior-start sets how a new model is trained; --model reuses one")
    if args.prior_com_correction is not None and args.model:
        p.error("--prior-com-correction sets how a new model is trained; --model reuses one")
    if not Path(args.data).exists():
        print(f"bench_siemens_pinn: SKIPPED: {args.data} not found.")
        return
    if not Path(args.ptychi_result).exists():
        print(f"bench_siemens_pinn: SKIPPED: {args.ptychi_result} not found; run "
              "bench_siemens.py --refine-probe first.")
        return
    import torch

    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig, TrainingConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import data_consistency
    from ptychopinn.refinement import refine, retrieve_probe
    from ptychopinn.training.runner import train_pytorch

    torch.set_num_threads(args.threads)
    scan = contract_scan(args.data)
    with np.load(args.ptychi_result, allow_pickle=False) as z:
        ref = z["object"]
        ref_probe, ref_pos = z["probe"], z["positions_px"]
        ref_s = float(z["reconstruction_s"])
        ref_label = f"pty-chi {str(z['algorithm']).upper()} {int(z['epochs'])} ep" + (
            " + positions" if "refine_positions" in z.files and bool(z["refine_positions"])
            else "")
    suffix = ("_pos" if args.correct_positions else "") + (
        {"probe_shift": "_ps", "bilinear": "_bl"}.get(args.subpixel, "")) + (
        f"_p{args.prior_iterations}" if args.prior_iterations else "") + (
        f"_b{args.prior_batch_size}" if args.prior_batch_size else "") + (
        f"_{args.prior_start}" if args.prior_start else "") + (
        f"_cc{args.prior_com_correction}" if args.prior_com_correction else "")
    fig_suffix = suffix + (f"_{args.phase_sync}" if args.phase_sync else "")
    model_section = {"N": scan.patch_size}
    if args.subpixel:
        model_section["subpixel"] = args.subpixel
    if args.prior_iterations:
        model_section["prior_iterations"] = args.prior_iterations
    if args.prior_batch_size:
        model_section["prior_batch_size"] = args.prior_batch_size
    if args.prior_start:
        model_section["prior_start"] = args.prior_start
    if args.prior_com_correction:
        model_section["prior_com_correction"] = args.prior_com_correction == "on"
    run = Path(args.model) if args.model else WORK / f"siemens_pinn_run{suffix}"
    cfg = TrainingConfig.model_validate({
        "model": model_section, "output_dir": str(run),
        "max_time_minutes": args.minutes, "save_reconstruction": False,
        "execution": {"accelerator": "cpu", "logger": "none", "progress_bar": False}})
    # the measured positions frame every comparison (crop, registration region), so
    # pty-chi's numbers do not depend on our position correction
    given = scan
    t0 = time.perf_counter()
    if args.probe_refine_epochs:  # what `train --probe-refine-epochs K` does first
        scan = retrieve_probe(scan, args.probe_refine_epochs, positions=args.correct_positions)
    elif args.correct_positions:
        raise SystemExit("bench_siemens_pinn: --correct-positions needs --probe-refine-epochs > 0")
    probe_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args.model:
        trained = f"reused model {run}"
    else:
        res = train_pytorch(cfg, scan, overwrite=True)  # this benchmark's own run folder
        trained = (f"trained {(time.perf_counter() - t0) / 60:.1f} min ({len(res.history)} "
                   "epochs, defaults, N=128)")
    model = load_pinn(run)
    t0 = time.perf_counter()
    infer_cfg = InferenceConfig(**({"phase_sync_method": args.phase_sync}
                                   if args.phase_sync else {}))
    rec = reconstruct_pytorch(model, scan, infer_cfg)
    infer_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_res = refine(scan, rec.object, positions_px=rec.positions_px, epochs=args.refine_epochs,
                     refine_probe=True, refine_positions=True, progress=False,
                     preconditioner=args.refine_preconditioner)
    refine_s = time.perf_counter() - t0
    raw_m = _compare(rec.object, ref, given)
    fin_m = _compare(ref_res.object, ref, given)
    _figure([(ref_label, ref), ("PINN inference", rec.object),
             (f"PINN + {args.refine_epochs} ep refine", ref_res.object)],
            given, WORK / f"siemens_side_by_side{fig_suffix}.png")
    from ptychopinn.metrics.siemens import scanned_star_resolutions

    # one crop for all three (the measured positions): the objects share their frame
    spokes = scanned_star_resolutions([ref, rec.object, ref_res.object], given.positions_px,
                                      given.patch_size)
    from ptychopinn.figures import plot_spoke_modulation

    plot_spoke_modulation(dict(zip([ref_label, "PINN inference",
                                    f"PINN + {args.refine_epochs} ep refine"], spokes,
                                   strict=True)), WORK / f"siemens_spokes{fig_suffix}.png")
    fits = [data_consistency(scan, o, pos, pr)["deviance_ratio"] for o, pos, pr in (
        (ref, ref_pos, ref_probe), (rec.object, rec.positions_px, rec.probe),
        (ref_res.object, ref_res.positions_px, ref_res.probe))]
    lines = ["| ours vs pty-chi | compute s | amp SSIM | phase SSIM | FRC half-bit (1/px) "
             "| FRC 0.5 (1/px) | deviance / noise floor | spokes resolved to radius (px) "
             "| finest half-period (px) | spoke modulation at the reference's radius "
             "| spoke contrast at the reference's radius (per mean amplitude) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    r_ref = spokes[0].resolved_radius_px
    crop = (given.positions_px, given.patch_size)
    contrast = [sp.contrast_at(r_ref, mean_amplitude(o, *crop))
                for sp, o in zip(spokes, (ref, rec.object, ref_res.object), strict=True)]
    lines.append(f"| {ref_label} (the reference) | {ref_s:.1f} | - | - | - | - | {fits[0]:.2f} "
                 f"| {r_ref:.1f} | {spokes[0].half_period_px:.2f} "
                 f"| {spokes[0].modulation_at(r_ref):.3f} | {contrast[0]:.3f} |")
    for name, secs, m, fit, sp, con in (
            ("PINN inference + stitch", infer_s, raw_m, fits[1], spokes[1], contrast[1]),
            (f"PINN + refine {args.refine_epochs} ep (probe, positions)", infer_s + refine_s,
             fin_m, fits[2], spokes[2], contrast[2])):
        frc = m["frc"]
        cut = [("≥ Nyquist" if frc[k] is None else f"{frc[k]:.4f}") for k in ("frc_half_bit",
                                                                           "frc_0.5")]
        lines.append(f"| {name} | {secs:.1f} | {m['amp_ssim']:.3f} | {m['phase_ssim']:.3f} | "
                     f"{cut[0]} | {cut[1]} | {fit:.2f} | {sp.resolved_radius_px:.1f} "
                     f"| {sp.half_period_px:.2f} | {sp.modulation_at(r_ref):.3f} | {con:.3f} |")
    lines.append("")
    for name, sp in (("the network alone", spokes[1]), ("PINN + refinement", spokes[2])):
        verdict = "MET" if sp.resolved_radius_px <= r_ref else "NOT MET"
        lines.append(f"- Issue 4, the PINN's spokes resolved to at least pty-chi's radius, "
                     f"{name}: {verdict} ({sp.resolved_radius_px:.1f} px vs "
                     f"{r_ref:.1f} px)")
    table = "\n".join(lines)
    model_kind = f", model.subpixel={args.subpixel}" if args.subpixel else ""
    if args.prior_iterations:
        model_kind += f", model.prior_iterations={args.prior_iterations}"
    if args.prior_batch_size:
        model_kind += f", model.prior_batch_size={args.prior_batch_size}"
    if args.phase_sync:
        model_kind += f", phase_sync_method={args.phase_sync}"
    model_kind += (f", model.prior_start={model.config.model.prior_start!r} (the prior "
                   f"started {rec.prior_start!r}), model.prior_com_correction="
                   f"{model.config.model.prior_com_correction}")
    notes = (f"measured Siemens star, {scan.n_patterns} patterns of {scan.patch_size}^2; PINN "
             f"{trained}{model_kind} after {args.probe_refine_epochs} epochs of probe retrieval"
             f"{' with position correction' if args.correct_positions else ''} "
             f"({probe_s:.0f} s, not in the compute s; inference and refinement at "
             f"{'the corrected' if args.correct_positions else 'the given'} positions); deviance / noise floor: `ptychopinn.metrics.data_consistency` "
             "against the measured counts (1 = explained to within the photon noise), each "
             "object with its own probe and positions; spokes: "
             "`ptychopinn.metrics.siemens_star_resolution` (complex object, "
             f"{spokes[0].n_spokes} spoke periods, each object's own centre; resolved where the "
             "spoke modulation is >= 0.5 of its outer median and 4x the noise's power, walking "
             "in from the edge; the modulation column reads each curve at the reference's "
             "resolved radius (the threshold is 0.5), the contrast column the same spoke "
             "modulation in the object's units (not relative to its outer spokes) over its mean "
             f"amplitude in the crop; curves in benchmarks/_work/siemens_spokes{fig_suffix}.png); "
             f"reference {ref_label} took {ref_s:.1f} s; figure benchmarks/_work/"
             f"siemens_side_by_side{fig_suffix}.png (gitignored); stitching's phase "
             f"synchronisation {rec.phase_sync}; the refinement's preconditioner "
             f"{args.refine_preconditioner!r}")
    print(notes)
    print(table)
    if args.record:
        from _record import append_section

        append_section("Siemens star: PINN and PINN + refinement against pty-chi"
                       + (" [positions corrected]" if args.correct_positions else "")
                       + (f" [{model_kind.lstrip(', ')}]" if model_kind else ""), table,
                       notes=notes)


if __name__ == "__main__":
    main()
