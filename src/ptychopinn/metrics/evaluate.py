"""The evaluation pipeline: a reconstruction against a ground-truth object.

`evaluate` crops both objects to the well-illuminated scan region, registers
the reconstruction to the truth with sub-pixel precision, removes the global
phase and the relative phase ramp, matches the amplitude scale, then scores
amplitude and phase (SSIM, PSNR, MAE), the complex NRMSE and the Fourier ring
correlation. `evaluate_files` does the same from the NPZ files written by a
reconstruction and by the simulator (refusing a truth whose scan positions or
object cannot be the reconstruction's), `evaluate_reconstruction_files` for the
network's and the refined object of one file, and `write_metrics_json` saves the
result.

Phase scores use the wrapped difference to the truth: the reconstruction's
phase map is ``angle(truth) + angle(recon * conj(truth))``, so a 2 pi wrap that
the two maps place differently does not count as an error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zipfile
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


def _load(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: {what} file not found.")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p}: not an NPZ file ({what}).")
    try:
        with np.load(p, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{p}: unreadable {what} NPZ ({exc}).") from exc


def _frame_offset(rec: dict, r_obj: np.ndarray, r_pos, t_obj: np.ndarray, t_pos):
    """Offset (y, x) with truth_frame = recon_frame + offset, and how it was found."""
    if "frame_offset_px" in rec:
        off = np.asarray(rec["frame_offset_px"], dtype=np.float64).reshape(-1)
        if off.size != 2 or not np.all(np.isfinite(off)):
            raise DataError(f"'frame_offset_px' must be two finite numbers (y, x); found {off}.")
        return off, "frame_offset_px"
    if r_pos is not None and t_pos is not None and r_pos.shape == t_pos.shape:
        d = t_pos - r_pos
        off = np.median(d, axis=0)
        if np.max(np.abs(d - off)) < 2.0:
            return off, "positions"
    from skimage.registration import phase_cross_correlation

    shape = (r_obj.shape[0] + t_obj.shape[0], r_obj.shape[1] + t_obj.shape[1])
    ref = np.zeros(shape, np.complex128)
    mov = np.zeros(shape, np.complex128)
    ref[: t_obj.shape[0], : t_obj.shape[1]] = t_obj - t_obj.mean()
    mov[: r_obj.shape[0], : r_obj.shape[1]] = r_obj - r_obj.mean()
    off, _, _ = phase_cross_correlation(ref, mov, normalization=None)
    return np.asarray(off, dtype=np.float64), "registration"


#: Largest difference (px) between a truth's scan positions and a reconstruction's
#: (mapped into the truth's frame) that still counts as one scan: float rounding only.
SAME_SCAN_TOL_PX = 0.01


def _check_same_scan(rec_name: str, truth_name: str, r_pos: np.ndarray, t_pos: np.ndarray,
                     off: np.ndarray, source: str) -> None:
    """Refuse a truth whose scan positions are not the reconstruction's (moved by ``off``)."""
    advice = ("The truth must be the scan the reconstruction was made from (its objectGuess, "
              "xcoords and ycoords).")
    if r_pos.shape != t_pos.shape:
        raise DataError(
            f"{truth_name} does not belong to {rec_name}: the truth's scan has {len(t_pos)} "
            f"positions (xcoords/ycoords) but the reconstruction's has {len(r_pos)} "
            f"(positions_px). {advice}"
        )
    d = np.max(np.abs(t_pos - (r_pos + off)), axis=1)
    i = int(np.argmax(d))
    if d[i] > SAME_SCAN_TOL_PX:
        raise DataError(
            f"{truth_name} does not belong to {rec_name}: their scan positions differ by up to "
            f"{d[i]:.3g} px (at most {SAME_SCAN_TOL_PX} px expected): position {i} [y, x] is "
            f"{np.round(t_pos[i], 2).tolist()} in the truth and "
            f"{np.round(r_pos[i] + off, 2).tolist()} in the reconstruction (positions_px plus "
            f"the frame offset {np.round(off, 3).tolist()} from {source}). {advice}"
        )


def _check_covers(rec_name: str, truth_name: str, pos: np.ndarray, n_px: int | None,
                  shape: tuple[int, int]) -> None:
    """Refuse a truth object that does not hold the reconstruction's scanned region."""
    m = 0.0 if n_px is None else n_px / 4
    lo = pos.min(axis=0) - m
    hi = pos.max(axis=0) + m
    if lo.min() < -1.0 or hi[0] > shape[0] or hi[1] > shape[1]:
        raise DataError(
            f"{truth_name} does not cover the region {rec_name} scanned: its probe centres"
            + (f" expanded by N/4 = {m:g} px" if m else "")
            + f" span rows [{lo[0]:.1f}, {hi[0]:.1f}] and columns [{lo[1]:.1f}, {hi[1]:.1f}] "
            f"of the truth's frame, but the truth's objectGuess is {tuple(shape)}. The truth "
            "must be the object of the scan the reconstruction was made from."
        )


def _recon_object(rec: dict, name: str, object_key: str) -> np.ndarray:
    amp_key = object_key.replace("object", "amplitude")
    phase_key = object_key.replace("object", "phase")
    if object_key in rec:
        return _complex2d(rec[object_key], f"{name}: {object_key}")
    if amp_key in rec and phase_key in rec:
        obj = rec[amp_key].astype(np.float64) * np.exp(1j * rec[phase_key].astype(np.float64))
        return _complex2d(obj, f"{name}: {amp_key}/{phase_key}")
    raise DataError(
        f"{name}: missing key {object_key!r} (complex reconstruction); keys found: {sorted(rec)}."
    )


def _evaluate_loaded(rec: dict, tru: dict, rec_name: str, truth_name: str, object_key: str,
                     kwargs: dict) -> dict | tuple[dict, np.ndarray, np.ndarray]:
    r_obj = _recon_object(rec, rec_name, object_key)
    if "objectGuess" not in tru:
        raise DataError(
            f"{truth_name}: missing key 'objectGuess' (the true complex object); "
            f"keys found: {sorted(tru)}."
        )
    t_obj = _complex2d(tru["objectGuess"], f"{truth_name}: objectGuess")
    r_pos = np.asarray(rec["positions_px"], np.float64) if "positions_px" in rec else None
    if r_pos is not None and (r_pos.ndim != 2 or r_pos.shape[1] != 2 or not len(r_pos)):
        raise DataError(f"{rec_name}: 'positions_px' must be (n, 2) [y, x]; found {r_pos.shape}.")
    t_pos = None
    if "xcoords" in tru and "ycoords" in tru:
        t_pos = np.stack([np.ravel(tru["ycoords"]), np.ravel(tru["xcoords"])], 1).astype(float)
    # the truth is known to belong to the reconstruction only when both hold the scan
    t_given = t_pos
    verified = r_pos is not None and t_pos is not None
    if verified and r_pos.shape != t_pos.shape:  # (refused before any registration)
        _check_same_scan(rec_name, truth_name, r_pos, t_pos, np.zeros(2), "")
    off, source = _frame_offset(rec, r_obj, r_pos, t_obj, t_pos)
    log.info("reconstruction frame offset %s px (from %s)", off, source)
    if verified:
        _check_same_scan(rec_name, truth_name, r_pos, t_pos, off, source)

    n_px = None
    if "probeGuess" in tru:
        n_px = int(np.shape(tru["probeGuess"])[-1])
    elif "probe" in rec:
        n_px = int(np.shape(rec["probe"])[-1])
    if r_pos is not None:
        _check_covers(rec_name, truth_name, r_pos + off, n_px, t_obj.shape)

    io = np.round(off).astype(int)
    frac = off - io
    if np.any(np.abs(frac) > 1e-6):
        r_obj = align.shift_image(r_obj, frac)
    Ht, Wt = t_obj.shape
    placed = np.zeros_like(t_obj)
    y0, x0 = max(0, io[0]), max(0, io[1])
    y1, x1 = min(Ht, io[0] + r_obj.shape[0]), min(Wt, io[1] + r_obj.shape[1])
    if y1 - y0 < 8 or x1 - x0 < 8:
        raise DataError(
            f"{rec_name}: the reconstruction (shape {r_obj.shape}, offset {off}) "
            f"barely overlaps the truth {t_obj.shape} of {truth_name}."
        )
    placed[y0:y1, x0:x1] = r_obj[y0 - io[0] : y1 - io[0], x0 - io[1] : x1 - io[1]]

    if t_pos is None and r_pos is not None:
        t_pos = r_pos + off
    crop = kwargs.pop("crop", None)
    if crop is None:
        rows, cols = slice(y0, y1), slice(x0, x1)
        if t_pos is not None and n_px is not None:
            ir, ic = align.illuminated_region((Ht, Wt), t_pos, n_px)
            rows = slice(max(y0, ir.start), min(y1, ir.stop))
            cols = slice(max(x0, ic.start), min(x1, ic.stop))
        else:
            log.warning("no positions or probe size: scoring the whole overlap of the objects.")
        crop = (rows, cols)
    out = evaluate(placed, t_obj, crop=crop, **kwargs)
    metrics = out[0] if isinstance(out, tuple) else out
    metrics["frame_offset_px"] = [float(v) for v in off]
    metrics["frame_offset_source"] = source
    if not verified and metrics.get("rejected_shift_px") is not None:
        missing = (f"{truth_name} has no scan positions (xcoords/ycoords)" if t_given is None
                   else f"{rec_name} has no positions_px")
        msg = (
            f"{rec_name} ({object_key}) could not be registered to the truth of {truth_name}: "
            f"the best shift, {np.round(metrics['rejected_shift_px'], 2).tolist()} px, exceeds "
            f"max_shift_px={kwargs.get('max_shift_px', 8.0)}, and {missing} to show that the "
            "truth belongs to this reconstruction. If it is another scan's object, these "
            "scores are meaningless."
        )
        log.warning(msg)
        metrics["warnings"] = [msg]
    return out


def evaluate_files(
    reconstruction_npz: str | os.PathLike,
    truth_npz: str | os.PathLike,
    *,
    object_key: str = "object",
    **kwargs: Any,
) -> dict | tuple[dict, np.ndarray, np.ndarray]:
    """Evaluate a ``reconstruction.npz`` against a contract NPZ holding ``objectGuess``.

    The reconstruction file holds ``object`` (complex; or ``amplitude`` and
    ``phase``) and optionally ``positions_px`` (n, 2) and ``frame_offset_px``
    (y, x) with ``truth_frame = recon_frame + offset``. Without the offset it is
    taken from the positions (when both files hold the same scan) or found by
    cross-correlation. The scores are taken in the truth's frame, inside the
    region illuminated by the truth's positions (N from ``probeGuess``).
    ``object_key`` picks another object of the file (``"refined_object"``, or
    ``refined_amplitude`` / ``refined_phase``) in the same frame.
    Keyword arguments go to `evaluate`. The result adds ``frame_offset_px``
    and ``frame_offset_source``, and ``warnings`` when the registration failed
    and the files cannot show that the truth belongs to the reconstruction.

    Raises
    ------
    DataError
        When a file or key is missing, or the truth cannot be the reconstruction's:
        both files hold scan positions (``positions_px``; ``xcoords``/``ycoords``)
        and they are not the same (up to the frame offset, within
        `SAME_SCAN_TOL_PX`), or the truth object does not cover the reconstruction's
        scanned region (its probe centres plus N/4).
    """
    rec = _load(reconstruction_npz, "reconstruction")
    tru = _load(truth_npz, "truth")
    return _evaluate_loaded(rec, tru, str(reconstruction_npz), str(truth_npz), object_key,
                            dict(kwargs))


def evaluate_reconstruction_files(
    reconstruction_npz: str | os.PathLike, truth_npz: str | os.PathLike, **kwargs: Any
) -> dict:
    """`evaluate_files` of each object of a ``reconstruction.npz`` of ``ptychopinn infer``.

    Returns ``{"reconstruction": ...}`` (``object``) plus ``"refined": ...``
    (``refined_object``) when the file holds a refined object, the layout of
    infer's ``metrics.json``. With ``return_aligned=True`` each value is the
    ``(metrics, recon_crop, truth_crop)`` tuple of `evaluate`.
    """
    rec = _load(reconstruction_npz, "reconstruction")
    tru = _load(truth_npz, "truth")
    names = [("reconstruction", "object")]
    if "refined_object" in rec or ("refined_amplitude" in rec and "refined_phase" in rec):
        names.append(("refined", "refined_object"))
    return {
        name: _evaluate_loaded(rec, tru, str(reconstruction_npz), str(truth_npz), key,
                               dict(kwargs))
        for name, key in names
    }


def write_metrics_json(metrics: dict, path: str | os.PathLike) -> Path:
    """Write ``metrics`` as strict JSON (NaN/Inf become null), atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(metrics), indent=2, allow_nan=False)
    return atomic_write_text(p, text + "\n")
