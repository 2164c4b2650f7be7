"""The synthetic pretraining scan: many simulated objects seen through one probe.

`build_pretraining_scan` tiles K independently simulated objects side by side
on one big object canvas, each scanned by the user's probe with the user's
scan step (and, with a template, the user's own scan pattern), and returns
ONE `Scan` that the unchanged training runner can train on:

* tiles are separated by more than the grouping neighbourhood (the K-th
  nearest-neighbour distance), so neighbour groups never span two tiles;
  ``scan_index`` holds the tile number;
* every tile draws its own object (scikit-image pictures of `TEXTURE_POOL`,
  never `HELD_OUT_IMAGES`; 'textured' mixes; Gaussian random fields; random
  lines) and its own contrast (mixed, pure phase, weak, amplitude only);
* every tile draws a dose factor ``f`` log-uniform in ``dose_range``: counts
  are Poisson draws at ``f`` times the central dose, then divided by ``f`` so
  all tiles share the scan's one probe scale (the stored "counts" of an
  off-centre tile are quasi-Poisson: right mean, variance ``1/f`` times the
  mean; see docs/pretraining.md).

Randomness: one `numpy.random.SeedSequence` child per tile, so tile ``t`` is
the same whatever the number of tiles.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from scipy.spatial import cKDTree

from ptychopinn.data.scan import Scan
from ptychopinn.errors import ConfigError, DataError
from ptychopinn.simulation import HELD_OUT_IMAGES, TEXTURE_POOL, make_object, make_positions
from ptychopinn.simulation.simulate import forward_counts

log = logging.getLogger(__name__)

ObjectKind = Literal["textured", "image", "grf", "lines"]
Pattern = Literal["mixed", "raster", "fermat", "random", "scan"]
CONTRASTS: tuple[str, ...] = ("mixed", "phase", "weak", "amplitude")
CONTRAST_WEIGHTS: tuple[float, ...] = (0.5, 0.2, 0.15, 0.15)
DEFAULT_PHOTONS = 1e6
MIN_POSITIONS = 16
"""Fewest scan positions per object (`PretrainConfig.positions_per_object`)."""
MAX_PATTERNS = 1_000_000
"""Most patterns (``n_objects x positions_per_object``) of one pretraining scan."""
MAX_MEMORY_GB = 16.0
"""Most memory the simulated scan may need (object canvas, patterns, one tile's object)."""
MIN_STEP_PX = 0.5
"""Smallest scan step: below half a pixel, neighbouring patterns nearly coincide."""


class PretrainConfig(BaseModel):
    """The recipe of the synthetic pretraining data (``--set pretrain.KEY=VALUE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    n_objects: int = Field(24, ge=1, le=100_000, description="Simulated objects (tiles).")
    positions_per_object: int = Field(
        196, ge=MIN_POSITIONS, le=100_000, description="Scan positions per object."
    )
    step_px: float | None = Field(
        None, gt=0, description="Scan step in pixels, from 0.5 to below N; None: the scan's, "
        "else N / 8."
    )
    pattern: Pattern = Field(
        "mixed",
        description="'mixed' (raster/fermat/random per tile), one of them, or 'scan' "
        "(windows of the --scan's own positions; the default with --scan).",
    )
    jitter_px: float = Field(0.5, ge=0, le=64, description="Std of random position errors (px).")
    photons: float | None = Field(
        None, ge=1, le=1e12, description="Central dose, photons per pattern; None: the scan's "
        "mean counts, else 1e6."
    )
    dose_range: tuple[float, float] = Field(
        (0.1, 10.0), description="Per-object dose factor range (log-uniform) around photons."
    )
    object_kinds: tuple[ObjectKind, ...] = Field(
        ("textured", "image", "grf", "lines"), description="Object generators drawn from."
    )
    poisson_noise: bool = Field(True, description="Draw Poisson counts.")
    margin_px: int | None = Field(
        None, ge=0, description="Object margin around each tile's scan; None: N / 4."
    )

    @field_validator("dose_range")
    @classmethod
    def _dose(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"dose_range must satisfy 0 < min <= max; found {v}")
        return v

    @field_validator("positions_per_object")
    @classmethod
    def _total(cls, v: int, info: ValidationInfo) -> int:
        n = info.data.get("n_objects")
        if n is not None and n * v > MAX_PATTERNS:
            raise ValueError(
                f"n_objects x positions_per_object must be at most {MAX_PATTERNS:,} patterns; "
                f"found {n} x {v} = {n * v:,}"
            )
        return v

    @field_validator("object_kinds")
    @classmethod
    def _kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(
                f"expected at least one of {', '.join(ObjectKind.__args__)}; found an empty list"
            )
        return v


@dataclass(frozen=True)
class Tile:
    """One simulated object of the pretraining scan."""

    index: int
    object_info: dict
    contrast: str
    amplitude_range: tuple[float, float]
    phase_range_rad: tuple[float, float]
    pattern: str
    dose_factor: float
    origin_px: tuple[int, int]
    shape: tuple[int, int]
    n_positions: int

    def as_dict(self) -> dict:
        """JSON-ready description."""
        d = dict(self.__dict__)
        d["origin_px"] = list(self.origin_px)
        d["shape"] = list(self.shape)
        return d


def mean_neighbor_distance(positions_px: np.ndarray) -> float:
    """Mean distance from each position to its nearest other position (px)."""
    pos = np.asarray(positions_px, dtype=np.float64)
    if pos.shape[0] < 2:
        raise DataError("positions: need at least 2 positions to measure the scan step.")
    dist, _ = cKDTree(pos).query(pos, k=2)
    d = dist[:, 1]
    d = d[d > 1e-9]
    if d.size == 0:
        raise DataError("positions: all positions coincide; cannot measure the scan step.")
    return float(d.mean())


def sample_contrast(
    rng: np.random.Generator,
) -> tuple[str, tuple[float, float], tuple[float, float]]:
    """A contrast style and its (amplitude_range, phase_range_rad)."""
    style = CONTRASTS[int(rng.choice(len(CONTRASTS), p=CONTRAST_WEIGHTS))]
    centre = rng.uniform(-0.5, 0.5)
    if style == "mixed":
        hi = rng.uniform(0.8, 1.0)
        amp = (rng.uniform(0.05, hi - 0.1), hi)
        span = rng.uniform(0.3, 3.0)
    elif style == "phase":
        a = rng.uniform(0.85, 1.0)
        amp = (a, a)
        span = rng.uniform(0.5, 3.0)
    elif style == "weak":
        hi = rng.uniform(0.9, 1.0)
        amp = (hi - rng.uniform(0.02, 0.1), hi)
        span = rng.uniform(0.05, 0.4)
    else:
        amp = (rng.uniform(0.05, 0.6), rng.uniform(0.8, 1.0))
        span = rng.uniform(0.0, 0.1)
    phase = (centre - span / 2, centre + span / 2)
    return style, (float(amp[0]), float(amp[1])), (float(phase[0]), float(phase[1]))


def sample_object(
    shape: tuple[int, int], rng: np.random.Generator, N: int, kinds: tuple[str, ...]
) -> tuple[np.ndarray, dict, str, tuple[float, float], tuple[float, float]]:
    """A random training object (never a held-out picture) and its description."""
    kind = kinds[int(rng.integers(len(kinds)))]
    style, amp, phase = sample_contrast(rng)
    image = TEXTURE_POOL[int(rng.integers(len(TEXTURE_POOL)))] if kind == "image" else None
    obj, info = make_object(
        kind, shape, rng, N=N, amplitude_range=amp, phase_range_rad=phase, image=image
    )
    if any(p in HELD_OUT_IMAGES for p in info.get("pictures", [])):  # pragma: no cover
        raise RuntimeError(f"held-out picture used in pretraining: {info}")
    return obj, info, style, amp, phase


def tile_positions(
    pattern: str,
    n: int,
    step_px: float,
    jitter_px: float,
    rng: np.random.Generator,
    template_px: np.ndarray | None = None,
) -> tuple[np.ndarray, str]:
    """Relative positions of one tile and the pattern actually used.

    'scan' takes the ``n`` template positions nearest to a random one (a
    window of the user's own scan) plus jitter.
    """
    if pattern == "scan":
        if template_px is None:
            raise ConfigError("pretrain.pattern='scan' needs a template scan (--scan SCAN).")
        tree = cKDTree(template_px)
        k = min(n, template_px.shape[0])
        centre = template_px[int(rng.integers(template_px.shape[0]))]
        _, idx = tree.query(centre, k=k)
        rel = template_px[np.atleast_1d(idx)] - centre
        if jitter_px > 0:
            rel = rel + rng.normal(0.0, jitter_px, size=rel.shape)
        return rel, "scan"
    if pattern == "mixed":
        pattern = ("raster", "fermat", "random")[int(rng.integers(3))]
    return make_positions(pattern, n, step_px, jitter_px, rng), pattern


def local_frame(rel: np.ndarray, N: int, margin: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Shift relative positions into a tile frame with ``margin`` px beyond
    every patch; returns the positions and the tile's shape."""
    pos = rel - np.floor(rel.min(axis=0)) + N / 2 + margin
    hi = pos.max(axis=0) + N / 2 + margin
    return pos, (int(np.ceil(hi[0])), int(np.ceil(hi[1])))


def _kth_neighbor_distance(pos: np.ndarray, k: int) -> float:
    k = min(k, pos.shape[0])
    if k < 2:
        return 0.0
    dist, _ = cKDTree(pos).query(pos, k=k)
    return float(dist[:, -1].max())


def expected_counts(obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray) -> np.ndarray:
    """``(n, N, N)`` float32 expected counts summed over the probe modes ``(M, N, N)``."""
    n, N = positions_px.shape[0], probe.shape[-1]
    total = np.zeros((n, N, N), dtype=np.float32)
    buf = np.empty_like(total)
    for mode in probe:
        forward_counts(obj, mode, positions_px, out=buf)
        total += buf
    return total


def _check_step(step_px: float, N: int) -> None:
    """ConfigError when the step makes neighbouring positions coincide or leaves their
    N x N windows without overlap."""
    if not MIN_STEP_PX <= step_px < N:
        raise ConfigError(
            f"pretrain.step_px: expected a scan step from {MIN_STEP_PX:g} px (closer positions "
            f"nearly coincide) to below N = {N} px (neighbouring {N}x{N} patterns would not "
            f"overlap); found {step_px:.3g} px (pretrain.step_px, else the --scan's step, "
            "else N / 8)."
        )


def _check_template(
    template_px: np.ndarray | None, per_object: int, neighbor_count: int
) -> None:
    """ConfigError when the --scan template has too few positions for one object's
    window; a warning when it has fewer than ``per_object`` (each object gets them all)."""
    if template_px is None:
        raise ConfigError("pretrain.pattern='scan' needs a template scan (--scan SCAN).")
    n = int(template_px.shape[0])
    need = max(MIN_POSITIONS, neighbor_count)
    if n < need:
        raise ConfigError(
            f"--scan: each simulated object is scanned by a window of the scan's positions "
            f"and needs at least {need} (pretrain.positions_per_object, and the grouping "
            f"neighbourhood {neighbor_count}); the scan has {n}. Use a scan with more "
            "positions, or set pretrain.pattern to raster, fermat, random or mixed."
        )
    if n < per_object:
        log.warning(
            "--scan has %d positions, fewer than pretrain.positions_per_object=%d: each "
            "simulated object is scanned at all %d (set pretrain.positions_per_object=%d to "
            "silence this).", n, per_object, n, n,
        )


def _check_memory(canvas_shape: tuple[int, int], n_patterns: int, N: int,
                  largest_tile_px: int) -> None:
    """ConfigError when the simulated scan would need more than `MAX_MEMORY_GB`: the
    complex64 canvas, the float32 patterns and one tile's object with its generator's
    float64 intermediates (about 4 copies)."""
    canvas = math.prod(canvas_shape) * 8 / 1e9
    patterns = n_patterns * N * N * 4 / 1e9
    tile = largest_tile_px * 8 * 4 / 1e9
    need = canvas + patterns + tile
    if need > MAX_MEMORY_GB:
        raise ConfigError(
            f"pretrain recipe: the simulated scan would need about {need:.3g} GB of memory "
            f"(object canvas {canvas_shape[0]} x {canvas_shape[1]}: {canvas:.3g} GB; the "
            f"largest object while it is drawn: {tile:.3g} GB; {n_patterns:,} patterns of "
            f"{N}x{N}: {patterns:.3g} GB); expected at most "
            f"{MAX_MEMORY_GB:g} GB. Lower pretrain.n_objects or pretrain.positions_per_object "
            "(fewer patterns), or pretrain.step_px or pretrain.margin_px (smaller objects)."
        )


def build_pretraining_scan(
    probe: np.ndarray,
    recipe: PretrainConfig,
    *,
    step_px: float,
    photons: float,
    seed: int = 0,
    template_px: np.ndarray | None = None,
    bad_pixel_mask: np.ndarray | None = None,
    neighbor_count: int = 6,
) -> Scan:
    """Simulate the tiled pretraining `Scan` (see the module docs).

    Parameters
    ----------
    probe
        ``(N, N)`` or ``(M, N, N)`` complex probe (any scale: it is rescaled so
        the mean expected counts per pattern at dose factor 1 are ``photons``).
    recipe
        Objects, pattern, dose range, noise.
    step_px, photons
        Resolved scan step and central dose.
    template_px
        Positions of a real scan, for ``recipe.pattern == 'scan'``.
    bad_pixel_mask
        ``(N, N)`` True = bad pixel; those pixels are zeroed and the mask kept.
    neighbor_count
        The grouping neighbourhood K the tiles must be separated by.
    """
    probe = np.asarray(probe, dtype=np.complex64)
    probe = probe[None] if probe.ndim == 2 else probe
    N = probe.shape[-1]
    margin = recipe.margin_px if recipe.margin_px is not None else N // 4
    if recipe.positions_per_object < neighbor_count:
        raise ConfigError(
            f"pretrain.positions_per_object must be at least the grouping neighbourhood "
            f"({neighbor_count}); found {recipe.positions_per_object}."
        )
    if recipe.pattern == "scan":
        _check_template(template_px, recipe.positions_per_object, neighbor_count)
    else:
        _check_step(step_px, N)
    seeds = np.random.SeedSequence(seed).spawn(recipe.n_objects)
    layouts = []
    for t, ss in enumerate(seeds):
        rng = np.random.default_rng(ss)
        rel, used = tile_positions(
            recipe.pattern, recipe.positions_per_object, step_px, recipe.jitter_px, rng,
            template_px,
        )
        local, shape = local_frame(rel, N, margin)
        layouts.append((t, rng, local, shape, used))
    reach = max(_kth_neighbor_distance(lay[2], neighbor_count) for lay in layouts)
    spacing = max(0, int(math.ceil(reach + 1 - (N + 2 * margin))))
    cell = np.max([lay[3] for lay in layouts], axis=0) + spacing
    cols = int(math.ceil(math.sqrt(recipe.n_objects)))
    rows = int(math.ceil(recipe.n_objects / cols))
    n_total = sum(lay[2].shape[0] for lay in layouts)
    _check_memory((rows * int(cell[0]), cols * int(cell[1])), n_total, N,
                  max(math.prod(lay[3]) for lay in layouts))
    canvas = np.ones((rows * cell[0], cols * cell[1]), dtype=np.complex64)

    counts = np.empty((n_total, N, N), dtype=np.float32)
    positions = np.empty((n_total, 2), dtype=np.float64)
    tile_id = np.empty(n_total, dtype=np.int64)
    tiles: list[Tile] = []
    dose_lo, dose_hi = recipe.dose_range
    start = 0
    for t, rng, local, shape, used in layouts:
        origin = ((t // cols) * int(cell[0]), (t % cols) * int(cell[1]))
        obj, info, style, amp, phase = sample_object(shape, rng, N, recipe.object_kinds)
        canvas[origin[0] : origin[0] + shape[0], origin[1] : origin[1] + shape[1]] = obj
        stop = start + local.shape[0]
        counts[start:stop] = expected_counts(obj, probe, local)
        positions[start:stop] = local + np.asarray(origin, dtype=np.float64)
        tile_id[start:stop] = t
        dose = float(np.exp(rng.uniform(np.log(dose_lo), np.log(dose_hi))))
        tiles.append(
            Tile(t, info, style, amp, phase, used, dose, origin, shape, local.shape[0])
        )
        start = stop

    mean_counts = float(counts.sum(dtype=np.float64) / n_total)
    if mean_counts <= 0:
        raise DataError("the probe gives no signal (all-zero expected patterns).")
    scale2 = photons / mean_counts
    for tile, (t, rng, _, _, _) in zip(tiles, layouts, strict=True):
        sl = tile_id == t
        lam = counts[sl] * np.float32(scale2 * tile.dose_factor)
        if recipe.poisson_noise:
            lam = rng.poisson(lam).astype(np.float32)
        counts[sl] = np.sqrt(lam / np.float32(tile.dose_factor))
    if bad_pixel_mask is not None:
        counts[:, np.asarray(bad_pixel_mask, dtype=bool)] = 0.0
    scaled_probe = (probe.astype(np.complex128) * math.sqrt(scale2)).astype(np.complex64)
    tile_photons = [
        float(np.mean(np.sum(counts[tile_id == t.index] ** 2, axis=(1, 2))) * t.dose_factor)
        for t in tiles
    ]
    meta = {
        "N": N,
        "step_px": float(step_px),
        "photons": float(photons),
        "dose_range": list(recipe.dose_range),
        "margin_px": int(margin),
        "tile_spacing_px": int(spacing),
        "neighbor_count": int(neighbor_count),
        "canvas_shape": list(canvas.shape),
        "n_patterns": int(n_total),
        "seed": int(seed),
        "recipe": recipe.model_dump(mode="json"),
        "tiles": [t.as_dict() | {"measured_photons": p} for t, p in zip(tiles, tile_photons,
                                                                          strict=True)],
    }
    log.info(
        "pretraining scan: %d objects, %d patterns N=%d, step %.3g px, %.3g photons "
        "(x%.3g..x%.3g), canvas %s",
        recipe.n_objects, n_total, N, step_px, photons, dose_lo, dose_hi, canvas.shape,
    )
    return Scan(
        diffraction=counts,
        positions_px=positions,
        probe=scaled_probe,
        object=canvas,
        scan_index=tile_id,
        bad_pixel_mask=bad_pixel_mask,
        amplitude_units="sqrt_counts",
        source=f"<pretraining seed={seed}>",
        metadata={"pretraining": meta},
    )
