"""Scoring the objects of a ``reconstruction.npz`` against the truth of a scan NPZ.

`evaluate_files` places the reconstruction in the truth's frame (its
``frame_offset_px``, or the two scans' positions, or cross-correlation), refuses a truth
whose scan positions or object cannot be the reconstruction's, and scores the two with
`ptychopinn.metrics.evaluate.evaluate` inside the region the truth's positions light;
`evaluate_reconstruction_files` does so for the network's and the refined object of one
file (the layout of infer's ``metrics.json``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from ptychopinn.data.readers import read_npz_arrays
from ptychopinn.errors import DataError
from ptychopinn.metrics import align
from ptychopinn.metrics.evaluate import _complex2d, evaluate

log = logging.getLogger(__name__)


def _file_object(arr, path, key: str) -> np.ndarray:
    """``path``'s object ``key`` as complex128: 2-D, complex, finite and not all zero."""
    try:
        obj = _complex2d(arr, key)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    if not np.any(obj):
        raise DataError(f"{path}: '{key}' is all zero: the object is empty; expected a "
                        "reconstructed object.")
    return obj


def _finite_positions(arr, path, key: str = "positions_px") -> np.ndarray:
    """``path``'s scan positions ``key`` as float64 ``(n, 2)`` [y, x], all finite."""
    pos = np.asarray(arr, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or not len(pos):
        raise DataError(f"{path}: '{key}' must be (n, 2) [y, x]; found {pos.shape}.")
    bad = ~np.all(np.isfinite(pos), axis=1)
    if bad.any():
        raise DataError(f"{path}: '{key}' must hold finite positions; found NaN/Inf at "
                        f"{int(bad.sum())} of its {len(pos)} positions (the first: position "
                        f"{int(np.argmax(bad))}).")
    return pos


def _file_offset(rec: dict, name) -> np.ndarray | None:
    """The file's ``frame_offset_px`` (y, x), checked; None when it has none."""
    if "frame_offset_px" not in rec:
        return None
    off = np.asarray(rec["frame_offset_px"], dtype=np.float64).reshape(-1)
    if off.size != 2 or not np.all(np.isfinite(off)):
        raise DataError(f"{name}: 'frame_offset_px' must be two finite numbers (y, x); "
                        f"found {off}.")
    return off


def _centred_on_lit(obj: np.ndarray) -> np.ndarray:
    """``obj`` less its mean over its lit (non-zero) pixels, zero where unlit: the unlit
    border of a reconstruction's canvas does not then dominate a cross-correlation."""
    lit = obj != 0
    return np.where(lit, obj - obj[lit].mean(), 0)


def _frame_offset(rec: dict, name, r_obj: np.ndarray, r_pos, t_obj: np.ndarray, t_pos):
    """Offset (y, x) with truth_frame = recon_frame + offset, and how it was found."""
    off = _file_offset(rec, name)
    if off is not None:
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
    ref[: t_obj.shape[0], : t_obj.shape[1]] = _centred_on_lit(t_obj)
    mov[: r_obj.shape[0], : r_obj.shape[1]] = _centred_on_lit(r_obj)
    off, _, _ = phase_cross_correlation(ref, mov, normalization=None)
    return np.asarray(off, dtype=np.float64), "registration"


#: Largest difference (px) between a truth's scan positions and a reconstruction's
#: (mapped into the truth's frame) that still counts as one scan: float rounding only.
SAME_SCAN_TOL_PX = 0.01


def _check_same_scan(rec_name: str, truth_name: str, r_pos: np.ndarray, t_pos: np.ndarray,
                     off: np.ndarray, source: str, role: str = "truth") -> None:
    """Refuse a truth (or, ``role="scan"``, a measured scan) whose scan positions are not
    the reconstruction's (moved by ``off``)."""
    advice = ("The truth must be the scan the reconstruction was made from (its objectGuess, "
              "xcoords and ycoords)." if role == "truth" else
              "Give --scan the scan the reconstruction was made from.")
    if r_pos.shape != t_pos.shape:
        raise DataError(
            f"{truth_name} does not belong to {rec_name}: the {role}'s scan has {len(t_pos)} "
            f"positions{' (xcoords/ycoords)' if role == 'truth' else ''} but the "
            f"reconstruction's has {len(r_pos)} (positions_px). {advice}"
        )
    d = np.max(np.abs(t_pos - (r_pos + off)), axis=1)
    i = int(np.argmax(d))
    if d[i] > SAME_SCAN_TOL_PX:
        raise DataError(
            f"{truth_name} does not belong to {rec_name}: their scan positions differ by up to "
            f"{d[i]:.3g} px (at most {SAME_SCAN_TOL_PX} px expected): position {i} [y, x] is "
            f"{np.round(t_pos[i], 2).tolist()} in the {role} and "
            f"{np.round(r_pos[i] + off, 2).tolist()} in the reconstruction (positions_px plus "
            f"the frame offset {np.round(off, 3).tolist()} from {source}). {advice}"
        )


def _uncovered(pos: np.ndarray, n_px: int | None, shape: tuple[int, ...]) -> str | None:
    """Where the probe centres ``pos`` (expanded by N/4) reach outside an object of
    ``shape``, in words; None when they stay inside."""
    m = 0.0 if n_px is None else n_px / 4
    lo = pos.min(axis=0) - m
    hi = pos.max(axis=0) + m
    if lo.min() >= -1.0 and hi[0] <= shape[0] and hi[1] <= shape[1]:
        return None
    return ("probe centres" + (f" expanded by N/4 = {m:g} px" if m else "")
            + f" span rows [{lo[0]:.1f}, {hi[0]:.1f}] and columns [{lo[1]:.1f}, {hi[1]:.1f}]")


def _check_covers(rec_name: str, truth_name: str, pos: np.ndarray, n_px: int | None,
                  shape: tuple[int, int]) -> None:
    """Refuse a truth object that does not hold the reconstruction's scanned region."""
    span = _uncovered(pos, n_px, shape)
    if span:
        raise DataError(
            f"{truth_name} does not cover the region {rec_name} scanned: its {span} "
            f"of the truth's frame, but the truth's objectGuess is {tuple(shape)}. The truth "
            "must be the object of the scan the reconstruction was made from."
        )


def _recon_object(rec: dict, name: str, object_key: str) -> np.ndarray:
    amp_key = object_key.replace("object", "amplitude")
    phase_key = object_key.replace("object", "phase")
    if object_key in rec:
        return _file_object(rec[object_key], name, object_key)
    if amp_key in rec and phase_key in rec:
        obj = rec[amp_key].astype(np.float64) * np.exp(1j * rec[phase_key].astype(np.float64))
        return _file_object(obj, name, f"{amp_key}/{phase_key}")
    raise DataError(
        f"{name}: missing key {object_key!r} (complex reconstruction); keys found: {sorted(rec)}."
    )


def _truth_positions(tru: dict, name: str) -> np.ndarray | None:
    """The truth's scan positions [y, x] from ``xcoords``/``ycoords`` (None without them)."""
    if "xcoords" not in tru or "ycoords" not in tru:
        return None
    x, y = np.ravel(tru["xcoords"]), np.ravel(tru["ycoords"])
    if x.size != y.size or not x.size:
        raise DataError(
            f"{name}: 'xcoords' and 'ycoords' must hold one value per scan position, as many "
            f"of each; found {x.size} xcoords and {y.size} ycoords."
        )
    for key, v in (("xcoords", x), ("ycoords", y)):
        v = v.astype(np.float64)
        if not np.all(np.isfinite(v)):
            raise DataError(f"{name}: '{key}' must hold finite scan positions; found NaN/Inf "
                            f"at {int(np.sum(~np.isfinite(v)))} of its {v.size} positions.")
    return np.stack([y, x], 1).astype(np.float64)


def _evaluate_loaded(rec: dict, tru: dict, rec_name: str, truth_name: str, object_key: str,
                     kwargs: dict) -> dict | tuple[dict, np.ndarray, np.ndarray]:
    r_obj = _recon_object(rec, rec_name, object_key)
    if "objectGuess" not in tru:
        raise DataError(
            f"{truth_name}: missing key 'objectGuess' (the true complex object); "
            f"keys found: {sorted(tru)}."
        )
    t_obj = _file_object(tru["objectGuess"], truth_name, "objectGuess")
    r_pos = _finite_positions(rec["positions_px"], rec_name) if "positions_px" in rec else None
    # the scan is recognised by its measured positions (before infer's position correction)
    id_pos = (_finite_positions(rec["measured_positions_px"], rec_name, "measured_positions_px")
              if "measured_positions_px" in rec and r_pos is not None else r_pos)
    t_pos = _truth_positions(tru, truth_name)
    n_px = None
    if "probeGuess" in tru:
        n_px = int(np.shape(tru["probeGuess"])[-1])
    elif "probe" in rec:
        n_px = int(np.shape(rec["probe"])[-1])
    span = None if r_pos is None else _uncovered(r_pos, n_px, r_obj.shape)
    if span:
        raise DataError(
            f"{rec_name}: '{object_key}' {r_obj.shape} does not cover the region its scan lit: "
            f"the {span} of its frame (positions_px). Expected the whole reconstructed "
            "object, not a crop of it."
        )
    # the truth is known to belong to the reconstruction only when both hold the scan
    t_given = t_pos
    verified = r_pos is not None and t_pos is not None
    if verified and id_pos.shape != t_pos.shape:  # (refused before any registration)
        _check_same_scan(rec_name, truth_name, id_pos, t_pos, np.zeros(2), "")
    off, source = _frame_offset(rec, rec_name, r_obj, r_pos, t_obj, t_pos)
    log.info("reconstruction frame offset %s px (from %s)", off, source)
    if verified:
        _check_same_scan(rec_name, truth_name, id_pos, t_pos, off, source)
    if r_pos is not None:
        _check_covers(rec_name, truth_name, r_pos + off, n_px, t_obj.shape)
    notes = []
    if source == "registration":
        why = ("it has no frame_offset_px or positions_px" if r_pos is None else
               f"it has no frame_offset_px and {truth_name} no scan positions (xcoords/ycoords)")
        notes.append(
            f"{rec_name} ({object_key}): the frame offset {np.round(off, 2).tolist()} px to "
            f"{truth_name} comes from registering the two objects alone ({why}); if it is "
            "wrong, these scores are meaningless: check the comparison figure."
        )

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
        notes.append(msg)
    for msg in notes:
        log.warning(msg)
    if notes:
        metrics["warnings"] = notes
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
    and ``frame_offset_source``, and ``warnings`` when the frame offset came from
    registering the objects alone (``frame_offset_source == "registration"``), or
    when the registration failed and the files cannot show that the truth belongs
    to the reconstruction. Both files may be ``.npz`` or ``.npz.bz2``.

    Raises
    ------
    DataError
        When a file or key is missing or malformed (an object that is not complex,
        2-D, finite and non-zero; scan positions that are not finite), or the truth
        cannot be the reconstruction's: both files hold scan positions
        (``positions_px``; ``xcoords``/``ycoords``) and they are not the same (up to
        the frame offset, within `SAME_SCAN_TOL_PX`), or the truth object does not
        cover the reconstruction's scanned region (its probe centres plus N/4), or
        the reconstruction's object does not cover its own.
    """
    rec = read_npz_arrays(reconstruction_npz, what="reconstruction")
    tru = read_npz_arrays(truth_npz, what="truth")
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
    rec = read_npz_arrays(reconstruction_npz, what="reconstruction")
    tru = read_npz_arrays(truth_npz, what="truth")
    names = [("reconstruction", "object")]
    if "refined_object" in rec or ("refined_amplitude" in rec and "refined_phase" in rec):
        names.append(("refined", "refined_object"))
    return {
        name: _evaluate_loaded(rec, tru, str(reconstruction_npz), str(truth_npz), key,
                               dict(kwargs))
        for name, key in names
    }
