"""Reconstruct a scan with a TensorFlow model: predict patches, stitch with the shared code.

Only the prediction runs in TensorFlow; grouping, the canvas, the input
normalisation and the stitching (with phase synchronisation) are the shared
framework-neutral code used by the PyTorch backend.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from ptychopinn.config.schema import InferenceConfig
from ptychopinn.data.scan import Scan
from ptychopinn.inference.precision import DEFAULT_BATCH
from ptychopinn.inference.reconstruct import (
    Reconstruction,
    canvas_for,
    check_prior_options,
    inference_groups,
    settle_advice,
)
from ptychopinn.tf import tf

log = logging.getLogger(__name__)


def check_execution(execution, *, training: bool = False) -> None:  # noqa: ANN001
    """Reject execution options the tensorflow backend cannot honour (`ConfigError`):
    those `ptychopinn.backends.check_execution_options` refuses, and a GPU asked for
    that TensorFlow does not see."""
    from ptychopinn.backends import check_execution_options
    from ptychopinn.errors import ConfigError

    check_execution_options("tensorflow", execution, training=training)
    acc = execution.accelerator
    if acc in ("gpu", "cuda") and not tf.config.list_physical_devices("GPU"):
        raise ConfigError(f"execution.accelerator is {acc!r} but TensorFlow sees no GPU "
                          "(tensorflow-cpu is installed by ptychopinn[tensorflow]).")


CACHE_LIMIT_BYTES = 1 << 30
"""Predicted patches are kept in memory (one prediction pass) below this size."""


def patch_predictor(model, amplitudes: np.ndarray, scale: float, prior=None):  # noqa: ANN001
    """A function ``indices (g, C) -> complex patches (g, C, N, N)`` (numpy), graph-compiled.

    ``prior`` is the scan's `ScanPrior` (models with a physics-prior input)."""
    import torch

    fn = model.compiled_predictor()
    s = tf.constant(scale, tf.float32)
    if prior is None:
        return lambda idx: fn(tf.constant(amplitudes[idx]), s).numpy()
    return lambda idx: fn(tf.constant(amplitudes[idx]), s,
                          tf.constant(prior(torch.from_numpy(idx)).numpy())).numpy()


def reconstruct_tensorflow(
    loaded, scan: Scan, cfg: InferenceConfig | None = None  # noqa: ANN001
) -> Reconstruction:
    """Predict every group's patches with TensorFlow and stitch them into the object.

    Parameters
    ----------
    loaded
        A `LoadedModel` from `ptychopinn.tf.bundle.load_tf`.
    scan
        The scan to reconstruct (its N must match the model's).
    cfg
        Inference options (defaults if None).
    """
    import torch

    from ptychopinn.errors import ConfigError
    from ptychopinn.inference.stitching import (
        probe_weight,
        radial_order,
        resolved_stitch_weight,
        stitch_groups,
        sync_method,
    )
    from ptychopinn.training.data import input_scale_of

    cfg = cfg or InferenceConfig()
    check_execution(cfg.execution)
    model = loaded.model
    mcfg = loaded.config.model
    if scan.patch_size != mcfg.N:
        raise ConfigError(
            f"{scan.source}: patterns are {scan.patch_size}x{scan.patch_size} but the model "
            f"{loaded.path} was trained for N={mcfg.N}."
        )
    check_prior_options(mcfg, cfg, loaded.path)
    if (advice := settle_advice(mcfg, cfg, loaded.path)) is not None:
        log.warning(advice)
    t0 = time.perf_counter()
    framed, offset, shape = canvas_for(scan)
    groups = inference_groups(framed.positions_px, mcfg.gridsize, cfg)
    amps = np.asarray(framed.diffraction, dtype=np.float32)
    # groups grow outwards from the centre so phase synchronisation can chain them
    idx = groups.indices[radial_order(groups.centers_px)]
    scale = input_scale_of(amps)
    t_prior = time.perf_counter()
    valid = None if framed.bad_pixel_mask is None else ~framed.bad_pixel_mask
    prior = model.scan_prior(amps, framed.positions_px, valid, iterations=cfg.prior_iterations,
                             frc_filter=cfg.prior_frc_filter,
                             extra_iterations=cfg.prior_extra_iterations,
                             converge_passes=cfg.prior_converge_passes,
                             phase_momentum=cfg.prior_phase_momentum,
                             start_phase=cfg.prior_start,
                             com_correction=cfg.prior_com_correction,
                             step_scale=cfg.prior_step_scale,
                             settle_passes=cfg.prior_settle_passes,
                             orders=cfg.prior_orders,
                             orders_filter=cfg.prior_orders_filter,
                             amplitude_units=framed.amplitude_units)
    t_prior = time.perf_counter() - t_prior
    predict = patch_predictor(model, amps, scale, prior)
    # 'auto': 64; the PyTorch backend's smaller CPU batches did not pay here: on the default
    # scan's model TensorFlow's network took 1.35 s at 64 groups, 1.51 at 32 (an exploration
    # in docs/benchmarks.md, thirty-seventh session, not a recorded table)
    n_groups = idx.shape[0]
    bs = DEFAULT_BATCH if cfg.batch_size == "auto" else int(cfg.batch_size)
    cache_ok = n_groups * mcfg.n_channels * mcfg.N**2 * 8 <= CACHE_LIMIT_BYTES
    t_pred = time.perf_counter()
    cache = [predict(idx[s : s + bs]) for s in range(0, n_groups, bs)] if cache_ok else []
    t_pred = time.perf_counter() - t_pred
    pos = torch.from_numpy(framed.positions_px)
    if mcfg.subpixel == "probe_shift":  # the network's patches are whole-pixel windows
        from ptychopinn.physics.geometry import whole_pixel_windows

        pos, _ = whole_pixel_windows(pos, mcfg.N)
    idx_t = torch.from_numpy(idx)

    def source():
        for k, s in enumerate(range(0, n_groups, bs)):
            sl = slice(s, min(s + bs, n_groups))
            patches = cache[k] if cache_ok else predict(idx[sl])
            yield torch.arange(sl.start, sl.stop), torch.from_numpy(patches), pos[idx_t[sl]]

    support = model.support.numpy()
    weight = support
    stitch_weight = resolved_stitch_weight(cfg.stitch_weight, prior)
    if stitch_weight == "probe":  # as the pytorch backend
        weight = probe_weight(model.illumination(), cfg.stitch_flat_above) * support
    t_st = time.perf_counter()
    sync = sync_method(cfg.phase_sync, cfg.phase_sync_method, n_groups * mcfg.n_channels, mcfg.N)
    obj, den, _ = stitch_groups(source, n_groups, shape, torch.from_numpy(weight), sync=sync,
                                polish_passes=cfg.phase_sync_polish)
    t_st = time.perf_counter() - t_st
    return Reconstruction(
        object=obj.numpy().astype(np.complex64),
        positions_px=framed.positions_px.copy(),
        weight=den.numpy().astype(np.float32),
        backend="tensorflow",
        frame_offset_px=np.asarray(offset, dtype=np.float64),
        probe=model.probe_numpy(),
        timings_s={"prior": t_prior, "predict": t_pred, "stitch": t_st, "total": time.perf_counter() - t0,
                   "n_patterns": scan.n_patterns, "n_groups": int(n_groups)},
        prior_passes=None if prior is None else int(prior.passes),
        prior_agreement=None if prior is None else prior.agreement,
        prior_frc_filter=None if prior is None else prior.frc_filter,
        prior_phase_momentum=None if prior is None else prior.phase_momentum,
        prior_start=None if prior is None else prior.start_phase,
        prior_com_correction=None if prior is None else prior.com_correction,
        prior_step_scale=None if prior is None else prior.step_scale,
        prior_settle_passes=None if prior is None else prior.settle_passes,
        prior_orders=None if prior is None else prior.orders,
        prior_orders_filter=None if prior is None else prior.orders_filter,
        prior_orders_agreement=None if prior is None else prior.orders_agreement,
        prior_object_momentum=None if prior is None else prior.object_momentum,
        phase_sync=sync,
        stitch_weight=stitch_weight,
        network_batch_size=bs,
    )
