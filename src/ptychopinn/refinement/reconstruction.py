"""Refinement of a network's `Reconstruction` (the ``refine_epochs`` option).

Owns `refine_reconstruction`: runs `ptychopinn.refinement.refine` from the
stitched object in its own frame (``recon.positions_px``) with the scan's
probe and the ``refine_*`` options of an `InferenceConfig`, and stores the
result on the `Reconstruction`. The network's arbitrary amplitude scale is
removed by the closed-form Poisson ML intensity factor inside `refine`.
"""

from __future__ import annotations

import logging

from ptychopinn.config.schema import InferenceConfig
from ptychopinn.data.scan import Scan
from ptychopinn.refinement.refine import refine

log = logging.getLogger(__name__)


def device_name(config) -> str:
    """'cuda' when ``config.execution`` asks for (or allows) a GPU and one is present, else 'cpu'."""
    import torch

    acc = config.execution.accelerator
    if acc in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def refine_reconstruction(recon, scan: Scan, model, config: InferenceConfig):
    """Refine ``recon.object`` against ``scan``; store and return ``recon``.

    Parameters
    ----------
    recon
        A `ptychopinn.inference.reconstruct.Reconstruction` of ``scan``.
    scan
        The measured scan (its probe is used; its positions are taken from
        ``recon.positions_px``, which are in the object's frame).
    model
        The loaded model (kept for the API; its probe is not used).
    config
        The ``refine_*`` options, ``seed``, ``execution.accelerator`` and
        ``execution.progress_bar`` are read (`refine_options`).

    Returns
    -------
    ``recon`` with ``refined_object``, ``refinement_history``,
    ``refinement_info`` (intensity scale, counts per photon, the step scale of
    the photon-sparse rule) and ``timings_s["refine"]`` set.
    """
    import torch

    threads = config.execution.num_threads
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        result = _run(scan, recon, config)
    finally:
        torch.set_num_threads(previous)
    recon.refined_object = result.object
    if config.refine_probe:
        recon.refined_probe = result.probe
    if config.refine_positions:
        recon.refined_positions_px = result.positions_px
    recon.refinement_history = result.history
    recon.refinement_info = {
        "intensity_scale": result.intensity_scale,
        "counts_per_photon": result.counts_per_photon,
        "step_scale": result.step_scale,
    }
    recon.timings_s["refine"] = result.seconds
    log.info(
        "refined %d epochs in %.2f s (loss %.4g -> %.4g, intensity scale %.4g)",
        len(result.history), result.seconds,
        result.history[0]["loss"] if result.history else float("nan"),
        result.history[-1]["loss"] if result.history else float("nan"),
        result.intensity_scale,
    )
    return recon


def refine_options(config: InferenceConfig) -> dict:
    """The keyword arguments of `refine` that an `InferenceConfig` sets for the
    refinement of a network's object (also used by the benchmarks, so they
    measure what ``infer --refine-epochs`` does)."""
    return {
        "epochs": config.refine_epochs,
        "learning_rate": config.refine_learning_rate,
        "momentum": config.refine_momentum,
        "momentum_amplitude": config.refine_momentum_amplitude,
        "phase_only_epochs": min(config.refine_phase_first, config.refine_epochs // 2),
        "restart_at_release": config.refine_release_restart,
        "noise_floor": config.refine_noise_floor,
        "floor_after_epochs": config.refine_floor_after,
        "subpixel": config.refine_subpixel,
        "sparse_counts": config.refine_sparse_counts,
        "preconditioner": config.refine_preconditioner,
        "refine_probe": config.refine_probe,
        "refine_positions": config.refine_positions,
        "position_keep_linear": config.position_keep_linear,
        "device": device_name(config),
        "seed": config.seed,
        "progress": config.execution.progress_bar,
    }


def _run(scan: Scan, recon, config: InferenceConfig):
    return refine(
        scan, recon.object, positions_px=recon.positions_px, probe=scan.probe,
        **refine_options(config),
    )

