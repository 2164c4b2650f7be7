"""Which scans are "featureless-probe" scans: two signals for choosing the prior's step scale.

For each ``--case LABEL MODEL SCAN`` this script prints:

* the model's probe far field (``|fft2(P)|^2`` summed over modes, normalised to 1): its
  participation ratio ``1 / sum(f^2)`` (how many pixels it spreads over) and the
  fraction of its energy farther than 2, 4 and 8 pixels from its centroid. Fresnel
  defocus multiplies the far field by a phase only, so these do not depend on it;
* the scan prior's amplitude misfit ``sum (|far_field(P E_j O)| - A_j)^2`` after 1, 2 and
  4 plain passes (the prior's defaults: half amplitude steps, 64 patterns per update, no
  FRC filter, no centre-of-mass correction), divided by its photon-noise floor
  ``sum min(A^2, 1/4)`` (the variance of a Poisson count's square root is about 1/4
  above a few counts, the count itself below).

docs/benchmarks.md (eighteenth and nineteenth sessions) explains why: an over-relaxed
prior (``model.prior_step_scale=3``) helps scans under a smooth probe and overshoots under
the default disk. The far-field tail is the signal behind ``model.prior_recipe='auto'``
(`models.prior_recipe`); the misfit, a dose signal, was dropped from it once networks
trained at 1e5 and 1e4 photons per pattern showed that the recipe helps there too.

Usage::

    python benchmarks/bench_probe_features.py \
        --case "seed 11" models/seed11 models/scans/seed11.npz \
        --case "textured, Gaussian" models/hidden/textured_gaussian models/hidden/textured_gaussian.npz [--record]
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

TAIL_RADII_PX = (2, 4, 8)
MISFIT_PASSES = (1, 2, 4)


def far_field_features(probe: torch.Tensor) -> tuple[float, list[float]]:
    """``(participation ratio, [physics.probe.far_field_tail at r for r in TAIL_RADII_PX])``
    of a ``(M, N, N)`` or ``(N, N)`` probe's far field (the tail is the library's, the one
    behind train's featureless-probe warning)."""
    from ptychopinn.physics.probe import far_field_tail

    p = torch.as_tensor(probe).detach().to(torch.complex128)
    ff = torch.fft.fft2(p.reshape(-1, *p.shape[-2:])).abs().square().sum(0)
    ff = ff / ff.sum()
    return float(1.0 / ff.square().sum()), [far_field_tail(p, r) for r in TAIL_RADII_PX]


POISSON_SQRT_VARIANCE = 0.25
"""The variance of the square root of a Poisson count well above one count."""


def misfit_over_noise_floor(amplitudes: torch.Tensor, positions_px, probe: torch.Tensor,  # noqa: ANN001
                            passes: int = 1, *, amplitude_step: float = 0.5) -> float:
    """The plain scan prior's amplitude misfit after ``passes`` passes over its photon-noise
    floor (module docstring): ``amplitudes`` ``(n, N, N)`` square roots of counts,
    ``probe`` ``(M, N, N)`` or ``(N, N)`` in their scale. The passes are the prior's
    defaults: 64 patterns per update, no over-relaxation, filter or correction."""
    from ptychopinn.physics.prior_misfit import amplitude_misfit
    from ptychopinn.physics.prior_scan import canvas_frame, scan_error_reduction

    if isinstance(passes, bool) or int(passes) != passes or passes < 1:
        raise ValueError(f"passes must be an integer >= 1; found {passes!r}")
    amps = torch.as_tensor(amplitudes).detach().to(torch.float32)
    pos = np.asarray(positions_px, dtype=np.float64)
    n = amps.shape[-1]
    probe = torch.as_tensor(probe).detach().reshape(-1, n, n).to(torch.complex64)
    floor = float(amps.square().clamp(max=POISSON_SQRT_VARIANCE).sum())
    if not floor > 0:
        raise ValueError("the scan has no counts")
    est = scan_error_reduction(amps, pos, probe, int(passes), amplitude_step=float(amplitude_step),
                               frame=canvas_frame(pos, n))
    return amplitude_misfit(est, amps, pos, probe) / floor


def misfit_over_floor(model, scan) -> list[float]:  # noqa: ANN001
    """`misfit_over_noise_floor` after each of `MISFIT_PASSES` passes, in the model's probe
    and scale."""
    from ptychopinn.models.scan_prior import dose_ratio

    amps = torch.from_numpy(np.asarray(scan.diffraction, np.float32))
    probe = (model.physics.probe.detach() * float(model.prior_amplitude_scale)
             * dose_ratio(amps, float(model.train_input_scale)))
    return [misfit_over_noise_floor(amps, scan.positions_px, probe, passes)
            for passes in MISFIT_PASSES]


def overshoot_check(model, scan) -> tuple[float, float]:  # noqa: ANN001
    """`models.prior_recipe.overshoot_check` (what ``model.prior_recipe='auto'`` compares)
    on the scan, in the model's probe and scale."""
    from ptychopinn.models.prior_recipe import overshoot_check as check
    from ptychopinn.models.scan_prior import dose_ratio

    amps = torch.from_numpy(np.asarray(scan.diffraction, np.float32))
    probe = (model.physics.probe.detach() * float(model.prior_amplitude_scale)
             * dose_ratio(amps, float(model.train_input_scale)))
    return check(model.cfg, probe, amps, scan.positions_px)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", nargs=3, action="append", required=True,
                   metavar=("LABEL", "MODEL", "SCAN"),
                   help="a label, a trained model (its probe) and a scan NPZ")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    p.add_argument("--note", default="", help="added to the recorded heading")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.data.npz import load_npz

    headers = (["scan", "photons per pattern", "far-field participation ratio (px)"]
               + [f"far-field energy beyond {r} px" for r in TAIL_RADII_PX]
               + ["misfit / noise floor after " + ", ".join(map(str, MISFIT_PASSES)) + " passes",
                  "overshoot check: step 3 / plain misfit"])
    rows = []
    for label, model_path, scan_path in args.case:
        model = load_pinn(model_path).model
        scan = load_npz(scan_path)
        pr, tails = far_field_features(model.physics.probe.detach().cpu())
        with torch.inference_mode():
            ratios = misfit_over_floor(model, scan)
            plain, relaxed = overshoot_check(model, scan)
        photons = float(np.square(scan.diffraction).sum((-2, -1)).mean())
        rows.append([label, f"{photons:.3g}", f"{pr:.1f}"] + [f"{t:.1e}" for t in tails]
                    + [" / ".join(f"{r:.1f}" for r in ratios), f"{relaxed / plain:.2f}"])
        print(" | ".join(rows[-1]), flush=True)
    heading = "Featureless-probe signals (bench_probe_features.py)"
    if args.note:
        heading += f" [{args.note}]"
    notes = ("Far field of each model's probe (normalised to 1; participation ratio and the "
             "energy beyond r pixels of its centroid, physics.probe.far_field_tail); the plain "
             "scan prior's amplitude misfit over its photon-noise floor sum(min(A^2, 1/4)) after "
             "1, 2 and 4 passes; models.prior_recipe.overshoot_check's ratio (the recipe's 12 "
             "passes of 32 at step scale 3 over the same at 1). Cases: "
             + "; ".join(f"{lab}: {m} on {s}" for lab, m, s in args.case) + ".")
    print_and_record(heading, markdown_table(headers, rows), notes, args.record)


if __name__ == "__main__":
    main()
