"""The probe a training retrieved first (``probe_refine_epochs``), kept in its run folder
so that ``--resume`` continues with the very probe (and positions) the checkpoint was
trained with instead of retrieving it again.

The file, ``retrieved_probe.npz`` in the run folder (beside, not in, ``checkpoints/``:
it is written before the training starts, and alone it is no training to resume), holds plain arrays (read with
``allow_pickle=False``): the probe, the positions it was retrieved at (corrected with
``probe_refine_positions``), the options of the retrieval and the fingerprint of the
scan it was retrieved from (`checks.scan_fingerprint`). A resumed run uses it only where
all of these match; otherwise it says why and retrieves again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ptychopinn.config import TrainingConfig
from ptychopinn.data.scan import MEASURED_POSITIONS_KEY, Scan

log = logging.getLogger(__name__)

RETRIEVED_PROBE_FILE = "retrieved_probe.npz"


def retrieved_probe_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RETRIEVED_PROBE_FILE


def _options(cfg: TrainingConfig) -> dict:
    """What decides the retrieval's result (the device aside: a resumed run keeps the
    probe its checkpoint was trained with, wherever that was retrieved)."""
    return {"epochs": int(cfg.probe_refine_epochs), "positions": bool(cfg.probe_refine_positions),
            "seed": int(cfg.seed), "keep_linear": bool(cfg.position_keep_linear)}


def save_retrieved(cfg: TrainingConfig, scan: Scan, retrieved: Scan) -> Path:
    """Keep ``retrieved``'s probe and positions (the retrieval from ``scan``) in the run
    folder, atomically."""
    from ptychopinn.data.npz import atomic_savez
    from ptychopinn.training.checks import scan_fingerprint

    stamp = {"options": _options(cfg), "scan": scan_fingerprint(scan)}
    return atomic_savez(retrieved_probe_path(cfg.output_dir), {
        "probe": np.asarray(retrieved.probe),
        "positions_px": np.asarray(retrieved.positions_px, dtype=np.float64),
        "stamp": np.asarray(json.dumps(stamp, sort_keys=True)),
    })


def _why_not(cfg: TrainingConfig, scan: Scan, path: Path) -> tuple[str | None, dict]:
    """(None, arrays) where the file at ``path`` can stand for the retrieval of ``scan``
    with ``cfg``'s options, else (the reason, {})."""
    from ptychopinn.training.checks import scan_fingerprint

    if not path.is_file():
        return f"no {path}", {}
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("probe", "positions_px", "stamp")}
        stamp = json.loads(str(arrays["stamp"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{path} cannot be read ({type(exc).__name__}: {exc})", {}
    if not isinstance(stamp, dict) or stamp.get("options") != _options(cfg):
        return f"{path} was retrieved with other options ({stamp.get('options')})", {}
    if stamp.get("scan") != scan_fingerprint(scan):
        return f"{path} was retrieved from another scan", {}
    probe, positions = arrays["probe"], arrays["positions_px"]
    if probe.shape != scan.probe.shape or not np.iscomplexobj(probe):
        return f"{path}: its probe has shape {probe.shape} {probe.dtype}, not the scan's", {}
    if positions.shape != scan.positions_px.shape:
        return f"{path}: its positions have shape {positions.shape}, not the scan's", {}
    if not (np.isfinite(probe).all() and np.isfinite(positions).all()):
        return f"{path} holds NaN or Inf", {}
    return None, arrays


def retrieved_scan(cfg: TrainingConfig, scan: Scan, *, resume: bool, device: str) -> Scan:
    """``scan`` with its probe retrieved (`ptychopinn.refinement.retrieve_probe`, with
    ``cfg``'s ``probe_refine_*`` options), kept in the run folder; on ``resume`` the kept
    retrieval of the same scan with the same options is used instead of a new one."""
    path = retrieved_probe_path(cfg.output_dir)
    if resume:
        why, arrays = _why_not(cfg, scan, path)
        if why is None:
            log.info("resume: the probe%s retrieved before (%s) is used, not retrieved again",
                     " and positions" if cfg.probe_refine_positions else "", path)
            return _with_measured(scan, scan.replace(
                probe=arrays["probe"].astype(scan.probe.dtype),
                positions_px=arrays["positions_px"]))
        log.warning("resume: the probe is retrieved again (%s epochs): %s",
                    cfg.probe_refine_epochs, why)
    from ptychopinn.refinement import retrieve_probe

    out = retrieve_probe(scan, cfg.probe_refine_epochs, positions=cfg.probe_refine_positions,
                         seed=cfg.seed, device=device, keep_linear=cfg.position_keep_linear)
    save_retrieved(cfg, scan, out)
    return _with_measured(scan, out)


def _with_measured(scan: Scan, retrieved: Scan) -> Scan:
    """``retrieved``, remembering ``scan``'s positions where the retrieval moved them
    (`MEASURED_POSITIONS_KEY`: the training's reconstruction keeps them)."""
    if np.array_equal(retrieved.positions_px, scan.positions_px):
        return retrieved
    meta = {**retrieved.metadata, MEASURED_POSITIONS_KEY: np.array(scan.positions_px)}
    return retrieved.replace(metadata=meta)
