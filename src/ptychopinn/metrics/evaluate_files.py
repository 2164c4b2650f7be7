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
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.errors import DataError
from ptychopinn.metrics import align
from ptychopinn.metrics.evaluate import _complex2d, evaluate

log = logging.getLogger(__name__)


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
