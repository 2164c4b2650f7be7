"""The Python API: thin functions over the backends, the same as the CLI's.

>>> import ptychopinn as pp
>>> scan = pp.simulate(pp.SimulationConfig(n_positions=400, seed=1))
>>> result = pp.train(pp.TrainingConfig(output_dir="run"), scan)
>>> recon = pp.reconstruct(pp.load_bundle("run"), scan)
"""

from __future__ import annotations

import os
from pathlib import Path

from ptychopinn.backends import get_backend, validate_backend
from ptychopinn.config.schema import InferenceConfig, TrainingConfig
from ptychopinn.data.scan import Scan
from ptychopinn.logging_once import each_message_once

PRIOR_LOGGER = "ptychopinn.models.scan_prior"
"""The logger of the physics prior's decisions, which `train` says once per run (the
training data's prior and the training scan's reconstruction after training decide alike)."""


def train(
    config: TrainingConfig,
    scan: Scan | None = None,
    *,
    resume: bool = False,
    callbacks: list | None = None,
):
    """Train a model; ``scan`` defaults to ``config.train_data_file``.

    ``callbacks`` are framework callbacks (Lightning callbacks for 'pytorch').
    With ``config.probe_refine_epochs > 0`` the scan's probe is first refined
    (`ptychopinn.refinement.retrieve_probe`) and the model trains with it (and at
    corrected positions with ``config.probe_refine_positions``).
    Returns a ``TrainResult`` whose ``backend`` names the framework used.
    """
    backend = get_backend(config.backend)
    if config.probe_refine_epochs > 0:
        from ptychopinn.refinement import retrieve_probe
        from ptychopinn.refinement.reconstruction import device_name
        from ptychopinn.training.runner import check_training_inputs, load_training_scan

        if scan is None:
            scan = load_training_scan(config.train_data_file)
        # a bad test scan or option is reported before the retrieval's minutes too
        check_training_inputs(config, scan)
        scan = retrieve_probe(scan, config.probe_refine_epochs,
                              positions=config.probe_refine_positions, seed=config.seed,
                              device=device_name(config),
                              keep_linear=config.position_keep_linear)
    kw = {"extra_callbacks": callbacks} if callbacks else {}
    with each_message_once(PRIOR_LOGGER):
        return backend.train(config, scan, resume=resume, **kw)


def _manifest_backend(path: str | os.PathLike) -> str:
    from ptychopinn.bundle.format import read_bundle

    manifest, _ = read_bundle(path)
    return str(manifest.get("backend"))


def load_bundle(path: str | os.PathLike, backend: str | None = None):
    """Rebuild a trained model from a bundle file or run directory.

    ``backend`` None takes the bundle's own; a different one is an error.
    """
    if backend is not None:
        validate_backend(backend)
        return get_backend(backend).load_bundle(path)
    return get_backend(_manifest_backend(path)).load_bundle(path)


def reconstruct(
    model, scan: Scan | str | os.PathLike | None = None, config: InferenceConfig | None = None
):
    """Reconstruct a scan: ``model`` is a loaded model, a bundle path, or None
    with ``config.model_path`` set; ``scan`` a `Scan`, a file, or None with
    ``config.data_file``. Returns a ``Reconstruction`` (``.backend`` set).
    With ``config.position_refine_epochs > 0`` the scan's positions are first
    corrected (`ptychopinn.refinement.correct_positions`) and the network
    predicts and stitches at them."""
    from ptychopinn.data.readers import load_scan
    from ptychopinn.errors import ConfigError

    config = config or InferenceConfig()
    validate_backend(config.backend)
    if model is None:
        if config.model_path is None:
            raise ConfigError("no model given: pass a bundle path or set model_path (--model).")
        model = config.model_path
    if isinstance(model, (str, Path, os.PathLike)):
        model = load_bundle(model, backend=config.backend)
    if scan is None:
        if config.data_file is None:
            raise ConfigError("no scan given: pass a Scan or set data_file (--data).")
        scan = config.data_file
    if not isinstance(scan, Scan):
        scan = load_scan(scan)
    if config.position_refine_epochs > 0:
        from ptychopinn.refinement import correct_positions
        from ptychopinn.refinement.reconstruction import device_name

        scan = correct_positions(scan, config.position_refine_epochs, seed=config.seed,
                                 device=device_name(config),
                                 keep_linear=config.position_keep_linear)
    recon = get_backend(model.backend).reconstruct(model, scan, config)
    if config.refine_epochs > 0:
        from ptychopinn.refinement import refine_reconstruction

        refine_reconstruction(recon, scan, model, config)
    return recon


def simulate(config=None, path: str | os.PathLike | None = None) -> Scan:
    """Simulate a scan (default: the built-in textured object); optionally save it."""
    from ptychopinn.data.npz import save_npz
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(config or SimulationConfig())
    if path is not None:
        save_npz(scan, path)
    return scan
