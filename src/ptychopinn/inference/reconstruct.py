"""Reconstruct a scan with a trained PyTorch model: predict, stitch, save."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ptychopinn.atomic import ensure_dir
from ptychopinn.config.schema import InferenceConfig
from ptychopinn.data.scan import Scan
from ptychopinn.inference.precision import network_autocast, network_batch_size, network_dtype

log = logging.getLogger(__name__)

CANVAS_MARGIN_PX = 2
_CACHE_LIMIT_BYTES = 1 << 30
POOR_FIT_RATIO = 5.0
"""A reconstruction whose Poisson deviance is more than this many times its photon-noise
floor gets a warning (`poor_fit_warning`). Recorded (`benchmarks/bench_data_fit.py` and
the star's benches, docs/benchmarks.md): 1.0-1.4 for the network on simulated scans it
reconstructs well; 2.6-3.2 for pty-chi, the prior and the network on the measured Siemens
star (its unmodelled detector and coherence effects); 13.5 where the network failed, a
lines object under a Gaussian probe (amp SSIM 0.24 against LSQML-100's 0.91)."""


@dataclass
class Reconstruction:
    """A stitched object and where it came from.

    ``positions_px`` are ``[y, x]`` in the pixel frame of ``object``; adding
    ``frame_offset_px`` gives positions in the scan's original frame.
    """

    object: np.ndarray  # complex64 (H, W)
    positions_px: np.ndarray  # (n, 2)
    weight: np.ndarray  # float32 (H, W): stitching weight (coverage)
    backend: str
    frame_offset_px: np.ndarray = field(default_factory=lambda: np.zeros(2))
    timings_s: dict = field(default_factory=dict)
    # the probe the prediction assumed (the model's; its scale is the model's, not the scan's:
    # peak amplitude model.probe_scale / 4, 1.0 by default, when training started)
    probe: np.ndarray | None = None
    refined_object: np.ndarray | None = None
    # with refine_probe: the refined probe in the scan's units (like its probeGuess, which
    # the refinement starts from), the probe refined_object explains the counts with
    refined_probe: np.ndarray | None = None
    refined_positions_px: np.ndarray | None = None
    # with infer's position correction (position_refine_epochs): the scan's positions
    # before it, in the frame of ``object`` (``positions_px`` are the corrected ones); what
    # `evaluate` recognises the scan by
    measured_positions_px: np.ndarray | None = None
    refinement_history: list = field(default_factory=list)
    # the refinement's scan-level numbers: intensity_scale, counts_per_photon, step_scale
    refinement_info: dict = field(default_factory=dict)
    metrics: dict | None = None
    # the generator's compute dtype (execution.precision): float32, bfloat16 or float16
    network_dtype: str = "float32"
    # groups per forward pass of the network (InferenceConfig.batch_size, 'auto' resolved)
    network_batch_size: int | None = None
    # passes the physics prior ran (None: a model without a prior); more than the model's
    # when InferenceConfig.prior_extra_iterations or prior_converge_passes ran
    prior_passes: int | None = None
    # the FRC-filtered prior's half-scan agreement, which decided whether the extra
    # passes ran, or after its last kept converge passes (physics.prior_frc.agreement;
    # None without the filter)
    prior_agreement: float | None = None
    # whether the prior's amplitude was filtered by its half-scan FRC (None: a model without
    # a prior; off where model.prior_frc_min_coverage left the halves out)
    prior_frc_filter: bool | None = None
    # the phase momentum the prior's passes ran with (InferenceConfig.prior_phase_momentum
    # where the halves agreed or a plain converge block was kept, else 0; None: a model
    # without a prior)
    prior_phase_momentum: float | None = None
    # the phase synchronisation the stitching ran: 'global', 'waves' (asked for, or a scan
    # too large for 'global') or 'off' (InferenceConfig.phase_sync_method)
    phase_sync: str = "waves"
    # the stitching weight used: 'probe' or 'uniform' (InferenceConfig.stitch_weight, 'auto'
    # resolved by inference.stitching.resolved_stitch_weight)
    stitch_weight: str = "probe"
    # the phase the physics prior's passes started from: 'flat' or 'com' (None: a model
    # without a prior; InferenceConfig.prior_start, else model.prior_start)
    prior_start: str | None = None
    # whether the prior's passes ran the centre-of-mass phase correction (None: a model
    # without a prior; InferenceConfig.prior_com_correction, else the model's)
    prior_com_correction: bool | None = None
    # the over-relaxation of the prior's updates (None: a model without a prior;
    # InferenceConfig.prior_step_scale, else model.prior_step_scale)
    prior_step_scale: float | None = None
    # plain passes the prior's whole-scan estimate ended with (None: a model without a
    # prior; InferenceConfig.prior_settle_passes, else model.prior_settle_passes)
    prior_settle_passes: int | None = None
    # mini-batch orders the prior's whole-scan estimate averaged (None: a model without a
    # prior; 1 with the FRC filter's halves; InferenceConfig.prior_orders, else
    # model.prior_orders, else models.scan_prior.default_orders)
    prior_orders: int | None = None
    # whether the mean of the orders had its amplitude filtered by their FRC, and their
    # agreement (None: a model without a prior; InferenceConfig.prior_orders_filter, else
    # model.prior_orders_filter; False where one order ran)
    prior_orders_filter: bool | None = None
    prior_orders_agreement: float | None = None
    # the heavy-ball momentum of the prior's passes (None: a model without a prior;
    # model.prior_object_momentum)
    prior_object_momentum: float | None = None

    @property
    def amplitude(self) -> np.ndarray:
        return np.abs(self.object).astype(np.float32)

    @property
    def phase(self) -> np.ndarray:
        return np.angle(self.object).astype(np.float32)


def canvas_for(scan: Scan) -> tuple[Scan, np.ndarray, tuple[int, int]]:
    """The scan in its object frame, the frame offset and the canvas shape."""
    framed = scan.in_object_frame(margin=CANVAS_MARGIN_PX)
    offset = scan.positions_px[0] - framed.positions_px[0]
    shape = framed.object_shape(margin=CANVAS_MARGIN_PX)
    return framed, offset, shape


def inference_groups(positions_px: np.ndarray, gridsize: int, cfg: InferenceConfig):
    """The groups a model predicts for a scan (`InferenceConfig` n_groups, group_cover)."""
    from ptychopinn.config.schema import MAX_GROUPS_PER_PATTERN
    from ptychopinn.grouping import cover_groups, group_neighbors

    n = len(positions_px)
    k = max(cfg.neighbor_count, gridsize * gridsize)
    if cfg.n_groups is None and cfg.group_cover:
        return cover_groups(positions_px, gridsize, neighbor_count=k)
    if cfg.n_groups is not None and cfg.n_groups > MAX_GROUPS_PER_PATTERN * n:
        from ptychopinn.errors import ConfigError

        raise ConfigError(
            f"n_groups (--n-groups) is {cfg.n_groups}, but the scan has {n} patterns; expected "
            f"at most {MAX_GROUPS_PER_PATTERN} groups per pattern ({MAX_GROUPS_PER_PATTERN * n})"
            f": more only predict each pattern again (leave it unset to cover the scan once)."
        )
    groups = group_neighbors(
        positions_px, gridsize, neighbor_count=k, n_groups=cfg.n_groups, seed=cfg.seed,
        oversample=cfg.n_groups is not None and cfg.n_groups > n,
    )
    covered = np.unique(groups.indices).size
    if covered < n:
        log.warning("n_groups=%d predicts %d of the scan's %d patterns (groups of %d): the "
                    "others leave their part of the object empty; leave n_groups unset to "
                    "cover the scan.", cfg.n_groups, covered, n, gridsize * gridsize)
    return groups


def _device(cfg: InferenceConfig) -> torch.device:
    acc = cfg.execution.accelerator
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from ptychopinn.errors import ConfigError

            raise ConfigError("execution.accelerator is 'gpu' but torch sees no CUDA device.")
        return torch.device("cuda")
    return torch.device("cpu")


def settle_advice(mcfg, cfg: InferenceConfig, model_path) -> str | None:  # noqa: ANN001
    """Advice for a model whose featureless prior recipe ends without plain passes
    (``model.prior_settle_passes`` 0: bundles from before they existed, or set by hand)
    when inference does not set them either; else None (both backends log it)."""
    if (mcfg.prior_recipe != "featureless" or mcfg.prior_settle_passes
            or cfg.prior_settle_passes is not None):
        return None
    return (f"{model_path}: its featureless prior recipe ends without plain passes "
            "(model.prior_settle_passes 0: a bundle from before 2026-12-05, or set by hand); "
            "--prior-settle-passes 4 (InferenceConfig.prior_settle_passes) raised such models' "
            "amplitude SSIM by 0.01-0.08 on Gaussian-probe scans, and retraining with train's "
            "defaults keeps them (docs/usage.md, 'Featureless probes'; docs/benchmarks.md).")


def check_prior_options(mcfg, cfg: InferenceConfig, model_path) -> None:  # noqa: ANN001
    """Reject inference prior options the model cannot take (`ConfigError`): the FRC
    filter, the centre-of-mass start, an over-relaxation, settling passes, several
    mini-batch orders and their FRC filter need the scan prior (both backends)."""
    from ptychopinn.errors import ConfigError

    if not mcfg.prior_iterations or mcfg.prior_scope == "scan":
        return
    for asked, option in ((cfg.prior_frc_filter, "prior_frc_filter=true"),
                          (cfg.prior_com_correction, "prior_com_correction=true"),
                          (cfg.prior_start == "com", "prior_start='com'"),
                          (cfg.prior_step_scale not in (None, 1.0),
                           f"prior_step_scale={cfg.prior_step_scale}"),
                          (bool(cfg.prior_settle_passes),
                           f"prior_settle_passes={cfg.prior_settle_passes}"),
                          ((cfg.prior_orders or 1) > 1, f"prior_orders={cfg.prior_orders}"),
                          (cfg.prior_orders_filter, "prior_orders_filter=true")):
        if asked:
            raise ConfigError(f"{option} needs a model with the scan prior; {model_path} has "
                              f"model.prior_scope {mcfg.prior_scope!r}.")


def reconstruct_pytorch(loaded, scan: Scan, cfg: InferenceConfig | None = None) -> Reconstruction:
    """Predict every group's patches and stitch them into the object.

    Parameters
    ----------
    loaded
        A `ptychopinn.bundle.pytorch.LoadedModel`.
    scan
        The scan to reconstruct (its N must match the model's).
    cfg
        Inference options (defaults if None).
    """
    from ptychopinn.errors import ConfigError
    from ptychopinn.inference.stitching import (
        probe_weight,
        resolved_stitch_weight,
        stitch_groups,
        sync_method,
    )
    from ptychopinn.training.data import input_scale_of

    cfg = cfg or InferenceConfig()
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
    device = _device(cfg)
    net_dtype = network_dtype(cfg.execution.precision, device)  # refused before any work
    bs = network_batch_size(cfg.batch_size, mcfg.N, net_dtype, device)
    model = model.to(device).eval()
    framed, offset, shape = canvas_for(scan)
    groups = inference_groups(framed.positions_px, mcfg.gridsize, cfg)
    from ptychopinn.inference.stitching import radial_order

    amps = torch.from_numpy(framed.diffraction)
    pos = torch.from_numpy(framed.positions_px)
    if mcfg.subpixel == "probe_shift":  # the network's patches are whole-pixel windows
        from ptychopinn.physics.geometry import whole_pixel_windows

        pos, _ = whole_pixel_windows(pos, mcfg.N)
    # groups grow outwards from the centre so phase synchronisation can chain them
    order = radial_order(groups.centers_px)
    idx = torch.from_numpy(groups.indices[order])
    n_groups = idx.shape[0]
    scale = input_scale_of(framed.diffraction)
    n = mcfg.N

    # the physics prior is a per-pattern function (of the pattern and its scan
    # neighbours): compute it once per pattern (a pattern sits in ~C groups)
    from ptychopinn.models.scan_prior import ScanPrior

    t_prior = time.perf_counter()
    valid = None
    if framed.bad_pixel_mask is not None:
        valid = torch.from_numpy(~framed.bad_pixel_mask)
    with torch.inference_mode():
        prior = ScanPrior.for_model(model, amps, framed.positions_px, valid=valid,
                                    iterations=cfg.prior_iterations,
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

    def predict(chunk: slice) -> torch.Tensor:
        ii = idx[chunk]
        with torch.inference_mode():
            x = amps[ii].to(device, non_blocking=True)
            pr = None if prior is None else prior(ii).to(device, non_blocking=True)
            # on a GPU the patches stay there: stitching runs on the same device;
            # only the generator's convolutions follow execution.precision
            with network_autocast(net_dtype, device):
                return model.predict_patches(x, scale, pr)

    cache_ok = n_groups * mcfg.n_channels * n * n * 8 <= _CACHE_LIMIT_BYTES
    cache: list[torch.Tensor] = []
    t_pred = time.perf_counter()
    if cache_ok:
        for s in range(0, n_groups, bs):
            cache.append(predict(slice(s, s + bs)))
    t_pred = time.perf_counter() - t_pred

    def source():
        for k, s in enumerate(range(0, n_groups, bs)):
            sl = slice(s, min(s + bs, n_groups))
            patches = cache[k] if cache_ok else predict(sl)
            yield torch.arange(sl.start, sl.stop), patches, pos[idx[sl]]

    support = model.physics.support.cpu()
    stitch_weight = resolved_stitch_weight(cfg.stitch_weight, prior)
    if stitch_weight == "probe":
        ill = model.physics.illumination(model.probe.detach().cpu())
        weight = probe_weight(ill, cfg.stitch_flat_above) * support
    else:
        weight = support
    t_st = time.perf_counter()
    sync = sync_method(cfg.phase_sync, cfg.phase_sync_method, n_groups * mcfg.n_channels, n)
    obj, den, _ = stitch_groups(source, n_groups, shape, weight, sync=sync,
                                polish_passes=cfg.phase_sync_polish, device=device)
    obj, den = obj.cpu(), den.cpu()
    t_st = time.perf_counter() - t_st
    return Reconstruction(
        object=obj.numpy().astype(np.complex64),
        positions_px=framed.positions_px.copy(),
        weight=den.numpy().astype(np.float32),
        backend="pytorch",
        frame_offset_px=np.asarray(offset, dtype=np.float64),
        probe=model.probe.detach().cpu().numpy().astype(np.complex64),
        timings_s={
            "prior": t_prior,
            "predict": t_pred,
            "stitch": t_st,
            "total": time.perf_counter() - t0,
            "n_patterns": scan.n_patterns,
            "n_groups": int(n_groups),
        },
        network_dtype=str(net_dtype or torch.float32).removeprefix("torch."),
        network_batch_size=bs,
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
    )


def sampled_data_consistency(recon: Reconstruction, scan: Scan, max_patterns: int) -> dict:
    """`metrics.data_consistency` of the object (with the probe the network assumed) and
    of the refined object, if any (with the refined probe and positions, else the
    scan's), on up to ``max_patterns`` patterns spread evenly over the scan."""
    from ptychopinn.metrics import data_consistency

    n = scan.n_patterns
    idx = np.unique(np.linspace(0, n - 1, min(n, max_patterns)).round().astype(int))
    sub = scan.subset(idx)
    out = {"reconstruction": data_consistency(sub, recon.object, recon.positions_px[idx],
                                              recon.probe)}
    if recon.refined_object is not None:
        pos = (recon.positions_px if recon.refined_positions_px is None
               else recon.refined_positions_px)
        out["refined"] = data_consistency(sub, recon.refined_object, pos[idx], recon.refined_probe)
    return out


def poor_fit_warning(fits: dict) -> str | None:
    """A warning when `sampled_data_consistency`'s ``fits`` say the final object (the
    refined one when there is one) explains the measured counts poorly (deviance over its
    noise floor above `POOR_FIT_RATIO`), else None."""
    which = "refined" if "refined" in fits else "reconstruction"
    ratio = fits.get(which, {}).get("deviance_ratio")
    if ratio is None or not ratio > POOR_FIT_RATIO:
        return None
    advice = ("more refinement epochs may help" if which == "refined" else
              "refine it against the counts (--refine-epochs 40; InferenceConfig.refine_epochs), "
              "which fixes this where the network's input, the scan prior, did not converge "
              "(e.g. under a smooth probe without rings or structure; for such a probe a model "
              "trained with --set model.prior_recipe=featureless converges its prior further, "
              "docs/usage.md, 'Featureless probes')")
    return (f"the {'refined ' if which == 'refined' else ''}object explains the measured counts "
            f"poorly: Poisson deviance {ratio:.1f} times its photon-noise floor (above "
            f"{POOR_FIT_RATIO:g}; well-reconstructed simulated scans give 1.0-1.4, measured data "
            f"with unmodelled effects 2-3.5); {advice}.")


OUTPUT_FILES = ("reconstruction.npz", "metrics.json")
"""What `write_outputs` writes besides its figures (``*.png``)."""


def check_outputs_spare(out_dir: str | Path, path: str | os.PathLike | None,
                        what: str = "--data") -> None:
    """`OutputPathError` when writing the outputs into ``out_dir`` would replace the input
    file ``path`` (a scan named reconstruction.npz in the output folder was overwritten)."""
    if path is None:
        return
    p, out = Path(path).resolve(), Path(out_dir).resolve()
    if p.parent == out and (p.name in OUTPUT_FILES or p.suffix == ".png"):
        from ptychopinn.errors import OutputPathError

        raise OutputPathError(
            f"{what} {path}: the outputs written into {out_dir} would replace it "
            f"({p.name}); expected an input outside the output folder's own file names "
            f"({', '.join(OUTPUT_FILES)}, *.png). Give another --output-dir or rename the input."
        )


def write_outputs(
    recon: Reconstruction,
    out_dir: str | Path,
    *,
    scan: Scan | None = None,
    figures: bool = True,
    data_consistency_patterns: int = 0,
) -> dict[str, Path]:
    """Write ``reconstruction.npz``, the figures and ``metrics.json`` (scores against
    the truth when ``scan`` has one; the fit to ``scan``'s counts on up to
    ``data_consistency_patterns`` patterns when that is > 0)."""
    from ptychopinn.data.npz import atomic_savez

    if scan is not None and not scan.source.startswith("<"):
        check_outputs_spare(out_dir, scan.source, "the scan")
    out = ensure_dir(out_dir, "output folder")
    arrays = {
        "object": recon.object.astype(np.complex64),
        "amplitude": recon.amplitude,
        "phase": recon.phase,
        "positions_px": recon.positions_px.astype(np.float64),
        "frame_offset_px": np.asarray(recon.frame_offset_px, dtype=np.float64),
        "weight": recon.weight.astype(np.float32),
        "backend": np.asarray(recon.backend),
        "network_dtype": np.asarray(recon.network_dtype),
    }
    if recon.measured_positions_px is not None:
        arrays["measured_positions_px"] = recon.measured_positions_px.astype(np.float64)
    if recon.network_batch_size is not None:
        arrays["network_batch_size"] = np.asarray(recon.network_batch_size, dtype=np.int64)
    if recon.prior_passes is not None:
        arrays["prior_passes"] = np.asarray(recon.prior_passes, dtype=np.int64)
    if recon.prior_agreement is not None:
        arrays["prior_agreement"] = np.asarray(recon.prior_agreement, dtype=np.float64)
    if recon.prior_frc_filter is not None:
        arrays["prior_frc_filter"] = np.asarray(recon.prior_frc_filter)
    if recon.prior_phase_momentum is not None:
        arrays["prior_phase_momentum"] = np.asarray(recon.prior_phase_momentum, dtype=np.float64)
    arrays["phase_sync"] = np.asarray(recon.phase_sync)
    arrays["stitch_weight"] = np.asarray(recon.stitch_weight)
    if recon.prior_start is not None:
        arrays["prior_start"] = np.asarray(recon.prior_start)
    if recon.prior_com_correction is not None:
        arrays["prior_com_correction"] = np.asarray(recon.prior_com_correction)
    if recon.prior_step_scale is not None:
        arrays["prior_step_scale"] = np.asarray(recon.prior_step_scale, dtype=np.float64)
    if recon.prior_settle_passes is not None:
        arrays["prior_settle_passes"] = np.asarray(recon.prior_settle_passes, dtype=np.int64)
    if recon.prior_orders is not None:
        arrays["prior_orders"] = np.asarray(recon.prior_orders, dtype=np.int64)
    if recon.prior_orders_filter is not None:
        arrays["prior_orders_filter"] = np.asarray(recon.prior_orders_filter)
    if recon.prior_orders_agreement is not None:
        arrays["prior_orders_agreement"] = np.asarray(recon.prior_orders_agreement,
                                                      dtype=np.float64)
    if recon.prior_object_momentum is not None:
        arrays["prior_object_momentum"] = np.asarray(recon.prior_object_momentum,
                                                     dtype=np.float64)
    if recon.probe is not None:  # the model's normalised probe (see `Reconstruction.probe`)
        arrays["probe"] = np.asarray(recon.probe).astype(np.complex64)
    if recon.refined_object is not None:
        arrays["refined_object"] = recon.refined_object.astype(np.complex64)
        arrays["refined_amplitude"] = np.abs(recon.refined_object).astype(np.float32)
        arrays["refined_phase"] = np.angle(recon.refined_object).astype(np.float32)
        arrays["refinement_loss"] = np.asarray(
            [h["loss"] for h in recon.refinement_history], dtype=np.float64
        )
        for key, value in recon.refinement_info.items():
            arrays[f"refinement_{key}"] = np.float64(value)
    if recon.refined_probe is not None:  # in the scan's units, unlike "probe"
        arrays["refined_probe"] = np.asarray(recon.refined_probe).astype(np.complex64)
    if recon.refined_positions_px is not None:
        arrays["refined_positions_px"] = np.asarray(recon.refined_positions_px, dtype=np.float64)
    files = {"reconstruction": atomic_savez(out / "reconstruction.npz", arrays)}
    pixel_size = scan.pixel_size_m if scan is not None else None
    if figures:
        from ptychopinn.figures import save_object_figures

        for p in save_object_figures(
            recon.object, out, prefix="reconstruction", pixel_size_m=pixel_size
        ):
            files[p.stem] = p
        if recon.refined_object is not None:
            for p in save_object_figures(
                recon.refined_object, out, prefix="refined", pixel_size_m=pixel_size
            ):
                files[p.stem] = p
    metrics: dict = {}
    if scan is not None and scan.object is not None:
        from ptychopinn.metrics import evaluate

        n = scan.patch_size
        metrics["reconstruction"] = evaluate(
            recon.object, scan.object, positions_px=recon.positions_px, patch_size=n
        )
        if recon.refined_object is not None:
            metrics["refined"] = evaluate(
                recon.refined_object, scan.object, positions_px=recon.positions_px, patch_size=n
            )
    if scan is not None and data_consistency_patterns > 0:
        metrics["data_consistency"] = sampled_data_consistency(
            recon, scan, data_consistency_patterns
        )
        warning = poor_fit_warning(metrics["data_consistency"])
        if warning is not None:
            log.warning(warning)
            metrics["warnings"] = [warning]
    if metrics:
        from ptychopinn.metrics import write_metrics_json

        metrics["timings_s"] = recon.timings_s
        metrics["backend"] = recon.backend
        recon.metrics = metrics
        files["metrics"] = write_metrics_json(metrics, out / "metrics.json")
    if scan is not None and scan.object is not None:
        n = scan.patch_size
        if figures:
            try:
                from ptychopinn.figures import plot_comparison
                from ptychopinn.metrics import evaluate as _ev

                m, aligned, truth = _ev(
                    recon.object,
                    scan.object,
                    positions_px=recon.positions_px,
                    patch_size=n,
                    return_aligned=True,
                )
                files["comparison"] = plot_comparison(truth, aligned, m, out / "comparison.png")
            except Exception as exc:  # figures never break a reconstruction
                log.warning("comparison figure skipped: %s", exc)
    return files
