"""Physics refinement of a reconstruction against the measured counts.

`refine` optimises the object's pixels (optionally the probe and the scan
positions) with the package's forward model and Poisson likelihood;
`refine_reconstruction` applies it to a network's `Reconstruction`;
`retrieve_probe` refines a scan's probe (and optionally its positions) before
training; `correct_positions` corrects the positions before inference.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from ptychopinn.data.scan import Scan
from ptychopinn.refinement import refine as _refine_module
from ptychopinn.refinement.probe_retrieval import correct_positions, retrieve_probe
from ptychopinn.refinement.reconstruction import refine_reconstruction
from ptychopinn.refinement.refine import RefineResult

__all__ = [
    "RefineResult",
    "correct_positions",
    "refine",
    "refine_reconstruction",
    "retrieve_probe",
]


def _check_refine_args(scan: object, initial_object: object) -> None:
    """TypeErrors for arguments of the wrong kind, before any work."""
    who = "refine(scan, initial_object)"
    if not isinstance(scan, Scan):
        if isinstance(initial_object, Scan):
            hint = " (are the arguments swapped?)"
        elif isinstance(scan, (str, os.PathLike)):
            hint = f" (read the file first: refine(pp.load_scan({os.fspath(scan)!r}), ...))"
        else:
            hint = ""
        found = type(scan).__name__
        if isinstance(scan, (str, os.PathLike)):
            found += f" {os.fspath(scan)!r}"
        raise TypeError(f"{who}: scan must be a Scan; found {found}{hint}.")
    if initial_object is not None and not isinstance(initial_object, np.ndarray):
        if hasattr(initial_object, "object"):
            raise TypeError(
                f"{who}: initial_object must be a 2-D complex array or None; found "
                f"{type(initial_object).__name__} (pass its .object, or refine a network's "
                "reconstruction with refine_reconstruction(recon, scan, model, config))."
            )


@functools.wraps(_refine_module.refine)
def refine(scan: Scan, initial_object: np.ndarray | None = None, **options) -> RefineResult:
    _check_refine_args(scan, initial_object)
    return _refine_module.refine(scan, initial_object, **options)
