"""Physics refinement of a reconstruction against the measured counts.

`refine` optimises the object's pixels (optionally the probe and the scan
positions) with the package's forward model and Poisson likelihood;
`refine_reconstruction` applies it to a network's `Reconstruction`;
`retrieve_probe` refines a scan's probe (and optionally its positions) before
training; `correct_positions` corrects the positions before inference.
"""

from ptychopinn.refinement.probe_retrieval import correct_positions, retrieve_probe
from ptychopinn.refinement.reconstruction import refine_reconstruction
from ptychopinn.refinement.refine import RefineResult, refine

__all__ = [
    "RefineResult",
    "correct_positions",
    "refine",
    "refine_reconstruction",
    "retrieve_probe",
]
