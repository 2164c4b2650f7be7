"""Does a pretrained model generalise? Score it on scans of unseen objects.

`evaluate_generalisation` simulates new scans through the pretraining probe
of objects the pretraining never saw (`HELD_OUT_IMAGES`), with another seed
and by default another scan pattern, reconstructs them by plain inference
with the pretrained bundle and scores them (`ptychopinn.metrics.evaluate`),
timing the inference.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from ptychopinn.data.scan import Scan
from ptychopinn.errors import ConfigError
from ptychopinn.simulation import HELD_OUT_IMAGES, make_object, make_positions

log = logging.getLogger(__name__)

DEFAULT_EVAL_IMAGES: tuple[str, ...] = ("clock", "retina", "shepp_logan_phantom")


def simulate_heldout_scan(
    probe: np.ndarray,
    image: str,
    *,
    n_positions: int = 400,
    step_px: float,
    photons: float,
    pattern: str = "fermat",
    jitter_px: float = 0.5,
    amplitude_range: tuple[float, float] = (0.5, 1.0),
    phase_range_rad: tuple[float, float] = (-1.0, 1.0),
    seed: int = 1,
) -> Scan:
    """A Poisson-noisy scan of the held-out picture ``image`` through ``probe``
    ``(M, N, N)`` (rescaled to ``photons`` mean counts per pattern)."""
    from ptychopinn.pretraining.dataset import expected_counts, local_frame

    if image not in HELD_OUT_IMAGES:
        raise ConfigError(
            f"image: expected one of the held-out pictures {HELD_OUT_IMAGES}; found {image!r}."
        )
    probe = np.asarray(probe, dtype=np.complex64)
    probe = probe[None] if probe.ndim == 2 else probe
    N = probe.shape[-1]
    obj_ss, pos_ss, noise_ss = np.random.SeedSequence(seed).spawn(3)
    rel = make_positions(pattern, n_positions, step_px, jitter_px, np.random.default_rng(pos_ss))
    pos, shape = local_frame(rel, N, N // 2)
    obj, info = make_object(
        "image", shape, np.random.default_rng(obj_ss), N=N, amplitude_range=amplitude_range,
        phase_range_rad=phase_range_rad, image=image,
    )
    counts = expected_counts(obj, probe, pos)
    scale2 = photons / float(counts.sum(dtype=np.float64) / n_positions)
    lam = counts * np.float32(scale2)
    amps = np.sqrt(np.random.default_rng(noise_ss).poisson(lam).astype(np.float32))
    return Scan(
        diffraction=amps,
        positions_px=pos,
        probe=(probe.astype(np.complex128) * math.sqrt(scale2)).astype(np.complex64),
        object=obj,
        amplitude_units="sqrt_counts",
        source=f"<held-out {image} seed={seed}>",
        metadata={"object": info, "pattern": pattern, "photons": photons},
    )


def evaluate_generalisation(
    run_dir: str | os.PathLike,
    *,
    seed: int = 1,
    images: tuple[str, ...] | None = None,
    n_positions: int = 400,
    pattern: str = "fermat",
    photons: float | None = None,
    accelerator: str = "cpu",
    scans: list[Scan] | None = None,
) -> dict:
    """Reconstruct held-out objects with a pretrained run by plain inference.

    Parameters
    ----------
    run_dir
        A `pretrain` run directory (bundle, ``pretraining.json``, probe).
    seed
        Seed of the held-out scans (use one the pretraining did not).
    images
        Held-out pictures (default `DEFAULT_EVAL_IMAGES`).
    n_positions, pattern, photons
        Held-out scan size, pattern and dose (default: the central dose).
    accelerator
        Inference device ('cpu', 'gpu', 'auto').
    scans
        Reconstruct these scans (with truth) instead of simulating.

    Returns
    -------
    dict
        ``per_scan`` (image, amp_ssim, phase_ssim, psnrs, timings) and the
        means ``amp_ssim``, ``phase_ssim``, ``ms_per_pattern``.
    """
    from ptychopinn.api import load_bundle, reconstruct
    from ptychopinn.config.schema import InferenceConfig
    from ptychopinn.metrics import evaluate
    from ptychopinn.pretraining.pretrain import PROBE_FILE, load_probe, read_recipe

    run = Path(run_dir)
    recipe = read_recipe(run)
    if scans is None:
        probe = load_probe(run / PROBE_FILE, option="pretraining probe")
        scans = [
            simulate_heldout_scan(
                probe, img, n_positions=n_positions, step_px=recipe["step_px"],
                photons=photons or recipe["photons"], pattern=pattern, seed=seed + k,
            )
            for k, img in enumerate(images or DEFAULT_EVAL_IMAGES)
        ]
    model = load_bundle(run)
    icfg = InferenceConfig(execution={"accelerator": accelerator, "logger": "none"}, figures=False)
    reconstruct(model, scans[0].subset(np.arange(min(16, scans[0].n_patterns))), icfg)  # warm-up
    rows = []
    for scan in scans:
        t0 = time.perf_counter()
        recon = reconstruct(model, scan, icfg)
        wall = time.perf_counter() - t0
        m = evaluate(recon.object, scan.object, positions_px=recon.positions_px,
                     patch_size=scan.patch_size)
        rows.append({
            "scan": scan.source,
            "image": (scan.metadata.get("object") or {}).get("pictures", [None])[0],
            "n_patterns": scan.n_patterns,
            **{k: float(m[k]) for k in ("amp_ssim", "phase_ssim", "amp_psnr", "phase_psnr")
               if isinstance(m.get(k), (int, float))},
            "predict_seconds": float(recon.timings_s.get("predict", float("nan"))),
            "inference_seconds": wall,
            "ms_per_pattern": 1e3 * wall / scan.n_patterns,
        })
        log.info("held-out %s: amp_ssim %.3f phase_ssim %.3f, %.2f ms/pattern", rows[-1]["image"],
                 rows[-1].get("amp_ssim", float("nan")), rows[-1].get("phase_ssim", float("nan")),
                 rows[-1]["ms_per_pattern"])
    out = {"run": str(run), "seed": seed, "pattern": pattern, "per_scan": rows}
    for key in ("amp_ssim", "phase_ssim", "ms_per_pattern"):
        vals = [r[key] for r in rows if key in r]
        out[key] = float(np.mean(vals)) if vals else None
    out["load_average"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return out
