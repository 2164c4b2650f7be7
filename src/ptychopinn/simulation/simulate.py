"""Simulate a far-field ptychographic scan from a `SimulationConfig`.

The physics is exactly the one of the data contract (`ptychopinn.data.scan`):
the patch at probe centre ``[y, x]`` samples the object at
``(y - N/2 + i, x - N/2 + j)`` and the expected counts are
``|fftshift(fft2(probe * patch, norm="ortho"))|**2``. For a fractional
position the default (``subpixel='probe_shift'``) takes the whole-pixel
window nearest the position and shifts the probe by the remainder (Fourier
shift theorem), which is exact for a band-limited probe; far-field
intensities do not change under a circular shift of the exit wave, so this is
the data contract's model with the object Fourier-interpolated.
``subpixel='bilinear'`` interpolates the object bilinearly instead (smoother). The probe is scaled so
the mean expected count per pattern equals ``photons_per_pattern``; the scaled
probe is the one stored in the `Scan`, so the Poisson likelihood of the stored
``sqrt(counts)`` is exact.

Work is done in fixed chunks of about 2^20 pixels on a thread pool (numpy,
scipy.fft and the random generators release the GIL), so 10^5 patterns need
little memory beyond the output itself and the result does not depend on the
number of threads.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft as sfft

from ptychopinn.data.scan import Scan
from ptychopinn.errors import ConfigError, DataError
from ptychopinn.simulation.objects import load_object_file, make_object
from ptychopinn.simulation.patterns import make_positions
from ptychopinn.simulation.probes import make_probe
from ptychopinn.simulation.spec import SimulationConfig

log = logging.getLogger(__name__)

CHUNK_PIXELS = 2**20


def extract_patches(obj: np.ndarray, positions_px: np.ndarray, N: int) -> np.ndarray:
    """Bilinearly interpolated ``(n, N, N)`` complex64 patches of ``obj``.

    Patch pixel ``(i, j)`` of the patch at probe centre ``[y, x]`` samples the
    object at ``(y - N/2 + i, x - N/2 + j)``; integer positions give exact
    copies of object pixels. Every patch must lie inside the object
    (``y - N/2 >= 0`` and ``y + N/2 <= H``, likewise for x).
    """
    obj = np.asarray(obj)
    pos = np.asarray(positions_px, dtype=np.float64).reshape(-1, 2)
    h, w = obj.shape
    top = pos - N / 2
    if pos.size and (top.min() < 0 or np.any(top[:, 0] + N > h) or np.any(top[:, 1] + N > w)):
        raise DataError(
            f"positions_px: every N={N} patch must lie inside the object of shape {obj.shape}; "
            f"found patches spanning rows [{top[:, 0].min():.2f}, {top[:, 0].max() + N:.2f}) "
            f"and columns [{top[:, 1].min():.2f}, {top[:, 1].max() + N:.2f})."
        )
    base = np.floor(top).astype(np.int64)
    frac = (top - base).astype(np.float32)
    if pos.size and (base[:, 0].max() + N >= h or base[:, 1].max() + N >= w):
        # a patch touching the far edge: its (N+1)-wide window needs one more
        # row/column, which gets weight 0
        obj = np.pad(obj, ((0, 1), (0, 1)), mode="edge")
    windows = sliding_window_view(obj, (N + 1, N + 1))
    block = windows[base[:, 0], base[:, 1]]
    fy = frac[:, 0, None, None]
    fx = frac[:, 1, None, None]
    vert = block[:, :-1, :] * (1 - fy) + block[:, 1:, :] * fy
    out = vert[:, :, :-1] * (1 - fx) + vert[:, :, 1:] * fx
    return out.astype(np.complex64, copy=False)


def probe_shift_patches(
    obj: np.ndarray, probe: np.ndarray, positions_px: np.ndarray, N: int
) -> tuple[np.ndarray, np.ndarray]:
    """Whole-pixel object windows and sub-pixel-shifted probes of every position.

    The window's corner is ``round(position - N/2)``; the probe is shifted by
    the remainder ``f`` (in [-0.5, 0.5]) with the Fourier shift theorem,
    ``P(r - f)``, so ``probes * patches`` is the exit wave of the probe at the
    exact position without interpolating the object. Returns ``(patches
    (n, N, N), probes (n, N, N))`` complex64.
    """
    pos = np.asarray(positions_px, dtype=np.float64).reshape(-1, 2)
    top = pos - N / 2
    corner = np.round(top)
    patches = extract_patches(obj, corner + N / 2, N)
    frac = top - corner
    freq = sfft.fftfreq(N)
    ramp_y = np.exp(-2j * np.pi * frac[:, 0, None] * freq)
    ramp_x = np.exp(-2j * np.pi * frac[:, 1, None] * freq)
    spectrum = sfft.fft2(np.asarray(probe, dtype=np.complex128))
    probes = sfft.ifft2(spectrum * ramp_y[:, :, None] * ramp_x[:, None, :])
    return patches, probes.astype(np.complex64)


def far_field_counts(probe: np.ndarray, patches: np.ndarray, workers: int = 1) -> np.ndarray:
    """Expected counts ``|fftshift(fft2(probe * patches, norm="ortho"))|**2`` (float32)."""
    field = sfft.fft2(probe * patches, norm="ortho", workers=workers)
    counts = np.square(field.real) + np.square(field.imag)
    return sfft.fftshift(counts, axes=(-2, -1)).astype(np.float32, copy=False)


def _chunks(n: int, N: int) -> list[tuple[int, int]]:
    """Fixed chunks of about CHUNK_PIXELS pixels (independent of the machine,
    so seeded noise is reproducible everywhere)."""
    size = max(1, CHUNK_PIXELS // (N * N))
    return [(s, min(n, s + size)) for s in range(0, n, size)]


def _n_threads() -> int:
    return max(1, min(16, os.cpu_count() or 1))


def forward_counts(
    obj: np.ndarray,
    probe: np.ndarray,
    positions_px: np.ndarray,
    out: np.ndarray | None = None,
    subpixel: str = "probe_shift",
) -> float:
    """Fill ``out`` ``(n, N, N)`` float32 with the expected counts of every
    position (chunked, threaded) and return their total (float64).

    ``probe`` is one ``(N, N)`` mode; ``subpixel`` is ``"probe_shift"``
    (`probe_shift_patches`) or ``"bilinear"`` (`extract_patches`).
    """
    if subpixel not in ("bilinear", "probe_shift"):
        raise ConfigError(f"subpixel: expected 'bilinear' or 'probe_shift'; found {subpixel!r}.")
    N = probe.shape[-1]
    n = positions_px.shape[0]
    if out is None:
        out = np.empty((n, N, N), dtype=np.float32)

    def work(bounds: tuple[int, int]) -> float:
        s, e = bounds
        if subpixel == "probe_shift":
            patches, probes = probe_shift_patches(obj, probe, positions_px[s:e], N)
            out[s:e] = far_field_counts(probes, patches, workers=1)
        else:
            out[s:e] = far_field_counts(probe, extract_patches(obj, positions_px[s:e], N),
                                        workers=1)
        return float(out[s:e].sum(dtype=np.float64))

    chunks = _chunks(n, N)
    if len(chunks) == 1:
        return work(chunks[0])
    with ThreadPoolExecutor(_n_threads()) as pool:
        return float(sum(pool.map(work, chunks)))


def _counts_to_amplitudes(
    counts: np.ndarray, scale2: float, noise: np.random.SeedSequence | None
) -> None:
    """In place: scale the expected counts, draw Poisson counts (one child seed
    per fixed chunk, so threads do not change the result) and take sqrt."""
    chunks = _chunks(counts.shape[0], counts.shape[-1])
    seeds = noise.spawn(len(chunks)) if noise is not None else [None] * len(chunks)

    def work(job: tuple[tuple[int, int], np.random.SeedSequence | None]) -> None:
        (s, e), seed = job
        block = counts[s:e]
        if scale2 != 1.0:
            block *= np.float32(scale2)
        if seed is not None:
            block[...] = np.random.default_rng(seed).poisson(block)
        np.sqrt(block, out=block)

    jobs = list(zip(chunks, seeds, strict=True))
    if len(jobs) == 1:
        work(jobs[0])
        return
    with ThreadPoolExecutor(_n_threads()) as pool:
        list(pool.map(work, jobs))


def _place_positions(
    rel: np.ndarray, N: int, margin: int, fixed_shape: tuple[int, int] | None, cfg_desc: str
) -> tuple[np.ndarray, tuple[int, int]]:
    """Shift pattern positions into an object frame; returns positions and shape."""
    if fixed_shape is None:
        pos = rel - np.floor(rel.min(axis=0)) + N / 2 + margin
        hi = pos.max(axis=0) + N / 2 + margin
        return pos, (int(np.ceil(hi[0])), int(np.ceil(hi[1])))
    shape = np.asarray(fixed_shape, dtype=np.float64)
    pos = rel - (rel.min(axis=0) + rel.max(axis=0)) / 2 + shape / 2
    span = rel.max(axis=0) - rel.min(axis=0) + N
    if np.any(span > shape):
        raise ConfigError(
            f"object_file: the scan ({cfg_desc}) needs an object of at least "
            f"{int(np.ceil(span[0]))} x {int(np.ceil(span[1]))} pixels; the file's object is "
            f"{fixed_shape[0]} x {fixed_shape[1]}. Use fewer n_positions or a smaller step_px."
        )
    spare = (shape - span) / 2
    if np.any(spare < margin):
        log.info("object_file: only %.1f px of margin around the scan (asked %d).",
                 float(spare.min()), margin)
    return pos, tuple(int(s) for s in fixed_shape)  # type: ignore[return-value]


def simulate_scan(cfg: SimulationConfig) -> Scan:
    """Simulate the scan described by ``cfg`` (see the module docs).

    Returns a `Scan` with float32 amplitudes ``sqrt(counts)``
    (``amplitude_units='sqrt_counts'``; 'arbitrary' when
    ``photons_per_pattern`` is None), the scaled probe ``(1, N, N)``, the true
    complex64 object, ``scan_index`` zeros and ``metadata['simulation']`` (the
    config) plus ``metadata['simulation_resolved']`` (sizes and choices made).
    """
    t0 = time.perf_counter()
    N = cfg.N
    obj_ss, pos_ss, noise_ss = np.random.SeedSequence(cfg.seed).spawn(3)
    rng_obj = np.random.default_rng(obj_ss)
    rng_pos = np.random.default_rng(pos_ss)

    step = cfg.effective_step_px
    rel = make_positions(cfg.pattern, cfg.n_positions, step, cfg.jitter_px, rng_pos)
    desc = f"{cfg.n_positions} {cfg.pattern} positions, step {step:g} px, N={N}"
    if cfg.object_kind == "file":
        assert cfg.object_file is not None
        obj = load_object_file(cfg.object_file)
        positions, _ = _place_positions(rel, N, cfg.effective_margin_px, obj.shape, desc)
        obj_info: dict = {"kind": "file", "file": str(cfg.object_file)}
    else:
        positions, shape = _place_positions(rel, N, cfg.effective_margin_px, None, desc)
        obj, obj_info = make_object(
            cfg.object_kind, shape, rng_obj, N=N, amplitude_range=cfg.amplitude_range,
            phase_range_rad=cfg.phase_range_rad, image=cfg.object_image,
        )

    probe = make_probe(
        cfg.probe_kind, N, diameter_px=cfg.effective_probe_diameter_px,
        fresnel_number=cfg.defocus_fresnel_number, probe_file=cfg.probe_file,
    )

    n = cfg.n_positions
    counts = np.empty((n, N, N), dtype=np.float32)
    mean_counts = forward_counts(obj, probe, positions, out=counts, subpixel=cfg.subpixel) / n
    if mean_counts <= 0:
        raise ConfigError("simulation: the object and probe give no signal (all-zero patterns).")
    scale2 = 1.0
    if cfg.photons_per_pattern is not None:
        scale2 = cfg.photons_per_pattern / mean_counts
        probe = (probe.astype(np.complex128) * np.sqrt(scale2)).astype(np.complex64)
    _counts_to_amplitudes(counts, scale2, noise_ss if cfg.noisy else None)

    resolved = cfg.resolved() | {
        "object": obj_info,
        "object_shape": [int(obj.shape[0]), int(obj.shape[1])],
        "probe_scale": float(np.sqrt(scale2)),
        "mean_expected_counts": float(mean_counts * scale2),
        "noisy": cfg.noisy,
    }
    scan = Scan(
        diffraction=counts,
        positions_px=positions,
        probe=probe[None],
        object=obj,
        scan_index=np.zeros(n, dtype=np.int64),
        amplitude_units="sqrt_counts" if cfg.photons_per_pattern is not None else "arbitrary",
        source=f"<simulated seed={cfg.seed}>",
        metadata={"simulation": cfg.model_dump(mode="json"), "simulation_resolved": resolved},
    )
    log.info(
        "simulated %d patterns N=%d (%s object %s, %s probe, %s) in %.2f s",
        n, N, cfg.object_kind, obj.shape, cfg.probe_kind,
        f"{cfg.photons_per_pattern:.3g} photons/pattern" if cfg.photons_per_pattern else
        "noise-free", time.perf_counter() - t0,
    )
    return scan


def simulate_to_file(cfg: SimulationConfig, path: str | os.PathLike) -> Scan:
    """Simulate with `simulate_scan` and write the scan with `save_npz` (atomic)."""
    from ptychopinn.data.npz import save_npz

    scan = simulate_scan(cfg)
    out = save_npz(scan, Path(path))
    log.info("wrote %s", out)
    return scan
