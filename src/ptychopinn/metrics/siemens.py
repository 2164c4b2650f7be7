"""How far towards its centre a Siemens star's spokes are resolved, measured.

A Siemens star has ``n`` spoke periods around every circle, so on a circle of
radius ``r`` the spokes form a pattern of period ``2 pi r / n`` pixels: the
finer the reconstruction's resolution, the closer to the centre the spokes
stay distinct. On each circle we sample the image (bilinear, 16 samples per
period) and take the amplitude of its angular Fourier component at the spoke
frequency ``n`` (both signs for a complex image), less the mean power of the
neighbouring non-spoke frequencies (noise would otherwise pass for
modulation). That modulation, divided by its median over the outer part of
the star (where the spokes are coarse and certainly resolved), is the star's
contrast transfer at the period ``2 pi r / n``. A circle is resolved when the
relative modulation is at least ``threshold`` (default 0.5, like an MTF50)
and the spoke frequency's power is at least ``min_snr`` times its neighbours'.
The **resolved radius** is the smallest radius down to which every circle is
resolved, walking in from the outer edge; its half-period ``pi r / n`` is the
finest resolved line width in pixels.

The complex transmission is analysed by default (``part="complex"``): a global
phase factor does not change the modulation, phase wrapping cannot create
spurious spokes, and both the amplitude and the phase contrast of the spokes
count. For a Gaussian blur of width ``s`` the fundamental of the spoke pattern
is attenuated by ``exp(-s^2 n^2 / (2 r^2))`` (tested), so two reconstructions
of one star compare by their resolved radii as two blurs would.

The centre and the spoke count are found when not given: the spoke count as
the strongest angular frequency over the outer circles, the centre as the
point that maximises the spoke modulation summed over all circles (a coarse
grid within ``search_px`` of a start, then Nelder-Mead). The start needs no
spoke count: the point to which the image gradients are most nearly
perpendicular (`radial_center`; spokes are radial lines).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from ptychopinn.errors import DataError

#: Samples per spoke period on every circle (well above Nyquist's 2).
SAMPLES_PER_PERIOD = 16
#: Fraction of the radial range (its outer part) whose median modulation is the reference.
OUTER_FRACTION = 0.3


@dataclass(frozen=True)
class SpokeResolution:
    """Result of `siemens_star_resolution` (radii and lengths in pixels)."""

    center: tuple[float, float]
    n_spokes: int
    radii: np.ndarray
    modulation: np.ndarray
    spoke_to_noise: np.ndarray
    threshold: float
    min_snr: float
    resolved_radius_px: float
    half_period_px: float
    #: the median noise-debiased spoke modulation of the outer circles, in the image's
    #: units: what ``modulation`` is relative to
    outer_modulation: float = float("nan")

    def contrast_at(self, radius: float, unit: float = 1.0) -> float:
        """The spoke modulation at ``radius`` in the image's units divided by ``unit``
        (e.g. the image's mean amplitude), not relative to the outer circles: two
        reconstructions whose relative modulation differs may differ at ``radius`` or in
        their outer spokes, and this tells which."""
        if not unit > 0:
            raise DataError(f"SpokeResolution.contrast_at: unit must be > 0; got {unit}.")
        return self.modulation_at(radius) * self.outer_modulation / float(unit)

    def modulation_at(self, radius: float) -> float:
        """The relative spoke modulation at ``radius`` (linear between the measured
        circles; NaN outside them): how far above or below the threshold this image
        is where another one's resolved radius lies, a finer comparison of two
        reconstructions than their radii, which move in whole circle steps."""
        r = float(radius)
        if not self.radii[0] <= r <= self.radii[-1]:
            return float("nan")
        return float(np.interp(r, self.radii, self.modulation))

    def as_dict(self) -> dict:
        """JSON-ready summary (without the curve)."""
        return {
            "center_px": [round(float(c), 2) for c in self.center],
            "n_spokes": int(self.n_spokes),
            "threshold": float(self.threshold),
            "min_snr": float(self.min_snr),
            "resolved_radius_px": round(float(self.resolved_radius_px), 2),
            "half_period_px": round(float(self.half_period_px), 3),
        }


def _part(image: np.ndarray, part: str) -> np.ndarray:
    if part == "complex":
        return image.astype(np.complex128, copy=False)
    if part == "amplitude":
        return np.abs(image).astype(np.float64)
    if part == "phase":
        return np.angle(image).astype(np.float64)
    raise DataError(f"siemens_star_resolution: part must be 'complex', 'amplitude' or 'phase'; "
                    f"got {part!r}.")


def _ring_spectrum(img: np.ndarray, center, radii: np.ndarray, n_angles: int) -> np.ndarray:
    """|angular Fourier coefficients| (radii, n_angles) of ``img`` on circles around ``center``;
    the power of +k and -k combined for a complex image."""
    theta = 2 * np.pi * np.arange(n_angles) / n_angles
    rows = center[0] + radii[:, None] * np.sin(theta)[None, :]
    cols = center[1] + radii[:, None] * np.cos(theta)[None, :]
    coords = np.stack([rows.ravel(), cols.ravel()])

    def sample(a):
        return ndimage.map_coordinates(a, coords, order=1, mode="nearest").reshape(rows.shape)

    if np.iscomplexobj(img):
        s = sample(img.real) + 1j * sample(img.imag)
    else:
        s = sample(img)
    f = np.abs(np.fft.fft(s, axis=1)) / n_angles
    # combine +k and -k (for a real image they are equal; this doubles both alike)
    return np.sqrt(f ** 2 + np.roll(f[:, ::-1], 1, axis=1) ** 2)


def _noise_band(n_spokes: int) -> np.ndarray:
    """Angular frequencies around the spoke frequency that hold no spoke harmonic:
    ``n/2 .. 3n/2`` without ``n - 2 .. n + 2`` (a centre error leaks into those)."""
    k = np.arange(max(3, n_spokes // 2), 3 * n_spokes // 2 + 1)
    return k[np.abs(k - n_spokes) > 2]


#: The fewest spoke periods with noise frequencies beside them (`_noise_band` is empty below).
MIN_SPOKES = 6
#: What to check when no star is found (worded for the CLI too, which has no max_radius).
_STAR_HINT = ("Is the image a Siemens star, filling the disc analysed (a reconstruction's "
              "scanned region; max_radius when given)?")


def _check_estimated_count(n_spokes: int) -> None:
    """Refuse an estimated spoke count with no noise band (a non-star image): checked
    before any modulation is computed, whose noise mean would be of an empty band."""
    if n_spokes < MIN_SPOKES:
        raise DataError(
            f"siemens_star_resolution: no spoke modulation: the strongest angular frequency "
            f"of the outer circles is {n_spokes} periods, too few for a Siemens star (at least "
            f"{MIN_SPOKES} are needed to tell spokes from noise). {_STAR_HINT}"
        )


def _spoke_power(img, center, radii, n_spokes) -> tuple[np.ndarray, np.ndarray]:
    """Power of the spoke frequency on every circle, and the mean power of the
    neighbouring non-spoke frequencies (noise, aliasing, other structure)."""
    n_angles = SAMPLES_PER_PERIOD * n_spokes
    p = _ring_spectrum(img, center, radii, n_angles) ** 2
    return p[:, n_spokes], p[:, _noise_band(n_spokes)].mean(axis=1)


def _modulation(img, center, radii, n_spokes) -> np.ndarray:
    return np.sqrt(_spoke_power(img, center, radii, n_spokes)[0])


def estimate_spoke_count(img: np.ndarray, center, radii: np.ndarray, max_spokes: int = 512) -> int:
    """The strongest angular frequency (>= 3) summed over the circles ``radii``."""
    spec = _ring_spectrum(img, center, radii, 2 * max_spokes + 2)
    power = (spec[:, 3:max_spokes + 1] ** 2).sum(axis=0)
    return int(np.argmax(power)) + 3


def radial_center(img: np.ndarray) -> tuple[float, float]:
    """The point every image gradient is most nearly perpendicular to the line to:
    a star's spokes are radial, so at each pixel ``p`` the gradient ``g`` satisfies
    ``g . (p - c) = 0``; solved for ``c`` by least squares (weights ``|g|^2``).
    Edges of circles around ``c`` (a central disk, gaps in the spokes) balance out.
    Needs no spoke count; the start of `find_star_center`."""
    parts = (img.real, img.imag) if np.iscomplexobj(img) else (img,)
    a = np.zeros((2, 2))
    b = np.zeros(2)
    rows, cols = np.mgrid[: img.shape[0], : img.shape[1]].astype(float)
    for part in parts:
        gy, gx = np.gradient(part)
        a += [[np.sum(gy * gy), np.sum(gy * gx)], [np.sum(gy * gx), np.sum(gx * gx)]]
        gp = gy * rows + gx * cols
        b += [np.sum(gy * gp), np.sum(gx * gp)]
    if not np.linalg.cond(a) < 1e8:
        return (img.shape[0] - 1) / 2, (img.shape[1] - 1) / 2
    c = np.linalg.solve(a, b)
    return float(c[0]), float(c[1])


def find_star_center(img: np.ndarray, n_spokes: int, guess, radii: np.ndarray,
                     search_px: float = 10.0) -> tuple[float, float]:
    """The point within ``search_px`` of ``guess`` that maximises the spoke modulation
    summed over ``radii`` (an off-centre circle smears the spoke frequency)."""
    guess = np.asarray(guess, float)

    def cost(c):
        return -float(np.sum(_modulation(img, c, radii, n_spokes)))

    best, best_cost = guess, cost(guess)
    if search_px > 0:
        step = max(1.0, search_px / 10)
        offsets = np.arange(-search_px, search_px + 1e-9, step)
        for dy in offsets:
            for dx in offsets:
                c = guess + (dy, dx)
                v = cost(c)
                if v < best_cost:
                    best, best_cost = c, v
    res = optimize.minimize(cost, best, method="Nelder-Mead",
                            options={"xatol": 0.02, "fatol": 1e-9, "initial_simplex":
                                     [best, best + (1.0, 0.0), best + (0.0, 1.0)]})
    c = res.x if res.fun <= best_cost else best
    return float(c[0]), float(c[1])


def siemens_star_resolution(
    image: np.ndarray,
    *,
    center: tuple[float, float] | None = None,
    n_spokes: int | None = None,
    max_radius: float | None = None,
    min_radius: float = 2.0,
    radial_step: float = 0.5,
    part: str = "complex",
    threshold: float = 0.5,
    min_snr: float = 4.0,
    search_px: float = 10.0,
) -> SpokeResolution:
    """Measure how close to its centre a Siemens star in ``image`` is resolved.

    Parameters
    ----------
    image : (H, W) array, complex (a reconstructed object) or real.
    center : (row, col) of the star's centre in pixels. None: found, starting from
        `radial_center` and searching ``search_px`` around it; a given centre
        is searched around the same way unless ``search_px=0``, which keeps it.
    n_spokes : spoke periods around a circle (bright + dark pairs, at least 6); estimated
        when None.
    max_radius : outer radius analysed (default: the largest circle inside the
        image around the starting centre, less ``search_px``). Keep it inside the
        region the reconstruction covers.
    min_radius, radial_step : the inner radius and the spacing of the circles.
    part : ``"complex"`` (default), ``"amplitude"`` or ``"phase"``.
    threshold : relative modulation that counts as resolved (0 < threshold < 1).
    min_snr : and the spoke frequency's power must exceed the mean power of its
        neighbouring frequencies (noise) by this factor.

    Returns
    -------
    SpokeResolution with the radii, the relative modulation on each, the
    resolved radius and its half-period ``pi r / n_spokes``.
    """
    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) < 8:
        raise DataError(f"siemens_star_resolution: expected a 2-D image of at least 8x8 "
                        f"pixels; got shape {image.shape}.")
    if not np.all(np.isfinite(image)):
        raise DataError("siemens_star_resolution: the image holds NaN or infinite values.")
    if not np.any(image):
        raise DataError("siemens_star_resolution: the image is all zero (an empty object): there "
                        "is no Siemens star to measure.")
    if not 0 < threshold < 1:
        raise DataError(f"siemens_star_resolution: threshold must lie in (0, 1); got {threshold}.")
    if not min_snr >= 0:
        raise DataError(f"siemens_star_resolution: min_snr must be >= 0; got {min_snr}.")
    if n_spokes is not None and n_spokes < MIN_SPOKES:
        raise DataError(f"siemens_star_resolution: n_spokes must be >= {MIN_SPOKES} (the noise is "
                        f"measured at the frequencies beside it); got {n_spokes}.")
    img = _part(image, part)
    h, w = img.shape
    searching = center is None or search_px > 0
    if center is None:
        c0 = np.array(radial_center(img), float)
        if not (0 <= c0[0] <= h - 1 and 0 <= c0[1] <= w - 1):
            c0 = np.array(((h - 1) / 2, (w - 1) / 2))
    else:
        c0 = np.array(center, float)

    def inside(c) -> float:
        return float(min(c[0], c[1], h - 1 - c[0], w - 1 - c[1]))

    r_max = inside(c0) - (search_px if searching else 0.0)
    if max_radius is not None:
        if max_radius > r_max + 1e-9:
            raise DataError(f"siemens_star_resolution: max_radius {max_radius} px does not fit "
                            f"inside the image of shape {image.shape} around the centre "
                            f"{tuple(c0)} (at most {r_max:.1f} px"
                            f"{' with the centre search' if searching else ''}).")
        r_max = float(max_radius)
    if r_max < min_radius + 4 * radial_step:
        raise DataError(f"siemens_star_resolution: the radial range {min_radius}..{r_max:.1f} px "
                        "is too short: the image (a reconstruction's scanned region) is too small "
                        "around the star's centre; give a larger one, or a smaller min_radius or "
                        "a larger max_radius.")
    radii = np.arange(min_radius, r_max + 1e-9, radial_step)
    outer = radii >= radii[-1] - OUTER_FRACTION * (radii[-1] - radii[0])

    c = c0
    estimated = n_spokes is None
    if estimated:
        n_spokes = estimate_spoke_count(img, c, radii[outer])
        _check_estimated_count(n_spokes)
    if searching:
        c = np.array(find_star_center(img, n_spokes, c0, radii, search_px))
        if estimated:  # the count again, now from the centre found
            n_est = estimate_spoke_count(img, c, radii[outer])
            if n_est != n_spokes:
                n_spokes = n_est
                _check_estimated_count(n_spokes)
                c = np.array(find_star_center(img, n_spokes, c, radii, min(search_px, 2.0)))

    power, noise = _spoke_power(img, c, radii, n_spokes)
    # the noise's own power in the spoke bin is removed (it would look like modulation)
    mod = np.sqrt(np.maximum(power - noise, 0.0))
    snr = power / np.maximum(noise, np.finfo(float).tiny)
    ref = float(np.median(mod[outer]))
    if not ref > 0:
        raise DataError("siemens_star_resolution: no spoke modulation in the outer part of the "
                        f"star. {_STAR_HINT}")
    rel = mod / ref
    resolved_ring = (rel >= threshold) & (snr >= min_snr)
    # walk in from the outer edge: the resolved radius is the last circle before the
    # first one below the threshold (the innermost circle when none is below; the
    # outermost when even that one is)
    below = np.nonzero(~resolved_ring)[0]
    if not below.size:
        resolved = float(radii[0])
    else:
        resolved = float(radii[min(below[-1] + 1, radii.size - 1)])
    return SpokeResolution(
        center=(float(c[0]), float(c[1])),
        n_spokes=int(n_spokes),
        radii=radii,
        modulation=rel,
        spoke_to_noise=snr,
        threshold=float(threshold),
        min_snr=float(min_snr),
        resolved_radius_px=resolved,
        half_period_px=float(np.pi * resolved / n_spokes),
        outer_modulation=ref,
    )


def scanned_crop(shape: tuple[int, int], positions_px: np.ndarray, patch_size: int,
                 margin_frac: float = 0.25) -> tuple[slice, slice]:
    """The scanned region of an object of ``shape`` (`illuminated_region`), shrunk by
    ``margin_frac`` of a patch on every side (its edge is lit by few positions)."""
    from ptychopinn.metrics.align import illuminated_region

    rows, cols = illuminated_region(shape, positions_px, patch_size)
    m = int(margin_frac * patch_size)
    if rows.stop - rows.start <= 2 * m + 8 or cols.stop - cols.start <= 2 * m + 8:
        m = 0
    return slice(rows.start + m, rows.stop - m), slice(cols.start + m, cols.stop - m)


def scanned_star_resolutions(objects, positions_px, patch_size: int | None, *,
                             search_px: float = 5.0, margin_frac: float = 0.25) -> list:
    """`siemens_star_resolution` of several reconstructions of one star, each inside
    its scanned region (`scanned_crop`; ``positions_px`` one array for all objects
    or one per object; None: each object whole). The spoke count found on the first
    object is used for the others, so their radii compare at the same spoke
    frequency; every object's centre is found on its own (position refinement may
    move it)."""
    objects = list(objects)
    per_object = isinstance(positions_px, (list, tuple))
    out: list = []
    n_spokes = None
    for i, obj in enumerate(objects):
        pos = positions_px[i] if per_object else positions_px
        crop = (slice(None), slice(None)) if pos is None or patch_size is None else (
            scanned_crop(obj.shape, pos, patch_size, margin_frac))
        res = siemens_star_resolution(obj[crop], n_spokes=n_spokes, search_px=search_px)
        n_spokes = res.n_spokes
        out.append(res)
    return out


def siemens_star_files(reconstruction_npz, *, search_px: float = 5.0,
                       margin_frac: float = 0.25) -> tuple[dict, dict]:  # noqa: ANN001 (path)
    """`siemens_star_resolution` of a ``reconstruction.npz`` (from ``ptychopinn infer``):
    its ``object`` and, when present, ``refined_object``, each inside the scanned
    region (positions and the probe's size; shrunk by ``margin_frac`` of a patch).

    Returns ``(summary, results)``: ``{"reconstruction": {...}, "refined": {...}}``
    of `SpokeResolution.as_dict` and the `SpokeResolution` objects under the same
    keys. The spoke count found on ``object`` is used for ``refined_object``.
    """
    from pathlib import Path

    from ptychopinn.data.readers import read_npz_arrays

    path = Path(reconstruction_npz)
    rec = read_npz_arrays(path, what="reconstruction")  # a DataError naming the file
    if "object" not in rec:
        raise DataError(f"{path}: missing key 'object' (a reconstruction.npz of ptychopinn infer "
                        f"holds it); keys found: {sorted(rec)}.")
    for key in ("object", "refined_object"):
        if key in rec and not np.any(rec[key]):
            raise DataError(f"{path}: '{key}' is all zero: the object is empty; expected a "
                            "reconstructed Siemens star.")
    jobs = [(name, key, rec.get(pos_key, rec.get("positions_px")))
            for name, key, pos_key in (("reconstruction", "object", "positions_px"),
                                       ("refined", "refined_object", "refined_positions_px"))
            if key in rec]
    probe = rec.get("probe")  # its size is the patch size; without it: the whole object
    try:
        found = scanned_star_resolutions(
            [rec[key] for _, key, _ in jobs], [pos for _, _, pos in jobs],
            None if probe is None else int(probe.shape[-1]), search_px=search_px,
            margin_frac=margin_frac)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    results = {name: r for (name, _, _), r in zip(jobs, found, strict=True)}
    return {k: r.as_dict() for k, r in results.items()}, results
