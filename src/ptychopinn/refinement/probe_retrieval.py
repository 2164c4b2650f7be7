"""Probe retrieval before training: a better probe for measured scans.

A measured scan often comes with a rough probe guess (a modelled zone-plate
focus, a probe from another day). The PINN's physics and its physics prior
use the probe as given, so a wrong probe limits what the network can learn.
`retrieve_probe` refines the probe jointly with an object from a flat start
(`refine` with ``refine_probe=True``: parallel-PIE object steps, probe steps
from the third epoch) and returns the scan with that probe; the object is
discarded. ``TrainingConfig.probe_refine_epochs`` runs it before training.

Measured positions are often off by a pixel or two (encoder errors, drift).
With ``positions=True`` the same refinement also corrects the positions and
the returned scan carries them (``TrainingConfig.probe_refine_positions``: the
model trains at the corrected positions). `correct_positions` does this for
inference (``InferenceConfig.position_refine_epochs``): the network predicts
and the patches are stitched at the corrected positions; its refined probe is
discarded, since the network uses its own. The corrections keep no global
scale, rotation or shear (`positions.PositionCorrector`). On the measured
Siemens star, 20 epochs moved the positions by 1.2 px on average (at most
3.3 px) and the network's stitched spokes sharpened from a resolved radius of
45.5 px to 42.0 px without retraining (docs/benchmarks.md).
"""

from __future__ import annotations

import logging

import numpy as np

from ptychopinn.data.scan import Scan
from ptychopinn.errors import ConfigError

log = logging.getLogger(__name__)


def retrieve_probe(scan: Scan, epochs: int, *, positions: bool = False, seed: int = 0,
                   device: str = "cpu", keep_linear: bool = False,
                   option: str = "probe_refine_epochs") -> Scan:
    """The scan with its probe refined against its own counts.

    Parameters
    ----------
    scan
        A scan with a probe guess.
    epochs
        Refinement epochs (at least 3: the probe is updated from the third).
    positions
        Also correct the scan positions (from the second epoch) and return the
        scan with them, in the scan's frame.
    seed, device
        Of the refinement (`ptychopinn.refinement.refine`).
    keep_linear
        Keep a global scale / rotation / shear of the position corrections
        (``refine``'s ``position_keep_linear``; default: removed).
    option
        The setting that asked for this run, named in errors and in the log
        (``probe_refine_epochs`` for training, ``position_refine_epochs`` for
        inference's position correction).
    """
    from ptychopinn.refinement.refine import refine

    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 3:
        raise ConfigError(
            f"{option}: expected an integer >= 3 (the probe is refined from the "
            f"third epoch); found {epochs!r}."
        )
    res = refine(scan, None, epochs=int(epochs), refine_probe=True, refine_positions=positions,
                 progress=False, seed=seed, device=device, position_keep_linear=keep_linear)
    probe = np.asarray(res.probe, dtype=np.complex64)
    if not np.all(np.isfinite(probe)) or not np.any(probe):
        what = "probe retrieval" if option == "probe_refine_epochs" else "position correction"
        raise ConfigError(f"{scan.source}: {what} diverged; run with {option}=0 (the probe "
                          "and positions as given) or check the scan.")
    first, last = res.history[0]["loss"], res.history[-1]["loss"]
    if option == "probe_refine_epochs":
        log.info("probe retrieval: %d epochs, Poisson NLL %.4g -> %.4g", epochs, first, last)
    else:
        log.info("position correction (%s, probe and positions refined jointly): %d epochs, "
                 "Poisson NLL %.4g -> %.4g", option, epochs, first, last)
    out = scan.replace(probe=probe)
    if positions:
        corrected = np.asarray(res.positions_px + res.frame_offset_px, dtype=np.float64)
        if not np.all(np.isfinite(corrected)):
            raise ConfigError(f"{scan.source}: position correction diverged; use the positions "
                              "as given or check the scan.")
        moved = np.linalg.norm(corrected - scan.positions_px, axis=1)
        log.info("position correction: %d epochs, moved %.2f px on average (at most %.2f px)",
                 epochs, moved.mean(), moved.max())
        out = out.replace(positions_px=corrected)
    return out


def correct_positions(scan: Scan, epochs: int, *, seed: int = 0, device: str = "cpu",
                      keep_linear: bool = False) -> Scan:
    """The scan with its positions corrected against its own counts: probe and
    positions refined jointly with an object from a flat start (`retrieve_probe`
    with ``positions=True``); only the positions are kept."""
    fixed = retrieve_probe(scan, epochs, positions=True, seed=seed, device=device,
                           keep_linear=keep_linear, option="position_refine_epochs")
    return scan.replace(positions_px=fixed.positions_px)
