"""Ptychodus data <-> `Scan`, and a `Reconstruction` back onto a Ptychodus product.

Conventions checked against the installed Ptychodus 1.7.0 source:

* ``ReconstructInput.diffraction_patterns`` are detector INTENSITIES (counts)
  ``(n, H, W)`` with the zero frequency at the array centre (its far-field
  propagators end in ``fftshift``), the same centring as our amplitudes, so no
  shift is applied: ``diffraction = sqrt(patterns)``.
* ``ReconstructInput.bad_pixels`` is ``(H, W)`` bool, True = bad (as our
  ``bad_pixel_mask``); bad pixels are zeroed and passed on as the mask.
* Positions are metres; ``ObjectGeometry.map_probe_positions_to_object_{x,y}_px``
  gives object pixels in Ptychodus's centred-pixel convention, where the patch
  seen at ``c`` starts at ``c - (N - 1) / 2`` (``ProbeGeometry.resolve_patch_bounds``).
  Ours starts at ``p - N / 2``, so ``p = c + 1/2`` (`PIXEL_CENTRE_OFFSET_PX`).
  Object arrays share their pixel indices, so objects need no resampling.
* The probe is ``ProbeSequence.get_probe_no_opr()``: ``(modes, H, W)``.
* A product always holds an object; one that is uniform over the scan (all ones
  where we wrote a scan without an object, or Ptychodus's default initial
  object) is an initial guess, not a truth, and is not carried as
  ``Scan.object`` (`is_uniform_object`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ptychopinn.data.scan import Scan
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

PIXEL_CENTRE_OFFSET_PX = 0.5
"""Our probe-centre pixel coordinate minus Ptychodus's, for the same patch."""

DEFAULT_PHOTON_ENERGY_EV = 10_000.0
DEFAULT_DETECTOR_DISTANCE_M = 2.0
DEFAULT_DETECTOR_PIXEL_M = 75e-6
UNIFORM_OBJECT_RTOL = 1e-6
"""An object whose values over the scan differ by at most this (relative to its largest
magnitude) is uniform: an initial guess, not a truth (`is_uniform_object`)."""


# ---------------------------------------------------------------- Ptychodus -> Scan
def _object_array(obj, source: str) -> np.ndarray:
    if obj.num_layers > 1:
        log.warning("%s: the object has %d layers; using their product (projection).",
                    source, obj.num_layers)
        return np.asarray(obj.get_layers_flattened())
    return np.asarray(obj.get_layer(0))


def is_uniform_object(obj: np.ndarray, positions_px: np.ndarray, n_pix: int) -> bool:
    """Whether ``obj`` is uniform over the patches at ``positions_px`` (ours, ``[y, x]``).

    Such an object carries no information about the sample: it is the all-ones
    stand-in `scan_to_product` writes for a scan without an object, or
    Ptychodus's default initial object (ones, zero-padded outside the scan). It
    is not a truth to score against or to train on. Only the scan's footprint
    (the bounding box of its patches) is looked at, so padding around it does not
    count.
    """
    lo = np.floor(positions_px.min(axis=0) - n_pix / 2).astype(int)
    hi = np.ceil(positions_px.max(axis=0) + n_pix / 2).astype(int)
    lo = np.maximum(lo, 0)
    region = np.asarray(obj)[lo[0]:max(lo[0], hi[0]), lo[1]:max(lo[1], hi[1])]
    if region.size == 0:
        return True
    first = region.flat[0]
    scale = max(float(np.abs(region).max()), np.finfo(np.float32).tiny)
    return bool(np.abs(region - first).max() <= UNIFORM_OBJECT_RTOL * scale)


def _counts(patterns: np.ndarray, bad: np.ndarray, source: str) -> np.ndarray:
    counts = np.array(patterns, dtype=np.float32)
    nonfinite = ~np.isfinite(counts)
    if nonfinite.any():
        log.warning("%s: %d non-finite diffraction values set to 0.", source, int(nonfinite.sum()))
        counts[nonfinite] = 0.0
    negative = counts < 0
    if negative.any():
        log.warning("%s: %d negative diffraction values clipped to 0.", source,
                    int(negative.sum()))
        counts[negative] = 0.0
    counts[:, bad] = 0.0
    return counts


def product_positions_px(product) -> np.ndarray:
    """Our ``positions_px`` ``[y, x]`` of a Ptychodus product, in its object's pixels."""
    geometry = product.object_.get_geometry()
    positions = product.probe_positions
    x = np.asarray(geometry.map_probe_positions_to_object_x_px(positions), dtype=np.float64)
    y = np.asarray(geometry.map_probe_positions_to_object_y_px(positions), dtype=np.float64)
    return np.stack([y, x], axis=1) + PIXEL_CENTRE_OFFSET_PX


def _check_geometry(product, n_pix: int, source: str) -> float:
    """Validate what our far-field, square-pixel model needs; returns the pixel size."""
    meta = product.metadata
    if not meta.far_field:
        raise DataError(
            f"{source}: product metadata 'far_field' must be True (ptychopinn models "
            "far-field diffraction); found False (near field)."
        )
    try:
        obj_px = product.object_.get_pixel_geometry()
        probe_px = product.probes.get_pixel_geometry()
    except ValueError as exc:
        raise DataError(f"{source}: the product lacks a pixel geometry ({exc}).") from None
    if not np.isclose(obj_px.width_m, obj_px.height_m, rtol=1e-6):
        raise DataError(
            f"{source}: object pixels must be square; found {obj_px.width_m:.4g} m x "
            f"{obj_px.height_m:.4g} m."
        )
    if not (np.isclose(obj_px.width_m, probe_px.width_m, rtol=1e-6)
            and np.isclose(obj_px.height_m, probe_px.height_m, rtol=1e-6)):
        raise DataError(
            f"{source}: the probe and object pixel sizes must match; found probe "
            f"{probe_px.width_m:.4g} m and object {obj_px.width_m:.4g} m (resample one in "
            "Ptychodus first)."
        )
    shape = (product.probes.height_px, product.probes.width_px)
    if shape != (n_pix, n_pix):
        raise DataError(
            f"{source}: the probe must be {n_pix} x {n_pix} like the diffraction patterns; "
            f"found {shape[0]} x {shape[1]}."
        )
    return float(obj_px.width_m)


def input_to_scan(parameters, *, source: str = "ptychodus", with_object: bool = True) -> Scan:
    """Convert a Ptychodus ``ReconstructInput`` to a `Scan` (amplitudes, pixels).

    Parameters
    ----------
    parameters
        ``ptychodus.api.reconstruct.ReconstructInput``.
    source
        Name used in error messages and as ``Scan.source``.
    with_object
        Carry the product's object as ``Scan.object`` (the frame of the
        positions; the truth for supervised training and for scoring). Dropped
        with a warning when some patch lies outside it, and dropped (logged) when
        it is uniform over the scan: that is an initial guess or our stand-in,
        not a truth (`is_uniform_object`).
    """
    patterns = np.asarray(parameters.diffraction_patterns)
    product = parameters.product
    if patterns.ndim != 3 or patterns.shape[1] != patterns.shape[2]:
        raise DataError(
            f"{source}: diffraction patterns must be square (n, N, N); found shape "
            f"{patterns.shape} (crop them to a square in Ptychodus)."
        )
    n, n_pix = patterns.shape[0], patterns.shape[1]
    if len(product.probe_positions) != n:
        raise DataError(
            f"{source}: {n} diffraction patterns but {len(product.probe_positions)} probe "
            "positions; they must pair one to one."
        )
    bad = parameters.bad_pixels
    bad = np.zeros((n_pix, n_pix), bool) if bad is None else np.asarray(bad, dtype=bool)
    if bad.shape != (n_pix, n_pix):
        raise DataError(f"{source}: bad-pixel mask must be ({n_pix}, {n_pix}); found {bad.shape}.")
    pixel_size_m = _check_geometry(product, n_pix, source)
    counts = _counts(patterns, bad, source)
    positions = product_positions_px(product)
    probe = np.asarray(product.probes.get_probe_no_opr().get_array(), dtype=np.complex64)
    if product.probes.get_opr_weights_or_none() is not None:
        log.warning("%s: OPR probe weights are ignored; using the base probe modes.", source)
    obj = _object_array(product.object_, source) if with_object else None
    if obj is not None:
        lo = positions.min(axis=0) - n_pix / 2
        hi = positions.max(axis=0) + n_pix / 2
        if lo.min() < 0 or hi[0] > obj.shape[0] or hi[1] > obj.shape[1]:
            log.warning("%s: some patches lie outside the %s object; not carrying it.",
                        source, obj.shape)
            obj = None
        elif is_uniform_object(obj, positions, n_pix):
            log.info("%s: the product's object is uniform over the scan (an initial guess or "
                     "ptychopinn's stand-in for a scan without an object), not a truth; "
                     "the scan has no object.", source)
            obj = None
    meta = product.metadata
    return Scan(
        diffraction=np.sqrt(counts),
        positions_px=positions,
        probe=probe,
        object=obj,
        bad_pixel_mask=bad if bad.any() else None,
        amplitude_units="sqrt_counts",
        pixel_size_m=pixel_size_m,
        photon_energy_ev=float(meta.photon_energy_eV) if meta.photon_energy_eV > 0 else None,
        detector_distance_m=(float(meta.detector_distance_m)
                             if meta.detector_distance_m > 0 else None),
        source=source,
        metadata={"ptychodus_product": meta.name},
    )


# ---------------------------------------------------------------- Scan -> Ptychodus
def scan_geometry(scan: Scan) -> tuple[float, float, float, float]:
    """``(photon_energy_ev, detector_distance_m, object_pixel_m, detector_pixel_m)``.

    Values the scan lacks take defaults (10 keV, 2 m, 75 um detector pixels)
    and the missing pixel size follows from ``dx_det = lambda z / (N dx_obj)``
    (Ptychodus's ``compute_far_field_pixel_geometry``).
    """
    from ptychodus.api.constants import energy_eV_to_wavelength_m
    from ptychodus.api.geometry import ImageExtent, PixelGeometry
    from ptychodus.api.propagate import compute_far_field_pixel_geometry

    energy = scan.photon_energy_ev or DEFAULT_PHOTON_ENERGY_EV
    distance = scan.detector_distance_m or DEFAULT_DETECTOR_DISTANCE_M
    extent = ImageExtent(width_px=scan.patch_size, height_px=scan.patch_size)
    wavelength = energy_eV_to_wavelength_m(energy)
    if scan.pixel_size_m is None:
        detector = PixelGeometry(DEFAULT_DETECTOR_PIXEL_M, DEFAULT_DETECTOR_PIXEL_M)
        obj = compute_far_field_pixel_geometry(detector, extent, wavelength_m=wavelength,
                                               propagation_distance_m=distance)
        return energy, distance, float(obj.width_m), DEFAULT_DETECTOR_PIXEL_M
    obj_px = PixelGeometry(scan.pixel_size_m, scan.pixel_size_m)
    det = compute_far_field_pixel_geometry(obj_px, extent, wavelength_m=wavelength,
                                           propagation_distance_m=distance)
    return energy, distance, float(scan.pixel_size_m), float(det.width_m)


def _indexes(scan: Scan, indexes: Sequence[int] | None) -> np.ndarray:
    if indexes is None:
        return np.arange(scan.n_patterns)
    idx = np.asarray(indexes).astype(np.int64).reshape(-1)
    if idx.size != scan.n_patterns:
        raise DataError(f"{scan.source}: {scan.n_patterns} scan indexes needed; found {idx.size}.")
    return idx


def scan_to_product(scan: Scan, *, name: str = "ptychopinn", margin_px: int = 0,
                    indexes: Sequence[int] | None = None):
    """A Ptychodus ``Product`` holding the scan's probe, positions (metres) and object.

    Without ``scan.object`` a unit object covering every patch (plus
    ``margin_px``) is made: a stand-in (a product must hold an object) that
    `input_to_scan` reads back as no object (`is_uniform_object`). The
    object is centred at (0, 0) m.
    """
    from ptychodus.api.geometry import PixelGeometry
    from ptychodus.api.object import Object, ObjectCenter, ObjectPosition
    from ptychodus.api.probe import ProbeSequence
    from ptychodus.api.probe_positions import ProbePositionSequence
    from ptychodus.api.product import Product, ProductMetadata

    energy, distance, pixel_m, _ = scan_geometry(scan)
    framed = scan.in_object_frame(margin=margin_px)
    obj = framed.object
    if obj is None:
        obj = np.ones(framed.object_shape(margin=margin_px), dtype=np.complex64)
    pixel = PixelGeometry(width_m=pixel_m, height_m=pixel_m)
    ptycho_obj = Object(array=np.asarray(obj, dtype=np.complex64), pixel_geometry=pixel,
                        center=ObjectCenter(x_m=0.0, y_m=0.0))
    geometry = ptycho_obj.get_geometry()
    idx = _indexes(scan, indexes)
    pts = framed.positions_px - PIXEL_CENTRE_OFFSET_PX
    points = [
        geometry.map_coordinates_object_to_probe(
            ObjectPosition(index=int(i), x_px=float(x), y_px=float(y)))
        for i, (y, x) in zip(idx, pts, strict=True)
    ]
    counts = np.square(scan.diffraction, dtype=np.float64).sum(axis=(1, 2))
    metadata = ProductMetadata(
        name=name, comments=f"converted by ptychopinn from {scan.source}",
        detector_distance_m=distance, photon_energy_eV=energy,
        probe_photon_count=float(counts.max()), exposure_time_s=0.0,
        mass_attenuation_m2_per_kg=0.0, tomography_angle_deg=0.0,
    )
    probes = ProbeSequence(array=scan.probe.astype(np.complex64), opr_weights=None,
                           pixel_geometry=pixel.copy())
    return Product(metadata=metadata, probe_positions=ProbePositionSequence(points),
                   probes=probes, object_=ptycho_obj, losses=[])


def scan_to_assembled_data(scan: Scan, *, indexes: Sequence[int] | None = None):
    """Ptychodus ``AssembledDiffractionData``: counts (amplitude squared), mask, detector pixels."""
    from ptychodus.api.assemble import AssembledDiffractionData
    from ptychodus.api.geometry import PixelGeometry

    _, _, _, det_m = scan_geometry(scan)
    idx = _indexes(scan, indexes)
    mask = scan.bad_pixel_mask
    if mask is None:
        mask = np.zeros((scan.patch_size, scan.patch_size), dtype=bool)
    return AssembledDiffractionData(
        indexes=idx.astype(np.intp), patterns=scan.counts,
        pixel_geometry=PixelGeometry(width_m=det_m, height_m=det_m), bad_pixels=mask.copy(),
    )


def scan_to_reconstruct_input(scan: Scan, *, name: str = "ptychopinn"):
    """A Ptychodus ``ReconstructInput`` (what a reconstructor receives) from a scan."""
    from ptychodus.api.reconstruct import prepare_reconstruct_input

    return prepare_reconstruct_input(scan_to_assembled_data(scan), scan_to_product(scan, name=name))


# ---------------------------------------------------------------- Reconstruction -> product
def recon_on_grid(recon, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Place a `Reconstruction` on the input object's grid.

    Returns ``(object * weight, weight)`` of ``shape``: the canvas pixel
    ``(r, c)`` is the input pixel ``(r, c) + frame_offset_px``; parts outside
    ``shape`` are cropped.
    """
    obj = recon.refined_object if getattr(recon, "refined_object", None) is not None \
        else recon.object
    offset = np.asarray(recon.frame_offset_px, dtype=np.float64)
    ioff = np.round(offset).astype(int)
    if np.abs(offset - ioff).max() > 1e-6:
        log.warning("non-integer frame offset %s rounded to %s.", offset, ioff)
    num = np.zeros(shape, dtype=np.complex128)
    den = np.zeros(shape, dtype=np.float64)
    h, w = obj.shape
    src, dst = [], []
    for size, out, o in ((h, shape[0], ioff[0]), (w, shape[1], ioff[1])):
        lo, hi = max(0, -o), min(size, out - o)
        if hi <= lo:
            return num, den
        src.append(slice(lo, hi))
        dst.append(slice(lo + o, hi + o))
    weight = np.asarray(recon.weight, dtype=np.float64)[tuple(src)]
    num[tuple(dst)] = obj[tuple(src)] * weight
    den[tuple(dst)] = weight
    return num, den


def product_with_object(product, weighted: np.ndarray, weight: np.ndarray, *,
                        probe: np.ndarray | None = None,
                        positions_px: np.ndarray | None = None):
    """A copy of ``product`` whose object is ``weighted / weight`` where covered.

    Pixels with zero weight keep the input object's values; the grid, pixel
    geometry and centre are the input's.

    Parameters
    ----------
    product
        The input Ptychodus ``Product``.
    weighted, weight
        `recon_on_grid` of the reconstruction(s), on the input object's grid.
    probe
        ``(modes, N, N)``: replaces the product's probe (the probe the object was
        refined with, ``refine_probe``); None keeps it.
    positions_px
        Our ``[y, x]`` positions in the input object's pixels, one per product
        position in its order (positions the object was reconstructed at:
        ``position_refine_epochs``, ``refine_positions``); None keeps them. Each
        product position moves by its change in pixels times the pixel size; its
        scan index and photon count are kept.
    """
    from ptychodus.api.object import Object
    from ptychodus.api.probe import ProbeSequence
    from ptychodus.api.probe_positions import ProbePosition, ProbePositionSequence
    from ptychodus.api.product import Product

    obj_in = product.object_
    base = np.asarray(obj_in.get_layer(0))
    covered = weight > 0
    out = base.astype(np.complex128)
    out[covered] = weighted[covered] / weight[covered]
    new_obj = Object(array=out.astype(base.dtype)[np.newaxis],
                     pixel_geometry=obj_in.get_pixel_geometry().copy(),
                     center=obj_in.get_center().copy())
    probes = product.probes
    if probe is not None:
        probes = ProbeSequence(array=np.asarray(probe, dtype=np.complex64), opr_weights=None,
                               pixel_geometry=product.probes.get_pixel_geometry().copy())
    points = product.probe_positions
    if positions_px is not None:
        moved = np.asarray(positions_px, dtype=np.float64) - product_positions_px(product)
        pixel = obj_in.get_pixel_geometry()
        points = ProbePositionSequence([
            ProbePosition(index=p.index, x_m=p.x_m + float(dx) * pixel.width_m,
                          y_m=p.y_m + float(dy) * pixel.height_m,
                          probe_photon_count=p.probe_photon_count)
            for p, (dy, dx) in zip(product.probe_positions, moved, strict=True)
        ])
    return Product(metadata=product.metadata, probe_positions=points,
                   probes=probes, object_=new_obj, losses=list(product.losses))


def reconstruction_to_product(recon, product):
    """A new Ptychodus ``Product``: the input ``product`` with ``recon``'s object.

    The object lies on the input object's pixel grid and centre; pixels the
    reconstruction does not cover keep the input values.
    """
    shape = (product.object_.height_px, product.object_.width_px)
    return product_with_object(product, *recon_on_grid(recon, shape))
