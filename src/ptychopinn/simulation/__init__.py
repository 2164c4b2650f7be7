"""Simulated ptychographic scans: objects, probes, scan patterns, the forward model."""

from ptychopinn.simulation.objects import (
    BUNDLED_IMAGES,
    HELD_OUT_IMAGES,
    TEXTURE_POOL,
    load_object_file,
    make_object,
)
from ptychopinn.simulation.patterns import make_positions
from ptychopinn.simulation.probes import load_probe_file, make_probe
from ptychopinn.simulation.simulate import (
    extract_patches,
    far_field_counts,
    forward_counts,
    simulate_scan,
    simulate_to_file,
)
from ptychopinn.simulation.spec import SimulationConfig

__all__ = [
    "BUNDLED_IMAGES",
    "HELD_OUT_IMAGES",
    "TEXTURE_POOL",
    "SimulationConfig",
    "extract_patches",
    "far_field_counts",
    "forward_counts",
    "load_object_file",
    "load_probe_file",
    "make_object",
    "make_positions",
    "make_probe",
    "simulate_scan",
    "simulate_to_file",
]
