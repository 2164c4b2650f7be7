"""Evaluation of reconstructions: against a ground-truth object, and against the data.

`evaluate` (arrays) and `evaluate_files` (NPZ files) run the whole pipeline:
crop to the illuminated region, sub-pixel registration, global-phase and
phase-ramp removal, amplitude-scale matching, then SSIM / PSNR / MAE of
amplitude and phase, complex NRMSE and the Fourier ring correlation.
`data_consistency` (arrays) and `data_consistency_files` need no truth: how
well a reconstruction explains the measured counts (modulus R-factor, Poisson
deviance against its noise floor). `siemens_star_resolution` measures how close
to its centre a Siemens star's spokes are resolved (no truth needed).
"""

from ptychopinn.metrics.align import (
    illuminated_region,
    match_amplitude_scale,
    register,
    remove_global_phase,
    remove_phase_ramp,
    remove_relative_phase_ramp,
    shift_image,
)
from ptychopinn.metrics.consistency import data_consistency, data_consistency_files
from ptychopinn.metrics.evaluate import evaluate, write_metrics_json
from ptychopinn.metrics.evaluate_files import evaluate_files, evaluate_reconstruction_files
from ptychopinn.metrics.frc import (
    fourier_ring_correlation,
    half_bit_threshold,
    resolution_cutoffs,
    ring_pixel_counts,
)
from ptychopinn.metrics.scores import complex_nrmse, mae, psnr, ssim
from ptychopinn.metrics.siemens import SpokeResolution, siemens_star_resolution

__all__ = [
    "SpokeResolution",
    "complex_nrmse",
    "data_consistency",
    "data_consistency_files",
    "evaluate",
    "evaluate_files",
    "evaluate_reconstruction_files",
    "fourier_ring_correlation",
    "half_bit_threshold",
    "illuminated_region",
    "mae",
    "match_amplitude_scale",
    "psnr",
    "register",
    "remove_global_phase",
    "remove_phase_ramp",
    "remove_relative_phase_ramp",
    "resolution_cutoffs",
    "ring_pixel_counts",
    "shift_image",
    "siemens_star_resolution",
    "ssim",
    "write_metrics_json",
]
