"""Probe retrieval before training: a better probe for measured scans.

A measured scan often comes with a rough probe guess (a modelled zone-plate
focus, a probe from another day). The PINN's physics and its physics prior
use the probe as given, so a wrong probe limits what the network can learn.
`retrieve_probe` refines the probe jointly with an object from a flat start
(`refine` with ``refine_probe=True``: parallel-PIE object steps, probe steps
from the third epoch) and returns the scan with that probe; the object is
discarded. ``TrainingConfig.probe_refine_epochs`` runs it before training.
"""

from __future__ import annotations

import logging

import numpy as np

from ptychopinn.data.scan import Scan
from ptychopinn.errors import ConfigError

log = logging.getLogger(__name__)


def retrieve_probe(scan: Scan, epochs: int, *, seed: int = 0, device: str = "cpu") -> Scan:
    """The scan with its probe refined against its own counts.

    Parameters
    ----------
    scan
        A scan with a probe guess.
    epochs
        Refinement epochs (at least 3: the probe is updated from the third).
    seed, device
        Of the refinement (`ptychopinn.refinement.refine`).
    """
    from ptychopinn.refinement.refine import refine

    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 3:
        raise ConfigError(
            f"probe_refine_epochs: expected an integer >= 3 (the probe is refined from the "
            f"third epoch); found {epochs!r}."
        )
    res = refine(scan, None, epochs=int(epochs), refine_probe=True, progress=False,
                 seed=seed, device=device)
    probe = np.asarray(res.probe, dtype=np.complex64)
    if not np.all(np.isfinite(probe)) or not np.any(probe):
        raise ConfigError(f"{scan.source}: probe retrieval diverged; train with the probe as "
                          "given (probe_refine_epochs=0) or check the scan.")
    first, last = res.history[0]["loss"], res.history[-1]["loss"]
    log.info("probe retrieval: %d epochs, Poisson NLL %.4g -> %.4g", epochs, first, last)
    return scan.replace(probe=probe)
