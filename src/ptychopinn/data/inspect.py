"""Summaries of a `Scan` for ``ptychopinn inspect``: sizes, counts, scan geometry.

The diffraction centre (periodic centre of mass of the mean pattern, and a
warning for patterns whose zero order is not at the array centre) comes from
`ptychopinn.data.centring`.

Overlap estimate (linear): ``1 - step / D`` clipped to [0, 1], where ``step``
is the mean nearest-neighbour distance between probe positions and ``D`` the
probe diameter, taken as the diameter of the disk with the same area as the
region where the (mode-summed) probe intensity exceeds ``max / e**2``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial import cKDTree

from ptychopinn.data.centring import (
    Centring,
    centring_warning,
    describe_centring,
    scan_centring,
    wrap_warning,
)
from ptychopinn.data.scan import Scan
from ptychopinn.physics.coverage import scan_coverage


def probe_diameter_px(probe: np.ndarray) -> float:
    """Equivalent diameter (px) of the region where ``sum_m |probe_m|**2 > max / e**2``."""
    inten = np.sum(np.abs(probe) ** 2, axis=0) if probe.ndim == 3 else np.abs(probe) ** 2
    area = float(np.count_nonzero(inten > inten.max() * np.exp(-2.0)))
    return float(2.0 * np.sqrt(area / np.pi))


def mean_step_px(positions_px: np.ndarray) -> float | None:
    """Mean distance from each position to its nearest neighbour (None for one position)."""
    if positions_px.shape[0] < 2:
        return None
    dist, _ = cKDTree(positions_px).query(positions_px, k=2)
    return float(np.mean(dist[:, 1]))


def _coverage(positions_px: np.ndarray, probe: np.ndarray) -> float | None:
    """`physics.coverage.scan_coverage`, or None where the probe has no intensity."""
    try:
        return scan_coverage(positions_px, probe)
    except ValueError:
        return None


def object_canvas(scan: Scan) -> tuple[tuple[int, int], tuple[int, int]]:
    """The object frame's canvas ``(H, W)`` and the whole-pixel shift ``(dy, dx)`` added
    to the positions to reach it: the object's shape when the scan has one; else the
    canvas `Scan.object_shape` gives when every patch starts at row/column >= 0 (the
    contract's frame), and otherwise the one of `Scan.in_object_frame` (positions below
    zero are shifted by an integer, as `ptychopinn.inference.reconstruct.canvas_for`
    and the readers do), so it is never negative nor smaller than a patch."""
    if scan.object is not None:
        return tuple(scan.object.shape), (0, 0)  # type: ignore[return-value]
    lo = scan.positions_px.min(axis=0) - scan.patch_size / 2
    if np.all(lo >= 0):
        return scan.object_shape(), (0, 0)
    framed = scan.in_object_frame()
    shift = np.rint(framed.positions_px[0] - scan.positions_px[0]).astype(int)
    return framed.object_shape(), (int(shift[0]), int(shift[1]))


def summarize(scan: Scan) -> dict:
    """A JSON-friendly summary of ``scan`` (numbers as Python floats/ints)."""
    counts = scan.counts.sum(axis=(1, 2), dtype=np.float64)
    pos = scan.positions_px
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    step = mean_step_px(pos)
    diameter = probe_diameter_px(scan.probe)
    overlap = None if step is None or diameter == 0 else float(np.clip(1 - step / diameter, 0, 1))
    centring = scan_centring(scan)
    canvas, canvas_shift = object_canvas(scan)
    out: dict = {
        "source": scan.source,
        "n_patterns": scan.n_patterns,
        "N": scan.patch_size,
        "n_probe_modes": scan.n_probe_modes,
        "amplitude_units": scan.amplitude_units,
        "counts_per_pattern": {
            "mean": float(counts.mean()),
            "min": float(counts.min()),
            "max": float(counts.max()),
        },
        "max_pixel_count": float(scan.counts.max()),
        "diffraction_centre": {
            **dataclasses.asdict(centring),
            "com_px": list(centring.com_px),
            "warning": centring_warning(centring, scan.source),
        },
        "probe_power": float(np.sum(np.abs(scan.probe) ** 2)),
        "position_min_px": [float(v) for v in lo],
        "position_max_px": [float(v) for v in hi],
        "position_extent_px": [float(v) for v in hi - lo],
        "mean_step_px": step,
        "probe_diameter_px": diameter,
        "overlap": overlap,
        "coverage": _coverage(pos, scan.probe),
        "object_shape": [int(v) for v in canvas],
        "canvas_shift_px": list(canvas_shift),
        "has_object": scan.object is not None,
        "bad_pixels": None if scan.bad_pixel_mask is None else int(scan.bad_pixel_mask.sum()),
        "pixel_size_m": scan.pixel_size_m,
        "photon_energy_ev": scan.photon_energy_ev,
        "detector_distance_m": scan.detector_distance_m,
        "metadata": dict(scan.metadata),
    }
    if scan.pixel_size_m is not None:
        out["position_extent_m"] = [float(v) * scan.pixel_size_m for v in hi - lo]
        out["mean_step_m"] = None if step is None else step * scan.pixel_size_m
    return out


def _num(v: float | None, unit: str = "") -> str:
    if v is None:
        return "unknown"
    return f"{v:.4g}{unit}"


def _centring_text(dc: dict) -> str:
    fields = {f.name for f in dataclasses.fields(Centring)}
    c = Centring(**{k: v for k, v in dc.items() if k in fields})
    return describe_centring(dataclasses.replace(c, com_px=tuple(c.com_px)))


def _shift_text(d: dict) -> str:
    dy, dx = d.get("canvas_shift_px") or (0, 0)
    if dy == 0 and dx == 0:
        return ""
    return f"; positions shifted by [{dy:+d}, {dx:+d}] px so every patch starts at >= 0"


def format_summary(d: dict) -> str:
    """Human-readable text of a `summarize` dict."""
    c = d["counts_per_pattern"]
    ext = d["position_extent_px"]
    lines = [
        f"source:            {d['source']}",
        f"patterns:          {d['n_patterns']} of {d['N']} x {d['N']} "
        f"({d['amplitude_units']} amplitudes)",
        f"probe modes:       {d['n_probe_modes']} (sum |probe|^2 = {_num(d['probe_power'])}, "
        f"diameter ~{_num(d['probe_diameter_px'])} px at 1/e^2)",
        f"counts/pattern:    mean {_num(c['mean'])}, min {_num(c['min'])}, max {_num(c['max'])}; "
        f"brightest pixel {_num(d['max_pixel_count'])}",
        f"diffraction:       {_centring_text(d['diffraction_centre'])}",
        f"positions [y, x]:  from ({_num(d['position_min_px'][0])}, "
        f"{_num(d['position_min_px'][1])}) to ({_num(d['position_max_px'][0])}, "
        f"{_num(d['position_max_px'][1])}) px; extent {_num(ext[0])} x {_num(ext[1])} px",
    ]
    if "position_extent_m" in d:
        em = d["position_extent_m"]
        lines.append(f"extent (metres):   {_num(em[0])} x {_num(em[1])} m "
                     f"(pixel {_num(d['pixel_size_m'], ' m')})")
    overlap = "unknown" if d["overlap"] is None else f"{100 * d['overlap']:.0f}%"
    lines += [
        f"scan step:         {_num(d['mean_step_px'], ' px')} (mean nearest neighbour); "
        f"overlap ~{overlap}; coverage {_num(d['coverage'])} (probe footprints per lit pixel; "
        "below 3 the plain prior runs more passes)",
        f"object canvas:     {d['object_shape'][0]} x {d['object_shape'][1]} px "
        f"({'given' if d['has_object'] else 'from positions'}{_shift_text(d)})",
        f"photon energy:     {_num(d['photon_energy_ev'], ' eV')}; "
        f"detector distance {_num(d['detector_distance_m'], ' m')}",
        f"bad pixels:        {'none marked' if d['bad_pixels'] is None else d['bad_pixels']}",
    ]
    for k, v in sorted(d["metadata"].items()):
        text = repr(v)
        lines.append(f"  {k}: {text if len(text) <= 90 else text[:87] + '...'}")
    if d["diffraction_centre"]["warning"]:
        lines.append(wrap_warning(d["diffraction_centre"]["warning"]))
    return "\n".join(lines)
