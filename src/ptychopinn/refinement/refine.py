"""Physics refinement: optimise the object's pixels against the measured counts.

Owns `refine` (a scan plus an optional starting object -> `RefineResult`) and
`RefineResult`. The forward model is the package's one (`steps.model_counts`:
by default the whole-pixel window times the sub-pixel-shifted probe, as the
simulator; or bilinear `physics.geometry.extract_patches`) and the reported
loss is its Poisson NLL (`physics.losses.poisson_nll`).

Algorithm (one epoch = every position once, in seeded random mini-batches):
extract the batch's patches, compute the expected counts, back-propagate the
data term and update the object by a preconditioned (parallel PIE) step or by
Adam (see `steps`). Optionally the probe (from ``probe_start_epoch``) and the
positions (from ``position_start_epoch``, see `positions.PositionCorrector`).
Before the first epoch the global intensity factor ``c`` of
``lam = c * I(initial object)`` is set to its Poisson maximum-likelihood value
``sum(k) / sum(I)`` and folded into the object amplitude (``sqrt(c)``), which
removes the arbitrary amplitude scale of a network's object or of a flat start.

Measured choice (``benchmarks/bench_refinement.py``: N=64, 625 positions,
flat start, one CPU thread, about 0.3 s per epoch): the PIE step on the
amplitude data term reaches amplitude SSIM 0.95 after 5 epochs (about 1.5 s)
and 0.965 (phase 0.983) at 40 epochs with 1e6 photons per pattern; Adam
(``learning_rate=0.02``) needs about 10 epochs for 0.95; the Poisson data term
in the PIE step is slower (0.94 at 20 epochs with half the step). The plateau schedule
(`schedule`) matters at low dose: with 1e4 photons a constant step hovers at
SSIM 0.65, the schedule settles at 0.715 (phase 0.845) in about 25 epochs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ptychopinn.data.scan import Scan
from ptychopinn.errors import ConfigError
from ptychopinn.refinement.checks import check_inputs

log = logging.getLogger(__name__)

Method = Literal["pie", "adam"]
_PRELOAD_LIMIT_BYTES = 1 << 30
# the noise floor is re-estimated every this many epochs (it moves slowly with the
# expected counts; `steps.expected_deviance` costs about a fifth of an epoch)
_FLOOR_EVERY = 4
# photon-sparse data (`steps.counts_per_photon` below this): object step scaled by
# counts_per_photon / SPARSE_COUNTS (at least SPARSE_MIN_STEP of it), momentum off
SPARSE_COUNTS = 3.0
SPARSE_MIN_STEP = 0.1


@dataclass
class RefineResult:
    """Outcome of `refine`.

    ``object`` complex64 ``(H, W)`` and ``positions_px`` float64 ``(n, 2)``
    ``[y, x]`` share the pixel frame of the starting object; ``probe`` is
    complex64 ``(M, N, N)``; ``history`` holds one dict per epoch (``epoch``,
    ``loss`` = mean normalised Poisson NLL, ``seconds`` since the start, and
    ``position_rms_px`` when positions are refined); ``intensity_scale`` is the
    factor ``c`` folded into the object amplitude as ``sqrt(c)``;
    ``positions_px + frame_offset_px`` are positions in the scan's frame
    (the offset is non-zero only for a flat start on a shifted canvas);
    ``counts_per_photon`` is `steps.counts_per_photon` of the scan (NaN when
    not measured or not counts) and ``step_scale`` the factor the
    photon-sparse rule put on the object step (1: not applied).
    """

    object: np.ndarray
    probe: np.ndarray
    positions_px: np.ndarray
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    intensity_scale: float = 1.0
    frame_offset_px: np.ndarray = field(default_factory=lambda: np.zeros(2))
    counts_per_photon: float = float("nan")
    step_scale: float = 1.0


def _initial_state(
    scan: Scan, initial_object: np.ndarray | None, positions_px: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Starting object, positions and frame offset (scan frame - object frame)."""
    if initial_object is None:
        from ptychopinn.inference.reconstruct import canvas_for

        framed, offset, shape = canvas_for(scan)
        pos = framed.positions_px if positions_px is None else positions_px
        return np.ones(shape, dtype=np.complex64), np.asarray(pos), np.asarray(offset, float)
    pos = scan.positions_px if positions_px is None else positions_px
    return np.asarray(initial_object), np.asarray(pos), np.zeros(2)


def refine(
    scan: Scan,
    initial_object: np.ndarray | None = None,
    *,
    epochs: int = 20,
    batch_size: int = 64,
    learning_rate: float = 1.0,
    refine_probe: bool = False,
    refine_positions: bool = False,
    probe: np.ndarray | None = None,
    positions_px: np.ndarray | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    intensity_scale: float | None = None,
    callback: Callable[[int, dict, np.ndarray], bool | None] | None = None,
    method: Method = "pie",
    fit: Literal["amplitude", "poisson"] = "amplitude",
    alpha: float = 0.1,
    probe_learning_rate: float | None = None,
    probe_start_epoch: int = 2,
    position_method: Literal["adam", "gauss_newton"] = "adam",
    position_learning_rate: float = 0.3,
    position_start_epoch: int = 1,
    position_keep_linear: bool = False,
    adaptive_step: bool = True,
    momentum: float = 0.0,
    momentum_amplitude: bool = True,
    phase_only_epochs: int = 0,
    restart_at_release: bool = True,
    noise_floor: bool = False,
    floor_after_epochs: int = 0,
    subpixel: Literal["bilinear", "probe_shift"] = "probe_shift",
    sparse_counts: bool = True,
    preconditioner: Literal["batch", "scan"] = "batch",
) -> RefineResult:
    """Refine an object (and optionally probe and positions) against a scan.

    Parameters
    ----------
    scan
        The measured scan; counts are ``scan.diffraction ** 2``.
    initial_object
        ``(H, W)`` complex start, in the frame of ``positions_px``; None starts
        from a flat object of ones on the canvas of
        `ptychopinn.inference.reconstruct.canvas_for` (and its positions).
    epochs
        Passes over every position.
    batch_size
        Positions per update (bounds the memory).
    learning_rate
        ``method="pie"``: fraction of the full PIE step (1 is the full step);
        ``method="adam"``: Adam step relative to the mean object amplitude.
    refine_probe, refine_positions
        Also refine the probe / the positions.
    probe
        ``(M, N, N)`` or ``(N, N)`` complex probe; default ``scan.probe``.
    positions_px
        ``(n, 2)`` ``[y, x]`` in the object's frame; default the scan's (or the
        canvas frame's when ``initial_object`` is None).
    device
        Torch device (``"cpu"``, ``"cuda"``).
    seed
        Seed of the mini-batch order.
    progress
        Show a tqdm progress bar over epochs.
    intensity_scale
        Factor ``c`` with ``counts ~ c * I(initial object)``; None estimates it
        (Poisson ML, closed form). It is folded into the object as ``sqrt(c)``.
    callback
        ``callback(epoch, record, object)`` after each epoch (its time is not
        counted); returning True stops the refinement.
    method
        ``"pie"``: preconditioned steps (default, see `steps`); ``"adam"``.
    fit
        Data term that drives the updates: ``"amplitude"`` (variance-stabilised
        Poisson, bounded gradient; default) or ``"poisson"``.
    alpha
        rPIE regularisation of the illumination preconditioner (0..1].
    probe_learning_rate
        Probe step: fraction of the PIE step (default 1), or for Adam a factor
        of ``learning_rate * max|P|`` (default 0.2).
    probe_start_epoch, position_start_epoch
        First epoch (0-based) that updates the probe / positions.
    position_method
        ``"adam"`` (one step per epoch, default) or ``"gauss_newton"``
        (per-batch LSQML-like step); see `positions.PositionCorrector`.
    position_learning_rate
        The Adam step in pixels, or the fraction of the Gauss-Newton step.
    position_keep_linear
        Keep a global scale / rotation / shear of the position corrections
        (default: removed after every epoch, as their mean is; see
        `positions.PositionCorrector`).
    adaptive_step
        Halve the object/probe step when the loss stalls (`schedule`).
    momentum
        Epoch-level momentum of the object (as in mPIE): after each epoch
        ``v = momentum * v + (O - O_start)`` and ``O += momentum * v``. 0 (the
        default) is plain PIE. On a scan with a real X-ray-laser probe (Fermat
        spiral, 1e5 photons) 0.8 raised the phase SSIM after 40 epochs from
        0.54 to 0.74 at a small cost in amplitude (0.68 -> 0.67); on the default
        scan it changes nothing (docs/benchmarks.md).
    momentum_amplitude
        With ``momentum > 0``: True moves the whole complex object by the
        momentum; False moves only its phase (after the momentum step the
        amplitude is set back to the epoch's own). On a grf object under a
        zone-plate probe the amplitude moved by the momentum stalled at amp
        SSIM 0.823 for 40 epochs, the phase-only momentum reached 0.848 with the
        same phase (0.885), and the default and real-probe scans were unchanged
        (docs/benchmarks.md, seventeenth session). `ptychopinn infer` passes
        False (`InferenceConfig.refine_momentum_amplitude`).
    phase_only_epochs
        For a start that is already good (a network's object), the first this
        many epochs update only the phase: after each step the amplitude is set
        back to the start's. A network gets the amplitude nearly right and the
        low-frequency phase least right; amplitude updates made while the phase
        is still wrong absorb phase errors. 0: off (right for a flat start).
    restart_at_release
        With ``phase_only_epochs``: the step schedule (``adaptive_step``) starts again
        from the full step at the first epoch that refines the amplitude (none where the
        noise floor held the amplitude in the phase-only epochs). Its cuts in
        the phase-only epochs answered the phase's stall, and by their end they had cut
        the step to 1/16-1/2 of the full step on every scan measured (16), so the amplitude
        then moved slowly. On 13 simulated scans with infer's options (thirty-ninth
        session, `benchmarks/bench_refine_phase_first.py --release-restarts on off`,
        docs/benchmarks.md) the restart raised the amplitude SSIM after 40 epochs by
        0.004-0.071 on seven, left four within 0.002 and lowered it by 0.011 and 0.007 at
        1e4 and 1e5 photons (where refining the amplitude takes it below the network's
        either way); issue 5's target (LSQML-100's SSIMs in half its time) was met on 10
        of them against 8, none lost. False: the schedule carries on (the behaviour
        before).
    noise_floor
        Hold the amplitude (keep refining the phase) from the first epoch whose
        Poisson NLL is at or below its noise floor (if that happens within
        ``phase_only_epochs``, the start's amplitude is never released):
        the NLL the true object would have under counting noise, estimated from
        the current expected counts (`steps.expected_deviance`; re-estimated
        every 4th epoch, the lowest estimate so far kept), plus three standard
        deviations of the epoch's loss at the truth (the deviance's variance is
        about its mean). Below it the amplitude fits noise. The lowest estimate
        is kept because an estimate made from a wrong object can be too high
        (likely from expected counts it puts into dark detector pixels): on the
        grf / zone-plate scan the estimates rose from 0.000725 to 0.000741-0.000748
        once the amplitude was released, against the truth's NLL of 0.000685, and
        would have held the amplitude four epochs later
        (`benchmarks/bench_refine_floor.py`).
        Each epoch's record then has ``amplitude_held``, and until the
        amplitude is held ``noise_floor`` (the floor in use) and, in the epochs
        that re-estimate it, ``noise_floor_estimate`` (that epoch's estimate).
    floor_after_epochs
        With ``noise_floor``: the floor may hold the amplitude only once the amplitude
        has been refined this many epochs (after the phase-only ones); 0 (default) checks
        the floor from the first epoch. On 22 scans 10 changed no verdict of issue 5's
        target and left the amplitude after 40 epochs lower on two (by 0.005-0.006):
        where the network's amplitude is good, the floor holding it early keeps it
        (docs/benchmarks.md, thirty-third session).
    subpixel
        Model of fractional positions: ``"probe_shift"`` (whole-pixel window,
        Fourier-shifted probe: the simulator's default physics) or
        ``"bilinear"`` (object interpolation); see `steps.batch_objective`.
    sparse_counts
        Photon-sparse rule: when the scan's counts per photon
        (`steps.counts_per_photon`, the count-weighted mean expected count of
        a pixel) are below ``SPARSE_COUNTS`` = 3, the object step is scaled by
        ``counts_per_photon / 3`` (at least 0.1) and the momentum is turned
        off. With so few photons per pixel the modulus target ``sqrt(k)`` is
        mostly noise: a full step copies it into the object and momentum
        amplifies it (real X-ray-laser probe, 1e3 and 3e3 photons per pattern,
        0.55 and 1.6 counts per photon: phase SSIM 0.076 -> 0.131 and 0.253 ->
        0.297; at 1e4, 5.7 counts per photon, the full step and momentum are
        better: docs/benchmarks.md). No effect on data that are not integer
        counts, nor on the probe's step.
    preconditioner
        Illumination that divides the PIE object step (``method="pie"``):
        ``"batch"`` (default here; `ptychopinn infer` passes
        `InferenceConfig.refine_preconditioner`, 'scan'), the batch's own positions'
        (`steps.object_illumination`);
        ``"scan"``, the whole scan's at the epoch's probe and positions times the
        batch's share of the positions (`steps.scan_illumination`), the illumination a
        batch has on average, with the step's length solved by least squares
        (`steps.least_squares_step`, as LSQML). The batch's own has the gaps and pile-ups
        of a few random positions; the scan's is smooth, so a pixel's step does not
        depend on which positions share its batch.
    """
    import torch

    from ptychopinn.refinement import steps
    from ptychopinn.refinement.positions import PositionCorrector
    from ptychopinn.refinement.schedule import PlateauSchedule

    _check_options(epochs, batch_size, learning_rate, method, fit, alpha)
    if preconditioner not in ("batch", "scan"):
        raise ConfigError(
            f"refine: 'preconditioner' must be 'batch' or 'scan'; found {preconditioner!r}."
        )
    _check_momentum(momentum)
    if subpixel not in ("bilinear", "probe_shift"):
        raise ConfigError(
            f"refine: 'subpixel' must be 'bilinear' or 'probe_shift'; found {subpixel!r}."
        )
    for name, value in (("phase_only_epochs", phase_only_epochs),
                        ("floor_after_epochs", floor_after_epochs)):
        try:
            ok = not isinstance(value, bool) and int(value) == value and value >= 0
        except (TypeError, ValueError):  # None, a string, ...
            ok = False
        if not ok:
            raise ConfigError(f"refine: '{name}' must be an integer >= 0; found {value!r}.")
    obj_np, pos_np, offset = _initial_state(scan, initial_object, positions_px)
    probe_np = scan.probe if probe is None else probe
    obj_np, probe_np, pos_np = check_inputs(scan, obj_np, probe_np, pos_np)
    n_pat, n = scan.n_patterns, scan.patch_size
    dev = torch.device(device)
    t_start = time.perf_counter()
    step_scale, per_photon = 1.0, float("nan")
    if sparse_counts:
        per_photon = steps.counts_per_photon(scan.diffraction, scan.bad_pixel_mask)
        if per_photon < SPARSE_COUNTS:  # False for NaN (not counts)
            step_scale = max(per_photon / SPARSE_COUNTS, SPARSE_MIN_STEP)
            learning_rate, momentum = learning_rate * step_scale, 0.0
            log.info("refine: photon-sparse data (%.2f counts per photon): object step x %.2f, "
                     "no momentum", per_photon, step_scale)

    obj = torch.from_numpy(obj_np).to(dev)
    pr = torch.from_numpy(probe_np).to(dev)
    valid = None
    if scan.bad_pixel_mask is not None:
        valid = torch.from_numpy(~scan.bad_pixel_mask).to(dev, torch.float32)
    amps = torch.from_numpy(scan.diffraction)
    if dev.type != "cpu" and amps.numel() * 4 <= _PRELOAD_LIMIT_BYTES:
        amps = amps.to(dev)
    corr = PositionCorrector(
        pos_np, obj_np.shape, n, enabled=refine_positions,
        method=position_method, learning_rate=position_learning_rate,
        start_epoch=position_start_epoch, keep_linear=position_keep_linear, device=dev,
    )

    def counts_of(idx: torch.Tensor) -> torch.Tensor:
        a = amps[idx.to(amps.device)].to(dev, non_blocking=True)
        return a.square()

    if intensity_scale is None:
        tot_k = tot_i = 0.0
        with torch.no_grad():
            for s in range(0, n_pat, batch_size):
                idx = torch.arange(s, min(s + batch_size, n_pat), device=dev)
                sk, si = steps.count_sums(obj, pr, corr.batch(idx, -1), counts_of(idx), valid,
                                          subpixel)
                tot_k, tot_i = tot_k + sk, tot_i + si
        intensity_scale = steps.ml_intensity_scale(tot_k, tot_i)
    elif not (math.isfinite(intensity_scale) and intensity_scale > 0):
        raise ConfigError(f"intensity_scale must be a positive number; found {intensity_scale!r}.")
    obj = (obj * math.sqrt(intensity_scale)).requires_grad_(True)
    log.info("refine: intensity scale %.4g folded into the object amplitude", intensity_scale)

    pr = pr.requires_grad_(refine_probe)
    shape = tuple(obj.shape)
    obj_opt = probe_opt = None
    obj_lr = probe_lr = 0.0
    if probe_learning_rate is None:
        probe_learning_rate = 1.0 if method == "pie" else 0.2
    if method == "adam":
        obj_lr = learning_rate * max(float(obj.detach().abs().mean()), 1e-6)
        obj_opt = torch.optim.Adam([obj], lr=obj_lr)
        if refine_probe:
            probe_lr = probe_learning_rate * learning_rate * float(pr.detach().abs().max())
            probe_opt = torch.optim.Adam([pr], lr=probe_lr)

    # amplitude held (only the phase refined): during the first phase_only_epochs
    # (at the start's), and once the fit reaches the noise floor (at that epoch's)
    start_amp = obj.detach().abs().clone() if phase_only_epochs > 0 else None
    floor_amp = None
    floor_estimate = None
    rng = np.random.default_rng(seed)
    schedule = PlateauSchedule(enabled=adaptive_step)
    frac = 1.0
    history: list[dict] = []
    paused = 0.0
    bar = _progress(epochs, progress)
    velocity = None
    scan_ill = None  # preconditioner "scan": the whole scan's illumination
    for epoch in range(epochs):
        start_obj = obj.detach().clone() if momentum > 0 else None
        order = torch.from_numpy(rng.permutation(n_pat)).to(dev)
        probe_on = refine_probe and epoch >= probe_start_epoch
        held_amp = start_amp if epoch < phase_only_epochs else floor_amp
        if restart_at_release and 0 < phase_only_epochs == epoch and floor_amp is None:
            # the amplitude is released (not held at the noise floor reached in the
            # phase-only epochs): the schedule's cuts so far were the phase's
            schedule = PlateauSchedule(enabled=adaptive_step)
            frac = 1.0
        nll_sum = floor_sum = floor_var = 0.0
        estimate_floor = noise_floor and floor_amp is None and (
            floor_estimate is None or epoch % _FLOOR_EVERY == 0
        )
        if method == "pie" and preconditioner == "scan" and (
                scan_ill is None or refine_probe or refine_positions):
            with torch.no_grad():  # at the epoch's probe and positions (fixed: computed once)
                scan_ill = steps.scan_illumination(pr.detach(), corr.current(), shape)
        for s in range(0, n_pat, batch_size):
            idx = order[s : s + batch_size]
            k = counts_of(idx)
            pos = corr.batch(idx, epoch)
            loss, lam, patches = steps.batch_objective(obj, pr, pos, k, valid, fit, subpixel)
            loss.backward()
            corr.after_backward(idx, pos, obj, pr, 2.0 if fit == "poisson" else 1.0)
            nll_sum += steps.reported_nll(lam.detach(), k, valid) * idx.numel()
            if estimate_floor:
                # this batch's expected deviance, weighted as the loss weighs it
                e_sum, k_sum = steps.noise_floor_sums(lam.detach(), k, valid)
                w = idx.numel() / n_pat / max(k_sum, 1e-12)  # the loss's weight of this batch
                floor_sum += e_sum * w
                floor_var += e_sum * w * w
            with torch.no_grad():
                if method == "adam":
                    for opt, lr0 in ((obj_opt, obj_lr), (probe_opt, probe_lr)):
                        if opt is not None:
                            opt.param_groups[0]["lr"] = lr0 * frac
                    obj_opt.step()
                    if probe_on:
                        probe_opt.step()
                else:
                    own = steps.object_illumination(pr.detach(), pos.detach(), shape)
                    obj_step = learning_rate * frac
                    if scan_ill is None:
                        den = steps.rpie_denominator(own, alpha)
                    else:
                        den = steps.rpie_denominator(scan_ill * (idx.numel() / n_pat), alpha)
                        obj_step *= steps.least_squares_step(obj.grad, den, own)
                    steps.pie_step(obj, obj.grad, den, obj_step)
                    if probe_on:
                        pden = steps.rpie_denominator(
                            steps.probe_illumination(patches.detach()), alpha
                        )
                        steps.pie_step(pr, pr.grad, pden, probe_learning_rate * frac)
                if held_amp is not None:
                    obj.mul_(held_amp / obj.abs().clamp_min(1e-12))
            obj.grad = None
            if pr.grad is not None:
                pr.grad = None
        if start_obj is not None:
            with torch.no_grad():  # epoch-level momentum (mPIE-like): v = b v + dO; O += b v
                change = obj.detach() - start_obj
                velocity = change if velocity is None else momentum * velocity + change
                own_amp = None if momentum_amplitude else obj.detach().abs()
                obj.add_(momentum * velocity)
                if own_amp is not None:  # the momentum moves the phase only
                    obj.mul_(own_amp / obj.abs().clamp_min(1e-12))
                if held_amp is not None:
                    obj.mul_(held_amp / obj.abs().clamp_min(1e-12))
        corr.end_epoch(epoch)
        record = {
            "epoch": epoch + 1,
            "loss": nll_sum / n_pat,
            "step": learning_rate * frac,
            "seconds": time.perf_counter() - t_start - paused,
        }
        if noise_floor and floor_amp is None:
            if estimate_floor:
                # the epoch's floor plus 3 standard deviations of the epoch's loss at
                # the truth (not of each batch's: that margin is sqrt(batches) wider)
                estimate = floor_sum + 3.0 * math.sqrt(floor_var)
                record["noise_floor_estimate"] = estimate  # this epoch's, before the min
                floor_estimate = (estimate if floor_estimate is None
                                  else min(floor_estimate, estimate))
            record["noise_floor"] = floor_estimate
            # checked in the phase-only epochs too: a fit already at the floor
            # then never releases the amplitude
            armed = (floor_after_epochs == 0
                     or epoch + 1 >= phase_only_epochs + floor_after_epochs)
            if armed and record["loss"] <= record["noise_floor"]:
                floor_amp = obj.detach().abs().clone()
                log.info("refine: noise floor reached at epoch %d; amplitude held", epoch + 1)
        if noise_floor:
            record["amplitude_held"] = floor_amp is not None
        frac = schedule.update(record["loss"])
        if refine_positions:
            record["position_rms_px"] = corr.rms_shift_px()
        history.append(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4g}")
        if callback is not None:
            t_cb = time.perf_counter()
            stop = callback(epoch + 1, record, obj.detach().cpu().numpy())
            paused += time.perf_counter() - t_cb
            if stop:
                break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t_start - paused
    return RefineResult(
        object=obj.detach().cpu().numpy().astype(np.complex64),
        probe=pr.detach().cpu().numpy().astype(np.complex64),
        positions_px=corr.positions(),
        history=history,
        seconds=seconds,
        intensity_scale=float(intensity_scale),
        frame_offset_px=offset,
        counts_per_photon=per_photon,
        step_scale=step_scale,
    )


def _progress(epochs: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=epochs, desc="refine", unit="epoch", leave=False)


def _check_options(
    epochs: int, batch_size: int, learning_rate: float, method: str, fit: str, alpha: float
) -> None:
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ConfigError(f"refine: 'epochs' must be an integer >= 0; found {epochs!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConfigError(f"refine: 'batch_size' must be an integer >= 1; found {batch_size!r}.")
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ConfigError(f"refine: 'learning_rate' must be > 0; found {learning_rate!r}.")
    if method not in ("pie", "adam"):
        raise ConfigError(f"refine: 'method' must be 'pie' or 'adam'; found {method!r}.")
    if fit not in ("amplitude", "poisson"):
        raise ConfigError(f"refine: 'fit' must be 'amplitude' or 'poisson'; found {fit!r}.")
    if not 0 < alpha <= 1:
        raise ConfigError(f"refine: 'alpha' must be in (0, 1]; found {alpha!r}.")


def _check_momentum(momentum: float) -> None:
    if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
        raise ConfigError(f"refine: 'momentum' must be in [0, 1); found {momentum!r}.")

