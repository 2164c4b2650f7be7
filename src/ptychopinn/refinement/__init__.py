"""Physics refinement of a reconstruction against the measured counts.

`refine` optimises the object's pixels (optionally the probe and the scan
positions) with the package's forward model and Poisson likelihood;
`refine_reconstruction` applies it to a network's `Reconstruction`;
`retrieve_probe` refines a scan's probe before training.
"""

from ptychopinn.refinement.probe_retrieval import retrieve_probe
from ptychopinn.refinement.reconstruction import refine_reconstruction
from ptychopinn.refinement.refine import RefineResult, refine

__all__ = ["RefineResult", "refine", "refine_reconstruction", "retrieve_probe"]
