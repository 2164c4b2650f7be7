"""Physics: geometry (extract/place), propagation, the forward model, losses."""

from ptychopinn.physics.forward import ForwardModel
from ptychopinn.physics.geometry import extract_patches, place_patches, stitch
from ptychopinn.physics.losses import amplitude_mae, poisson_nll, realspace_mae
from ptychopinn.physics.propagation import back_propagate, diffracted_intensity, far_field

__all__ = [
    "ForwardModel",
    "amplitude_mae",
    "back_propagate",
    "diffracted_intensity",
    "extract_patches",
    "far_field",
    "place_patches",
    "poisson_nll",
    "realspace_mae",
    "stitch",
]
