"""How well a reconstruction explains the measured data: no ground truth needed.

For a measured scan there is no true object to score against, but there are the
counts. `data_consistency` runs the package's forward model (the object window
at each position times the probe, sub-pixel remainders by the Fourier shift of
the probe, far field, incoherent modes) and compares the expected counts
``c lam`` with the measured ``k``; ``c = sum k / sum lam`` is the Poisson
maximum-likelihood intensity scale, so reconstructions in any amplitude units
compare fairly. It reports

* ``amplitude_r_factor``: ``sum (sqrt(c lam) - sqrt(k))^2 / sum k``, the usual
  modulus R-factor of ptychography (0 = a perfect fit; Poisson noise alone
  gives about ``1 / (4 * mean counts per lit pixel)``);
* ``poisson_deviance``: the mean half Poisson deviance per detector pixel,
  ``c lam - k log(c lam) - k + k log k`` (the per-pixel term of the training
  and refinement loss);
* ``expected_deviance``: its expectation if the counts were Poisson draws
  from ``c lam`` - the noise floor;
* ``deviance_ratio``: their ratio. About 1 means the reconstruction explains
  the data to within the photon noise; 2 means the misfit is twice what noise
  alone explains. Only meaningful for photon counts (``counts_are_integers``).

Bad detector pixels are left out of every sum. Caveat: amplitude detail the data
barely constrain (e.g. high-frequency amplitude on a weak-amplitude object)
changes these numbers little; see docs/benchmarks.md ("Amplitude smoothness vs
data consistency").
"""

from __future__ import annotations

import numpy as np
import torch

from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError

CACHE_LIMIT_BYTES = 256 << 20
"""Keep the expected counts between the two passes up to this size."""


def data_consistency(
    scan: Scan,
    obj: np.ndarray,
    positions_px: np.ndarray,
    probe: np.ndarray | None = None,
    *,
    chunk: int = 256,
) -> dict:
    """Misfit of ``obj`` (seen by ``probe`` at ``positions_px``) to ``scan``'s counts.

    Parameters
    ----------
    scan
        The measured scan (``scan.diffraction ** 2`` are the counts; its bad
        pixel mask is honoured).
    obj
        ``(H, W)`` complex object.
    positions_px
        ``(n, 2)`` probe centres ``[y, x]`` in ``obj``'s pixel frame, one per
        pattern of the scan in its order (e.g. a reconstruction's
        ``positions_px``).
    probe
        ``(N, N)`` or ``(M, N, N)`` complex probe; default the scan's. Its scale
        does not matter (the intensity scale is fitted).
    chunk
        Patterns per forward batch (memory).

    Returns
    -------
    dict
        ``amplitude_r_factor``, ``poisson_deviance``, ``expected_deviance``,
        ``deviance_ratio``, ``intensity_scale``, ``counts_are_integers``,
        ``n_patterns``, ``n_valid_pixels`` (per pattern).

    Raises
    ------
    DataError
        If the object, probe or positions do not fit the scan (named, with what
        was expected and found).
    """
    from ptychopinn.physics.losses import poisson_deviance
    from ptychopinn.refinement.checks import check_inputs
    from ptychopinn.refinement.steps import expected_deviance, looks_like_counts, model_counts

    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; found {chunk}")
    o, p, pos = check_inputs(
        scan, obj, scan.probe if probe is None else probe, positions_px, who="data_consistency"
    )
    o_t, p_t = torch.from_numpy(o), torch.from_numpy(p)
    valid = None
    if scan.bad_pixel_mask is not None:
        valid = torch.from_numpy(~np.asarray(scan.bad_pixel_mask, dtype=bool))
    amps = scan.diffraction
    chunks = [slice(s, s + chunk) for s in range(0, scan.n_patterns, chunk)]

    def expected(sl: slice) -> torch.Tensor:
        lam, _ = model_counts(o_t, p_t, torch.from_numpy(pos[sl]))
        return lam if valid is None else lam * valid

    def measured(sl: slice) -> np.ndarray:
        k = np.square(amps[sl], dtype=np.float64)
        return k if valid is None else k * valid.numpy()

    # pass 1: the ML intensity scale (the expected counts are kept for pass 2 when
    # they fit CACHE_LIMIT_BYTES, else computed again)
    keep = scan.n_patterns * scan.patch_size**2 * 4 * p.shape[0] <= CACHE_LIMIT_BYTES
    cache: list[torch.Tensor] = []
    lam_sum = k_sum = 0.0
    integers = True
    with torch.no_grad():
        for sl in chunks:
            lam, k = expected(sl), measured(sl)
            if keep:
                cache.append(lam)
            lam_sum += float(lam.sum(dtype=torch.float64))
            k_sum += float(k.sum())
            integers = integers and looks_like_counts(k)
        if not lam_sum > 0:
            raise DataError(
                f"data_consistency ({scan.source}): the object predicts no counts: it is zero "
                "wherever the probe lights it (at positions_px); expected a reconstructed object."
            )
        if not k_sum > 0:
            raise DataError(f"data_consistency ({scan.source}): the scan's diffraction patterns "
                            "hold no counts (all zero); expected measured data.")
        c = k_sum / lam_sum
        sq = dev = edev = 0.0
        for i, sl in enumerate(chunks):  # pass 2: the misfits at that scale
            lam = (cache[i] if keep else expected(sl)).to(torch.float64) * c
            k = torch.from_numpy(measured(sl))
            terms = ((lam.sqrt() - k.sqrt()).square(), poisson_deviance(lam, k),
                     expected_deviance(lam).to(torch.float64))
            if valid is not None:
                terms = tuple(t * valid for t in terms)
            sq += float(terms[0].sum())
            dev += float(terms[1].sum())
            edev += float(terms[2].sum())
    n_valid = int(valid.sum()) if valid is not None else scan.patch_size**2
    pixels = scan.n_patterns * n_valid
    scores = {"amplitude_r_factor": sq / k_sum, "poisson_deviance": dev / pixels,
              "expected_deviance": edev / pixels,
              "deviance_ratio": dev / edev if edev > 0 else float("nan")}
    bad = {k: v for k, v in scores.items() if not np.isfinite(v)}
    if bad:  # never a NaN or inf as a score
        raise DataError(
            f"data_consistency ({scan.source}): the misfit cannot be scored: {bad} (expected "
            f"finite numbers; the counts sum to {k_sum:.4g}, the model's to {lam_sum:.4g})."
        )
    return {
        **scores,
        "intensity_scale": c,
        "counts_are_integers": integers,
        "n_patterns": scan.n_patterns,
        "n_valid_pixels": n_valid,
    }


def data_consistency_files(reconstruction_npz, scan_path) -> dict:  # noqa: ANN001 (paths)
    """`data_consistency` of a ``reconstruction.npz`` (from ``ptychopinn infer``) against
    the measured scan it was reconstructed from (any format `load_scan` reads).

    Scores ``object`` with the file's ``probe`` (the probe the reconstruction
    assumed; the scan's when absent) at its ``positions_px``, and, when present,
    ``refined_object`` with ``refined_probe`` / ``refined_positions_px`` (the
    scan's probe / ``positions_px`` when absent). Returns ``{"reconstruction":
    {...}}`` plus ``"refined"`` when the file holds a refined object.

    Refuses (`DataError`, naming the file and key) an object that is not complex,
    2-D, finite and non-zero, non-finite positions, and a scan whose positions are
    not the file's ``positions_px`` moved by its ``frame_offset_px`` (by their median
    difference when it has none; within ``SAME_SCAN_TOL_PX`` of
    `ptychopinn.metrics.evaluate_files`): the reconstruction of another scan.
    """
    from pathlib import Path

    from ptychopinn.data.readers import load_scan, read_npz_arrays
    from ptychopinn.metrics.evaluate_files import (
        _check_same_scan,
        _file_object,
        _file_offset,
        _finite_positions,
    )

    path = Path(reconstruction_npz)
    rec = read_npz_arrays(path, what="reconstruction")  # a DataError naming the file
    scan = load_scan(scan_path)
    for key in ("object", "positions_px"):
        if key not in rec:
            raise DataError(
                f"{path}: missing key {key!r} (a reconstruction.npz of ptychopinn infer holds "
                f"object and positions_px); keys found: {sorted(rec)}."
            )
    # a reconstruction of another scan: say so, naming both files, before any detail
    n_rec = int(np.shape(rec["probe"])[-1]) if "probe" in rec else None
    if n_rec is not None and n_rec != scan.patch_size:
        raise DataError(
            f"{path} and {scan_path} do not belong together: the reconstruction was made from "
            f"{n_rec}x{n_rec} patterns (N={n_rec}, its probe) but the scan's diffraction "
            f"patterns are {scan.patch_size}x{scan.patch_size} (N={scan.patch_size}). Give "
            "--scan the scan the reconstruction was made from."
        )
    # the same scan: its positions are the file's positions_px moved by frame_offset_px
    # (by their median difference without one), as evaluate --truth checks them
    # (recognised by its measured positions where infer corrected them)
    pos = _finite_positions(rec["positions_px"], path)
    id_pos = (_finite_positions(rec["measured_positions_px"], path, "measured_positions_px")
              if "measured_positions_px" in rec else pos)
    if id_pos.shape == scan.positions_px.shape:
        off = _file_offset(rec, path)
        source = "frame_offset_px"
        if off is None:
            off = np.median(scan.positions_px - id_pos, axis=0)
            source = "the median difference of the positions"
        _check_same_scan(str(path), str(scan_path), id_pos, scan.positions_px, off, source,
                         role="scan")
    out = {}
    jobs = [("reconstruction", "object", "probe", "positions_px")]
    if "refined_object" in rec:
        jobs.append(("refined", "refined_object", "refined_probe", "refined_positions_px"))
    for name, obj_key, probe_key, pos_key in jobs:
        obj = _file_object(rec[obj_key], path, obj_key)
        pos = _finite_positions(rec[pos_key], path, pos_key) if pos_key in rec else pos
        try:
            out[name] = data_consistency(scan, obj, pos, rec.get(probe_key))
        except DataError as err:
            raise DataError(f"{path} ({obj_key}) against {scan_path}: {err}") from None
    return out
