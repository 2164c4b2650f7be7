"""The measured Siemens star: what the network adds to its physics prior, and the
prior's FRC filter, judged by the spokes' resolved radius and the data's fit.

Takes a model trained on the star by ``bench_siemens_pinn.py`` (its run
directory, ``benchmarks/_work/siemens_pinn_run`` or ``..._pos`` with
``--correct-positions``) and pty-chi's result on the same data, redoes the probe
retrieval the model was trained after (`refinement.retrieve_probe`, seeded: the
same probe and positions), and reconstructs the star six ways with the same
inference and stitching:

* the physics prior alone (the network bypassed, ``bench_prior.ModelVariant``) and
  the network, each
* with the model's half-scan FRC filter of the prior's amplitude
  (`physics.prior_frc`, the default) and without it (the same network, its
  prior unfiltered at inference only).

Two more rows split the network's correction (as trained, `PartVariant`): its
amplitude under the prior's phase, and the prior's amplitude under its phase.

Each is scored by the spokes' resolved radius (`metrics.siemens`, one crop and
spoke count for all, as in ``bench_siemens_pinn.py``) of the complex object, of its
amplitude alone and of its phase alone (a unit-modulus image, the global phase
removed; `part_of`), by the spokes' contrast at pty-chi's radius in the object's
units (`SpokeResolution.contrast_at` over the mean amplitude), and by the Poisson
deviance over its photon-noise floor against the measured counts
(`metrics.data_consistency`; 1 = explained to within the noise). No truth is
needed.

Usage::

    python benchmarks/bench_siemens_prior.py [--model benchmarks/_work/siemens_pinn_run]
        [--ptychi-result benchmarks/_work/siemens_ptychi.npz] [--correct-positions]
        [--prior-iterations K] [--record]
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
sys.path.insert(0, str(HERE))
from _record import markdown_table  # noqa: E402
from bench_prior import ModelVariant  # noqa: E402
from bench_siemens import DEFAULT_DATA, WORK, contract_scan  # noqa: E402


class PartVariant(ModelVariant):
    """The network's ``part`` (``'amplitude'`` or ``'phase'``) of each patch with the
    other part taken from the physics prior: which of the network's corrections moves
    the spokes."""

    def __init__(self, model, part: str) -> None:  # noqa: ANN001
        super().__init__(model, prior_only=False)
        if part not in ("amplitude", "phase"):
            raise ValueError(f"part must be 'amplitude' or 'phase'; found {part!r}")
        self.part = part

    def predict_patches(self, amplitudes, input_scale, prior):  # noqa: ANN001, ANN201
        net = self.inner.predict_patches(amplitudes, input_scale, prior)
        if self.part == "amplitude":
            return torch.polar(net.abs(), prior.angle())
        return torch.polar(prior.abs(), net.angle())


def part_of(obj: np.ndarray, what: str) -> np.ndarray:
    """The amplitude alone (``'amplitude'``) or the unit-modulus phase alone, its global
    phase removed (``'phase'``), of a complex object."""
    if what == "amplitude":
        return np.abs(obj).astype(np.complex64)
    return np.exp(1j * np.angle(obj * np.exp(-1j * np.angle(np.mean(obj))))).astype(np.complex64)


def mean_amplitude(obj: np.ndarray, positions_px: np.ndarray, patch_size: int) -> float:
    """The object's mean amplitude in the crop its spokes are read in (the unit of the
    spokes' contrast)."""
    from ptychopinn.metrics.siemens import scanned_crop

    return float(np.abs(obj[scanned_crop(obj.shape, positions_px, patch_size)]).mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--model", default=None,
                   help="run directory or bundle of a model trained on the star (default: "
                        "bench_siemens_pinn.py's run, _pos with --correct-positions)")
    p.add_argument("--ptychi-result", default=None,
                   help="pty-chi's result (default: benchmarks/_work/siemens_ptychi.npz, "
                        "siemens_ptychi_pos.npz with --correct-positions)")
    p.add_argument("--correct-positions", action="store_true",
                   help="the model was trained at corrected positions (bench_siemens_pinn.py "
                        "--correct-positions): correct them the same way here")
    p.add_argument("--probe-refine-epochs", type=int, default=20,
                   help="the probe retrieval the model was trained after (as in "
                        "bench_siemens_pinn.py)")
    p.add_argument("--prior-iterations", type=int, default=None,
                   help="prior passes at inference (default: the model's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = p.parse_args(argv)
    if args.prior_iterations is not None and args.prior_iterations < 1:
        p.error(f"--prior-iterations must be >= 1; found {args.prior_iterations}")
    suffix = "_pos" if args.correct_positions else ""
    model_path = Path(args.model or WORK / f"siemens_pinn_run{suffix}")
    ref_path = Path(args.ptychi_result or WORK / f"siemens_ptychi{suffix}.npz")
    for path, how in ((Path(args.data), "the Siemens star data"),
                      (ref_path, "run bench_siemens.py --refine-probe"
                       + (" --refine-positions --name siemens_ptychi_pos"
                          if args.correct_positions else "") + " first"),
                      (model_path, "run bench_siemens_pinn.py"
                       + (" --correct-positions" if args.correct_positions else "") + " first")):
        if not path.exists():
            print(f"bench_siemens_prior: SKIPPED: {path} not found ({how}).")
            return
    torch.set_num_threads(args.threads)
    from dataclasses import replace

    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.metrics import data_consistency
    from ptychopinn.metrics.siemens import scanned_star_resolutions
    from ptychopinn.refinement import retrieve_probe

    loaded = load_pinn(model_path)
    mcfg = loaded.config.model
    if not mcfg.prior_iterations or mcfg.prior_scope != "scan":
        raise SystemExit(f"bench_siemens_prior: {model_path} has no scan prior "
                         f"(prior_iterations {mcfg.prior_iterations}, scope {mcfg.prior_scope!r}).")
    given = contract_scan(args.data)
    scan = given
    if args.probe_refine_epochs:
        scan = retrieve_probe(given, args.probe_refine_epochs, positions=args.correct_positions)
    with np.load(ref_path, allow_pickle=False) as z:
        objects = {"pty-chi (the reference)": z["object"]}
        fits = {"pty-chi (the reference)": (z["positions_px"], z["probe"])}
        secs = {"pty-chi (the reference)": float(z["reconstruction_s"])}
    cfg = InferenceConfig(prior_iterations=args.prior_iterations)
    passes = {"pty-chi (the reference)": "-"}
    for frc in (True, False):
        variant_cfg = mcfg.model_copy(update={"prior_frc_filter": frc})
        for prior_only in (True, False):
            name = (f"{'prior alone' if prior_only else 'network'}, FRC filter "
                    f"{'on' if frc else 'off'}")
            if frc == bool(mcfg.prior_frc_filter) and not prior_only:
                name += " (as trained)"
            lm = replace(loaded, model=ModelVariant(loaded.model, prior_only, variant_cfg))
            t0 = time.perf_counter()
            rec = reconstruct_pytorch(lm, scan, cfg)
            secs[name] = time.perf_counter() - t0
            objects[name] = rec.object
            passes[name] = (f"{rec.prior_passes}"
                            + (f", momentum {rec.prior_phase_momentum:g}"
                               if rec.prior_phase_momentum else "")
                            + ("" if rec.prior_agreement is None
                               else f" ({rec.prior_agreement:.2f})"))
            fits[name] = (rec.positions_px, rec.probe)
            print(f"{name}: {secs[name]:.1f} s", flush=True)
    # which part of the network's correction moves the spokes: its amplitude on the
    # prior's phase, and the prior's amplitude under its phase (as trained)
    for part in ("amplitude", "phase"):
        name = (f"network's {part}, prior's {'phase' if part == 'amplitude' else 'amplitude'}"
                " (as trained)")
        lm = replace(loaded, model=PartVariant(loaded.model, part))
        t0 = time.perf_counter()
        rec = reconstruct_pytorch(lm, scan, cfg)
        secs[name] = time.perf_counter() - t0
        objects[name], fits[name] = rec.object, (rec.positions_px, rec.probe)
        passes[name] = str(rec.prior_passes)
        print(f"{name}: {secs[name]:.1f} s", flush=True)
    names = list(objects)
    crop = (given.positions_px, given.patch_size)
    spokes = scanned_star_resolutions([objects[k] for k in names], *crop)
    # the amplitude alone and the phase alone (the global phase removed), at the spoke
    # count of pty-chi's complex object
    alone = {what: scanned_star_resolutions(
        [objects[names[0]]] + [part_of(objects[k], what) for k in names], *crop)[1:]
        for what in ("amplitude", "phase")}
    rows = []
    r_ref = spokes[0].resolved_radius_px
    for i, (k, sp) in enumerate(zip(names, spokes, strict=True)):
        dev = data_consistency(scan, objects[k], *fits[k])["deviance_ratio"]
        rows.append([k, f"{secs[k]:.1f}", f"{dev:.2f}", f"{sp.resolved_radius_px:.1f}",
                     f"{sp.half_period_px:.2f}", f"{sp.modulation_at(r_ref):.3f}",
                     f"{sp.contrast_at(r_ref, mean_amplitude(objects[k], *crop)):.3f}",
                     f"{alone['amplitude'][i].resolved_radius_px:.1f}",
                     f"{alone['phase'][i].resolved_radius_px:.1f}", passes[k]])
    table = markdown_table(["reconstruction", "compute s", "deviance / noise floor",
                            "spokes resolved to radius (px)", "finest half-period (px)",
                            "spoke modulation at pty-chi's radius",
                            "spoke contrast at pty-chi's radius (per mean amplitude)",
                            "amplitude alone: resolved to (px)", "phase alone: resolved to (px)",
                            "prior passes run (half-scan agreement)"], rows)
    notes = (f"measured Siemens star, {scan.n_patterns} patterns of {scan.patch_size}^2; model "
             f"{model_path} ({mcfg.prior_iterations} prior passes in training, "
             f"{args.prior_iterations or mcfg.prior_iterations} here, plus the default extra "
             "passes where the halves agree; model.subpixel "
             f"{mcfg.subpixel}, trained with the FRC filter "
             f"{'on' if mcfg.prior_frc_filter else 'off'}) after {args.probe_refine_epochs} "
             "epochs of probe retrieval"
             f"{' with position correction (inference at the corrected positions)' if args.correct_positions else ''}; "
             "'FRC filter off': the same network given its prior unfiltered at inference only; "
             "'network's amplitude, prior's phase' and 'network's phase, prior's amplitude': "
             "each patch's part from the network as trained, the other from its prior; "
             "'contrast': the same spoke modulation in the object's units (not relative to "
             "its outer spokes) over its mean amplitude in the crop; "
             "'amplitude alone' / 'phase alone': the spokes of |object| and of the unit-modulus "
             "phase image (global phase removed) at pty-chi's spoke count; "
             f"reference {ref_path.name}; spokes and deviance as in bench_siemens_pinn.py (one "
             "crop at the measured positions, the reference's spoke count); the modulation "
             "column reads each curve at pty-chi's resolved radius (the threshold is 0.5).")
    print(notes)
    print(table)
    if args.record:
        from _record import append_section

        append_section("Siemens star: the network against its prior, FRC filter on / off "
                       "(bench_siemens_prior.py)"
                       + (" [positions corrected]" if args.correct_positions else ""),
                       table, notes=notes)


if __name__ == "__main__":
    main()
