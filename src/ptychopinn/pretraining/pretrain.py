"""Pretrain a model for one probe: resolve the inputs, simulate, train, record.

`pretrain` builds the tiled synthetic scan of `ptychopinn.pretraining.dataset`
and trains on it with the unchanged runner (`train_pytorch`), then writes
``RUN/pretraining.json`` (the recipe: probe source, N, step, dose range,
objects, seeds) and ``RUN/pretraining_probe.npz`` (the probe, ``probeGuess``
``(M, N, N)``). ``ptychopinn train --init RUN`` fine-tunes the result on a
real scan; ``ptychopinn infer --model RUN`` reconstructs one directly.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.atomic import atomic_write_text, check_output_dir, ensure_dir
from ptychopinn.bundle.format import BUNDLE_FILENAME
from ptychopinn.config.schema import ALLOWED_N
from ptychopinn.data.scan import Scan
from ptychopinn.errors import ConfigError, DataError, OutputPathError
from ptychopinn.pretraining.dataset import (
    DEFAULT_PHOTONS,
    PretrainConfig,
    build_pretraining_scan,
    mean_neighbor_distance,
)

log = logging.getLogger(__name__)

PROBE_FILE = "pretraining_probe.npz"
RECIPE_FILE = "pretraining.json"


@dataclass
class ProbeSource:
    """What the user's probe and scan say about the pretraining geometry."""

    probe: np.ndarray  # (M, N, N) complex64
    description: str
    step_px: float | None = None
    photons: float | None = None
    template_px: np.ndarray | None = None
    bad_pixel_mask: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def N(self) -> int:
        return int(self.probe.shape[-1])


def _fit_modes(probe: np.ndarray, N: int, where: str) -> np.ndarray:
    from ptychopinn.simulation.probes import fit_probe_to_size

    return np.stack([fit_probe_to_size(m, N, source=where) for m in probe]).astype(np.complex64)


def load_probe(
    path: str | os.PathLike, N: int | None = None, *, option: str = "--probe"
) -> np.ndarray:
    """A complex ``(M, N, N)`` probe from an NPZ (``probeGuess`` or ``probe``;
    ``.npz.bz2`` too) or ``.npy`` file.

    ``N`` None keeps the file's size (which must be one of 32, 64, 128, 256);
    otherwise each mode is cropped, padded or resampled to ``N``.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{option} {p}: file not found.")
    name = p.name.lower()
    try:
        if name.endswith(".npy"):
            arr = np.load(p, allow_pickle=False)
        elif name.endswith((".npz", ".npz.bz2", ".bz2")):
            from ptychopinn.data.readers.tike import read_npz_arrays

            try:
                arrays = read_npz_arrays(p)
            except DataError as exc:
                raise DataError(f"{option} {exc}") from exc
            key = next((k for k in ("probeGuess", "probe") if k in arrays), None)
            if key is None:
                raise DataError(
                    f"{option} {p}: expected a probe file holding 'probeGuess' (or 'probe'), a "
                    f"complex (N, N) or (M, N, N) array; keys found: {sorted(arrays)}."
                )
            arr = arrays[key]
        else:
            raise DataError(
                f"{option} {p}: expected a probe file (.npz with 'probeGuess', or .npy holding a "
                f"complex (N, N) array); found suffix {p.suffix!r}. For a CXI/HDF5 scan use "
                "--scan instead."
            )
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{option} {p}: cannot read it as NPZ or .npy ({exc}).") from exc
    arr = np.asarray(arr)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    if not np.iscomplexobj(arr) or arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise DataError(
            f"{option} {p}: the probe must be a complex (N, N) or (M, N, N) array; found shape "
            f"{arr.shape} dtype {arr.dtype}."
        )
    if not np.all(np.isfinite(arr)) or not np.any(np.abs(arr) > 0):
        raise DataError(f"{option} {p}: the probe must be finite and non-zero.")
    if N is None:
        if arr.shape[-1] not in ALLOWED_N:
            raise DataError(
                f"{option} {p}: the probe is {arr.shape[-1]}x{arr.shape[-1]} but N must be one of "
                f"{ALLOWED_N}; pass --set model.N=64 (or another) to crop/resample it."
            )
        return arr.astype(np.complex64)
    return _fit_modes(arr, N, str(p))


def resolve_source(
    probe: np.ndarray | str | os.PathLike | None = None,
    scan: Scan | str | os.PathLike | None = None,
    N: int | None = None,
) -> ProbeSource:
    """The probe and geometry to pretrain for.

    ``scan`` gives N, the probe, the scan step (mean nearest-neighbour
    distance), the positions (as a pattern template), the bad-pixel mask and
    the central dose (its mean counts per pattern); ``probe`` (array or file)
    overrides the scan's probe.
    """
    if probe is None and scan is None:
        raise ConfigError(
            "pretrain needs the probe to pretrain for: pass --probe FILE (NPZ with 'probeGuess' "
            "or .npy) or --scan SCAN (its probe and geometry are used)."
        )
    if N is not None and N not in ALLOWED_N:
        raise ConfigError(
            f"model.N (--set model.N): expected one of {ALLOWED_N}; found {N}."
        )
    src: ProbeSource | None = None
    if scan is not None:
        if not isinstance(scan, Scan):
            from ptychopinn.data.readers import load_scan

            scan = load_scan(scan)
        n_scan = scan.patch_size
        if n_scan not in ALLOWED_N:
            from ptychopinn.training.data import n_mismatch_message

            raise ConfigError(f"--scan: {n_mismatch_message(scan, N or 64)}")
        if N is not None and N != n_scan:
            raise ConfigError(
                f"--scan {scan.source} holds {n_scan}x{n_scan} patterns but model.N={N}; drop "
                f"the model.N override or set it to {n_scan}."
            )
        N = n_scan
        photons = None
        notes = []
        if scan.amplitude_units == "sqrt_counts":
            photons = float(np.mean(np.sum(scan.counts.astype(np.float64), axis=(1, 2))))
        else:
            notes.append(
                f"{scan.source} has arbitrary amplitude units: the central dose defaults to "
                f"{DEFAULT_PHOTONS:g} photons (set pretrain.photons to change it)."
            )
        src = ProbeSource(
            probe=scan.probe,
            description=f"scan {scan.source}",
            step_px=mean_neighbor_distance(scan.positions_px),
            photons=photons,
            template_px=scan.positions_px.copy(),
            bad_pixel_mask=scan.bad_pixel_mask,
            notes=notes,
        )
    if probe is not None:
        if isinstance(probe, (str, os.PathLike)):
            arr = load_probe(probe, N)
            desc = f"probe file {probe}"
        else:
            arr = np.asarray(probe)
            arr = arr[None] if arr.ndim == 2 else arr
            if not np.iscomplexobj(arr) or arr.ndim != 3:
                raise DataError(
                    f"probe: expected a complex (N, N) or (M, N, N) array; found shape "
                    f"{arr.shape} dtype {arr.dtype}."
                )
            arr = _fit_modes(arr, N, "probe") if N is not None else arr.astype(np.complex64)
            desc = "probe array"
        if src is None:
            src = ProbeSource(probe=arr, description=desc)
        else:
            src.probe, src.description = arr, f"{desc} with the geometry of {src.description}"
    assert src is not None
    if src.N not in ALLOWED_N:
        raise ConfigError(f"probe: N must be one of {ALLOWED_N}; found {src.N}.")
    return src


def check_run_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a `Path`; OutputPathError when it already holds a model bundle (a
    finished pretraining or training), which a pretraining would overwrite. A folder
    without one (new, or a pretraining interrupted before its bundle) is fine."""
    out = check_output_dir(out_dir, "--output-dir (the run folder)")
    bundle = out / BUNDLE_FILENAME
    if bundle.exists():
        what = ("a pretrained model" if (out / RECIPE_FILE).is_file() else "a trained model")
        raise OutputPathError(
            f"--output-dir (the run folder) {out}: already holds {what} ({bundle}); expected a "
            "new folder or one without a model bundle. pretrain does not overwrite a model: "
            "choose another --output-dir, or remove that folder first to pretrain again."
        )
    return out


def _training_config(
    out_dir: Path, N: int, supervised: bool, max_minutes: float | None, seed: int | None,
    overrides: dict[str, Any] | None,
):
    from ptychopinn.config.io import build, merge
    from ptychopinn.config.schema import TrainingConfig

    base: dict[str, Any] = {
        "output_dir": str(out_dir),
        "model": {"N": N, "model_type": "supervised" if supervised else "pinn"},
        "max_time_minutes": max_minutes,
        "nepochs": 1000,
        "seed": seed,
        "save_reconstruction": False,
    }
    data = merge(base, overrides or {})
    data["max_time_minutes"] = max_minutes  # the explicit arguments win
    data["seed"] = 0 if seed is None else seed
    if supervised:
        data["model"]["model_type"] = "supervised"
    for key in ("train_data_file", "init_from"):
        if data.get(key):
            log.warning("pretrain: ignoring %s (the training data are simulated).", key)
    data = {k: v for k, v in data.items() if k not in ("train_data_file", "init_from")}
    if data["model"].get("N", N) != N:
        raise ConfigError(
            f"model.N={data['model']['N']} differs from the probe's N={N}; the probe would have "
            "to be resampled: pass a probe of that size, or drop the override."
        )
    return build(TrainingConfig, data, where="pretrain options")


def check_test_data(path: str | None, N: int) -> None:
    """DataError when the ``test_data_file`` scored after pretraining cannot be read or
    holds patterns of another size than the probe's N (checked before the simulation)."""
    if path is None:
        return
    from ptychopinn.data.readers import load_scan

    try:
        test = load_scan(path)
    except DataError as exc:
        raise DataError(f"test_data_file: {exc}") from exc
    if test.patch_size != N:
        raise DataError(
            f"test_data_file {test.source}: expected {N}x{N} patterns like the probe "
            f"pretrained for; found {test.patch_size}x{test.patch_size}."
        )


def pretrain(
    probe: np.ndarray | str | os.PathLike | None,
    *,
    out_dir: str | os.PathLike,
    scan: Scan | str | os.PathLike | None = None,
    n_objects: int | None = None,
    N: int | None = None,
    step_px: float | None = None,
    photons: float | None = None,
    max_minutes: float | None = 20.0,
    supervised: bool = False,
    seed: int | None = 0,
    recipe: PretrainConfig | dict | None = None,
    overrides: dict[str, Any] | None = None,
    callbacks: list | None = None,
):
    """Pretrain a model for ``probe`` (and/or ``scan``'s geometry) on simulated objects.

    Parameters
    ----------
    probe
        Probe array or file; None takes ``scan``'s probe.
    out_dir
        The run directory (bundle, ``pretraining.json``, ``pretraining_probe.npz``): new,
        or one without a model bundle (`check_run_dir`; a bundle is never overwritten).
    scan
        A `Scan` or file whose N, probe, step, pattern and dose are used.
    n_objects, step_px, photons
        Override ``recipe`` (number of objects, scan step, central dose).
    N
        Patch size (default: the probe's or scan's).
    max_minutes, supervised, seed
        Training budget, supervised (true objects) vs PINN, the seed of
        everything (None: 0).
    recipe
        `PretrainConfig` (or dict) for the rest of the data recipe.
    overrides
        Nested `TrainingConfig` overrides (``{"model": {"n_filters_scale": 0.5}}``).
    callbacks
        Extra Lightning callbacks.

    Returns
    -------
    TrainResult
        Of `ptychopinn.training.runner.train_pytorch`.
    """
    from ptychopinn.config.io import build
    from ptychopinn.data.npz import atomic_savez
    from ptychopinn.training.runner import train_pytorch

    t0 = time.perf_counter()
    out = check_run_dir(out_dir)
    rec = recipe if isinstance(recipe, PretrainConfig) else build(
        PretrainConfig, dict(recipe or {}), where="pretrain recipe", prefix="pretrain."
    )
    upd = {k: v for k, v in (("n_objects", n_objects), ("step_px", step_px),
                             ("photons", photons)) if v is not None}
    src = resolve_source(probe, scan, N or (overrides or {}).get("model", {}).get("N"))
    if src.template_px is not None and "pattern" not in rec.model_fields_set:
        upd["pattern"] = "scan"
    rec = build(PretrainConfig, rec.model_dump(mode="json") | upd, where="pretrain recipe",
                prefix="pretrain.")
    cfg = _training_config(out, src.N, supervised, max_minutes, seed, overrides)
    seed = cfg.seed
    from ptychopinn.training.checks import check_torch_accelerator

    check_torch_accelerator(cfg.execution.accelerator)
    check_test_data(cfg.test_data_file, src.N)
    step = rec.step_px or src.step_px or src.N / 8
    dose = rec.photons or src.photons or DEFAULT_PHOTONS
    for note in src.notes:
        log.warning(note)
    t_sim = time.perf_counter()
    big = build_pretraining_scan(
        src.probe, rec, step_px=step, photons=dose, seed=seed, template_px=src.template_px,
        bad_pixel_mask=src.bad_pixel_mask,
        neighbor_count=max(cfg.neighbor_count, cfg.model.n_channels, cfg.model.prior_neighbors),
    )
    t_sim = time.perf_counter() - t_sim
    ensure_dir(out, "output_dir (the run folder)")
    atomic_savez(out / PROBE_FILE, {"probeGuess": big.probe})
    meta = dict(big.metadata["pretraining"])
    meta.update(
        probe_source=src.description, notes=src.notes, model_type=cfg.model.model_type,
        simulate_seconds=t_sim, status="training",
    )
    _write_json(out / RECIPE_FILE, meta)
    if cfg.model.model_type != "supervised" and cfg.realspace_weight == 0:
        big = big.replace(object=None)  # PINN training never reads it: save n*N*N*8 bytes
    try:
        # check_run_dir refused a finished model; an interrupted pretraining's checkpoints go
        result = train_pytorch(cfg, big, overwrite=True, extra_callbacks=callbacks)
    except BaseException as exc:  # Ctrl-C too: never leave "status": "training" behind
        meta.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        _write_json(out / RECIPE_FILE, meta)
        raise
    meta.update(
        status="done",
        epochs_done=len(result.history),
        fit_seconds=result.timings_s.get("fit"),
        total_seconds=time.perf_counter() - t0,
        bundle=str(result.bundle_path),
    )
    _write_json(out / RECIPE_FILE, meta)
    return result


def _write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str))


def read_recipe(run_dir: str | os.PathLike) -> dict:
    """``RUN/pretraining.json`` (ConfigError when the run is not a pretraining)."""
    p = Path(run_dir) / RECIPE_FILE
    if not p.is_file():
        raise ConfigError(f"{run_dir}: no {RECIPE_FILE}; not a `ptychopinn pretrain` run.")
    return json.loads(p.read_text())
