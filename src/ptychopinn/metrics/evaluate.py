"""The evaluation pipeline: a reconstruction against a ground-truth object.

`evaluate` crops both objects to the well-illuminated scan region, registers
the reconstruction to the truth with sub-pixel precision, removes the global
phase and the relative phase ramp, matches the amplitude scale, then scores
amplitude and phase (SSIM, PSNR, MAE), the complex NRMSE and the Fourier ring
correlation; `write_metrics_json` saves the result. The same from the NPZ files
written by a reconstruction and by the simulator: `ptychopinn.metrics.evaluate_files`.

Phase scores use the wrapped difference to the truth: the reconstruction's
phase map is ``angle(truth) + angle(recon * conj(truth))``, so a 2 pi wrap that
the two maps place differently does not count as an error.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.atomic import atomic_write_text
from ptychopinn.errors import DataError
from ptychopinn.metrics import align, frc, scores

log = logging.getLogger(__name__)


def _complex2d(arr: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim != 2:
        raise DataError(f"'{name}' must be a 2-D complex object (H, W); found shape {a.shape}.")
    if not np.iscomplexobj(a):
        raise DataError(
            f"'{name}' must be a complex object (amplitude * exp(i phase)); found real dtype "
            f"{a.dtype}. Pass the complex object, not its amplitude or phase."
        )
    if not np.all(np.isfinite(a)):
        raise DataError(f"'{name}' holds NaN/Inf values.")
    return a.astype(np.complex128)


MIN_SIDE_PX = 8
"""The smallest region (per side, in pixels) that `evaluate` scores."""


def _check_shapes(recon_shape: tuple[int, ...], truth_shape: tuple[int, ...]) -> None:
    """The objects' common region must hold at least ``MIN_SIDE_PX`` pixels a side."""
    if min(recon_shape[0], truth_shape[0], recon_shape[1], truth_shape[1]) >= MIN_SIDE_PX:
        return
    common = (min(recon_shape[0], truth_shape[0]), min(recon_shape[1], truth_shape[1]))
    if recon_shape != truth_shape:
        found = (f"the reconstruction's shape {recon_shape} and the truth's shape "
                 f"{truth_shape} differ, and their common region {common} is smaller")
    else:
        found = f"the reconstruction and the truth are {recon_shape}, smaller"
    raise DataError(
        f"evaluate: {found} than the {MIN_SIDE_PX}x{MIN_SIDE_PX} pixels that are scored. "
        "Pass the reconstructed object and the true object of the same scan, in one pixel frame."
    )


def _check_crop(
    crop: tuple[slice, slice], shape: tuple[int, int], given: bool = True
) -> tuple[slice, slice]:
    """Normalise ``crop`` within ``shape``; ``given`` False: it came from the positions."""
    out = []
    for k, s in enumerate(crop):
        a, b, step = s.indices(shape[k])
        if step != 1 or b - a < MIN_SIDE_PX:
            if not given:
                raise DataError(
                    f"evaluate: the illuminated region of 'positions_px' (with 'patch_size') "
                    f"inside the common region {shape} is rows {crop[0].start}:{crop[0].stop}, "
                    f"columns {crop[1].start}:{crop[1].stop}; it must be at least "
                    f"{MIN_SIDE_PX} pixels a side. Are the positions in the objects' pixel "
                    "frame?"
                )
            raise DataError(
                f"'crop' must be two contiguous slices of at least {MIN_SIDE_PX} pixels inside "
                f"the common region {shape}; found {crop}."
            )
        out.append(slice(a, b))
    return out[0], out[1]


def _valid_after_shift(crop: tuple[slice, slice], shape: tuple[int, int], shift: np.ndarray):
    """Shrink ``crop`` to pixels that came from inside the moving image."""
    out = []
    for k in range(2):
        lo = max(crop[k].start, int(math.ceil(shift[k])))
        hi = min(crop[k].stop, int(math.floor(shape[k] + shift[k])))
        out.append(slice(lo, hi) if hi - lo >= 8 else crop[k])
    return out[0], out[1]


def _data_range(values: np.ndarray, fallback: float, what: str) -> float:
    r = float(np.ptp(values))
    if r > 1e-12:
        return r
    log.warning("the truth %s is constant; its data range is taken as %g.", what, fallback)
    return fallback


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def evaluate(
    recon: np.ndarray,
    truth: np.ndarray,
    *,
    positions_px: np.ndarray | None = None,
    patch_size: int | None = None,
    crop: tuple[slice, slice] | None = None,
    register: bool = True,
    remove_ramp: bool = True,
    match_scale: bool = True,
    upsample_factor: int = 20,
    max_shift_px: float | None = 8.0,
    return_aligned: bool = False,
) -> dict | tuple[dict, np.ndarray, np.ndarray]:
    """Score a complex reconstruction against the true object.

    Parameters
    ----------
    recon, truth
        Complex ``(H, W)`` objects in one pixel frame (that of ``positions_px``).
        Shapes may differ: the common region ``[0, min H) x [0, min W)`` is used.
    positions_px
        ``(n, 2)`` probe centres ``[y, x]``; with ``patch_size``, the scores are
        taken inside `align.illuminated_region` (centres' box + N/4).
    patch_size
        N, needed with ``positions_px``.
    crop
        Explicit ``(rows, cols)`` region (overrides the positions).
    register
        Sub-pixel register the reconstruction to the truth.
    remove_ramp
        Remove the phase plane of ``angle(recon * conj(truth))``.
    match_scale
        Scale the reconstruction's amplitude by the least-squares factor.
    upsample_factor
        Registration precision is ``1 / upsample_factor`` pixels.
    max_shift_px
        Both objects share a frame, so a registration shift larger than this
        (per axis) is taken as a failed registration (e.g. of a featureless
        reconstruction, whose correlation peak is meaningless) and no shift is
        applied; ``registered`` is then False and ``rejected_shift_px`` holds the
        shift found. None: no limit.
    return_aligned
        Also return the aligned complex crops ``(recon, truth)``.

    Returns
    -------
    dict
        JSON-ready scores: ``amp_ssim``, ``phase_ssim``, ``amp_psnr``,
        ``phase_psnr`` (dB; ``None`` when infinite), ``amp_mae``, ``phase_mae``
        (rad), ``complex_nrmse``, ``amp_data_range``, ``phase_data_range``
        (truth's max - min), ``frc`` (``freq``, ``values``, ``n_per_ring``,
        ``half_bit_threshold`` and the cutoffs of `frc.resolution_cutoffs`),
        ``shift_px`` ``[dy, dx]`` applied to the reconstruction,
        ``phase_offset_rad``, ``phase_ramp_rad_per_px`` ``[a_y, b_x]``,
        ``amp_scale``, ``crop`` ``[[row0, row1], [col0, col1]]``, ``shape``.
    """
    r_in = _complex2d(recon, "recon")
    t_in = _complex2d(truth, "truth")
    _check_shapes(r_in.shape, t_in.shape)
    H, W = min(r_in.shape[0], t_in.shape[0]), min(r_in.shape[1], t_in.shape[1])
    if (H, W) != r_in.shape or (H, W) != t_in.shape:
        log.info("recon %s and truth %s differ; comparing the common region (%d, %d).",
                 r_in.shape, t_in.shape, H, W)
    work = r_in[:H, :W]
    t = t_in[:H, :W]
    given = crop is not None
    if crop is None and positions_px is not None:
        if patch_size is None:
            raise DataError("evaluate: 'patch_size' (N) is needed with 'positions_px'.")
        crop = align.illuminated_region((H, W), positions_px, int(patch_size))
    crop = _check_crop(crop if crop is not None else (slice(None), slice(None)), (H, W), given)

    shift = np.zeros(2)
    rejected = None
    ramp = np.zeros(2)
    aligned = work
    yy = np.arange(H, dtype=np.float64)[:, None]
    xx = np.arange(W, dtype=np.float64)[None, :]
    for _ in range(2 if (register and remove_ramp) else 1):
        if register:
            cand, cand_shift = align.register(t, work, upsample_factor, region=crop)
            if max_shift_px is not None and np.max(np.abs(cand_shift)) > max_shift_px:
                log.info("registration shift %s px exceeds %s px; not applied.",
                         cand_shift, max_shift_px)
                register = False
                rejected = cand_shift
                aligned, shift = work, np.zeros(2)
            else:
                aligned, shift = cand, cand_shift
        if remove_ramp:
            d = aligned[crop] * np.conj(t[crop])
            a, b, _c = align.fit_phase_plane(d)
            plane = np.exp(-1j * (a * yy + b * xx))  # same slope in both frames
            work = work * plane
            aligned = aligned * plane
            ramp += (a, b)
    if register:
        crop = _valid_after_shift(crop, (H, W), shift)
    rc = aligned[crop]
    tc = t[crop]
    phi = float(np.angle(np.sum(rc * np.conj(tc))))
    rc = rc * np.exp(-1j * phi)
    scale = align.match_amplitude_scale(np.abs(rc), np.abs(tc)) if match_scale else 1.0
    rc = rc * scale

    amp_r, amp_t = np.abs(rc), np.abs(tc)
    phase_t = np.angle(tc)
    dphi = np.angle(rc * np.conj(tc))
    phase_r = phase_t + dphi
    amp_range = _data_range(amp_t, 1.0, "amplitude")
    phase_range = _data_range(phase_t, 2 * np.pi, "phase")

    freq, values = frc.fourier_ring_correlation(rc, tc)
    n_ring = frc.ring_pixel_counts(rc.shape)
    metrics = {
        "amp_ssim": scores.ssim(amp_r, amp_t, amp_range),
        "phase_ssim": scores.ssim(phase_r, phase_t, phase_range),
        "amp_psnr": scores.psnr(amp_r, amp_t, amp_range),
        "phase_psnr": scores.psnr(phase_r, phase_t, phase_range),
        "amp_mae": scores.mae(amp_r, amp_t),
        "phase_mae": float(np.mean(np.abs(dphi))),
        "complex_nrmse": scores.complex_nrmse(rc, tc),
        "amp_data_range": amp_range,
        "phase_data_range": phase_range,
        "frc": {
            "freq": freq,
            "values": values,
            "n_per_ring": n_ring,
            "half_bit_threshold": frc.half_bit_threshold(n_ring),
            **frc.resolution_cutoffs(freq, values, n_ring),
        },
        "shift_px": shift,
        "phase_offset_rad": phi,
        "phase_ramp_rad_per_px": ramp,
        "amp_scale": scale,
        "crop": [[crop[0].start, crop[0].stop], [crop[1].start, crop[1].stop]],
        "shape": [int(rc.shape[0]), int(rc.shape[1])],
        "registered": bool(register),
        "ramp_removed": bool(remove_ramp),
    }
    if rejected is not None:
        metrics["rejected_shift_px"] = rejected
    metrics = _jsonable(metrics)
    if return_aligned:
        return metrics, rc.astype(np.complex64), tc.astype(np.complex64)
    return metrics


# ---------------------------------------------------------------- files


def write_metrics_json(metrics: dict, path: str | os.PathLike) -> Path:
    """Write ``metrics`` as strict JSON (NaN/Inf become null), atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(metrics), indent=2, allow_nan=False)
    return atomic_write_text(p, text + "\n")
