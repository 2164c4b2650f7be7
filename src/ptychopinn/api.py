"""The Python API: thin functions over the backends, the same as the CLI's.

>>> import ptychopinn as pp
>>> scan = pp.simulate(pp.SimulationConfig(n_positions=400, seed=1))
>>> result = pp.train(pp.TrainingConfig(output_dir="run"), scan)
>>> recon = pp.reconstruct(pp.load_bundle("run"), scan)
"""

from __future__ import annotations

import os

from ptychopinn.atomic import check_output_dir
from ptychopinn.backends import check_execution_options, get_backend, validate_backend
from ptychopinn.config.schema import BACKENDS, InferenceConfig, TrainingConfig
from ptychopinn.data.scan import Scan, check_distinct_positions
from ptychopinn.errors import ConfigError
from ptychopinn.logging_once import each_message_once

PRIOR_LOGGER = "ptychopinn.models.scan_prior"
"""The logger of the physics prior's decisions, which `train` says once per run (the
training data's prior and the training scan's reconstruction after training decide alike)."""

_SCAN_TYPES = "a Scan or a scan file path (str or os.PathLike)"
_SWAPPED = " (are the arguments swapped?)"


def _found(value: object) -> str:
    """How a wrong argument is named in a TypeError: its type, and what says most about it."""
    kind = type(value).__name__
    if isinstance(value, (str, os.PathLike)):
        return f"{kind} {os.fspath(value)!r}"
    shape = getattr(value, "shape", None)
    return f"{kind} of shape {tuple(shape)}" if isinstance(shape, tuple) else kind


def _is_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


def _is_loaded_model(value: object) -> bool:
    """A `LoadedModel` of either backend (duck-typed: no framework import needed)."""
    return all(hasattr(value, a) for a in ("model", "config", "manifest", "backend"))


def _scan_hint(value: object) -> str:
    if hasattr(value, "shape"):
        return (" (wrap arrays in pp.Scan(diffraction=..., positions_px=..., probe=...), "
                "or read a file with pp.load_scan(path))")
    return ""


def _check_train_args(config: object, scan: object) -> None:
    who = "train(config, scan)"
    if not isinstance(config, TrainingConfig):
        if isinstance(scan, TrainingConfig):
            hint = _SWAPPED
        elif isinstance(config, InferenceConfig):
            hint = " (an InferenceConfig is for reconstruct)"
        elif _is_path(config):
            hint = " (read a YAML/JSON file with pp.load_config(pp.TrainingConfig, path))"
        elif isinstance(config, Scan):
            hint = " (the config comes first: train(config, scan))"
        else:
            hint = ""
        raise TypeError(f"{who}: config must be a TrainingConfig; found {_found(config)}{hint}.")
    if scan is not None and not isinstance(scan, Scan) and not _is_path(scan):
        raise TypeError(f"{who}: scan must be {_SCAN_TYPES}, or None to read "
                        f"config.train_data_file; found {_found(scan)}{_scan_hint(scan)}.")


def _check_reconstruct_args(model: object, scan: object, config: object) -> None:
    who = "reconstruct(model, scan, config)"
    if model is not None and not _is_path(model) and not _is_loaded_model(model):
        if isinstance(model, Scan) and (_is_path(scan) or _is_loaded_model(scan)):
            hint = _SWAPPED
        elif isinstance(model, Scan):
            hint = " (the model comes first: reconstruct(model, scan, config))"
        elif hasattr(model, "bundle_path"):
            hint = " (pass the training result's bundle_path, or pp.load_bundle(it))"
        else:
            hint = ""
        raise TypeError(
            f"{who}: model must be a loaded model (pp.load_bundle), a bundle file or run "
            f"directory (str or os.PathLike), or None with config.model_path set; found "
            f"{_found(model)}{hint}."
        )
    if scan is not None and not isinstance(scan, Scan) and not _is_path(scan):
        if isinstance(scan, InferenceConfig) and config is None:
            hint = (" (the scan is missing: reconstruct(model, scan, config), or "
                    "reconstruct(model, config=config) with config.data_file set)")
        else:
            hint = _scan_hint(scan)
        raise TypeError(f"{who}: scan must be {_SCAN_TYPES}, or None to read config.data_file; "
                        f"found {_found(scan)}{hint}.")
    if config is not None and not isinstance(config, InferenceConfig):
        hint = (" (a TrainingConfig is for train)" if isinstance(config, TrainingConfig)
                else "")
        raise TypeError(f"{who}: config must be an InferenceConfig or None; found "
                        f"{_found(config)}{hint}.")


def train(
    config: TrainingConfig,
    scan: Scan | str | os.PathLike | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list | None = None,
):
    """Train a model; ``scan`` defaults to ``config.train_data_file``.

    ``config.output_dir`` holding a model or a checkpoint is refused
    (`OutputPathError`) unless ``resume`` continues that training from its
    checkpoint or ``overwrite`` replaces it.

    ``callbacks`` are Lightning callbacks ('pytorch' only; refused for 'tensorflow').
    With ``config.probe_refine_epochs > 0`` the scan's probe is first refined
    (`ptychopinn.refinement.retrieve_probe`) and the model trains with it (and at
    corrected positions with ``config.probe_refine_positions``); the retrieval is kept
    in the run folder, and ``resume`` continues with it instead of retrieving again.
    ``scan`` may also be a file, read as `reconstruct` reads it (`ptychopinn.load_scan`).
    Returns a ``TrainResult`` whose ``backend`` names the framework used.
    """
    _check_train_args(config, scan)
    if callbacks and config.backend != "pytorch":
        raise ConfigError(
            f"train: callbacks are Lightning callbacks, run by the 'pytorch' backend only; "
            f"config.backend is {config.backend!r} (found {len(callbacks)} callback(s)). "
            "Pass callbacks=None, or train with backend 'pytorch'."
        )
    check_output_dir(config.output_dir, "output_dir (the run folder)")  # before any work
    check_execution_options(config.backend, config.execution, training=True)
    from ptychopinn.training.checks import check_run_folder, resume_checkpoint

    check_run_folder(config, resume=resume, overwrite=overwrite)
    if resume:  # a checkpoint of this backend, before its framework loads
        resume_checkpoint(config)
    backend = get_backend(config.backend)
    if _is_path(scan):
        from ptychopinn.data.readers import load_scan

        scan = load_scan(scan)
    if config.probe_refine_epochs > 0:
        from ptychopinn.refinement.reconstruction import device_name
        from ptychopinn.training.checks import (
            check_training_inputs,
            clear_run_folder,
            load_training_scan,
        )
        from ptychopinn.training.retrieved_probe import retrieved_scan

        if scan is None:
            scan = load_training_scan(config.train_data_file)
        # a bad test scan or option is reported before the retrieval's minutes too
        check_training_inputs(config, scan, resume=resume, overwrite=overwrite)
        if overwrite:  # the old run goes first: the new retrieval is kept in the folder
            clear_run_folder(config.output_dir)
            overwrite = False
        # kept in the run folder: a resumed run continues with the same probe
        scan = retrieved_scan(config, scan, resume=resume, device=device_name(config))
    kw = {"extra_callbacks": callbacks} if callbacks else {}
    with each_message_once(PRIOR_LOGGER):
        return backend.train(config, scan, resume=resume, overwrite=overwrite, **kw)


def _manifest_backend(path: str | os.PathLike) -> str:
    """The backend a bundle was written by; `BundleError` naming the file and what its
    manifest holds when that is missing or unknown."""
    from ptychopinn.bundle.format import read_manifest
    from ptychopinn.bundle.validate import manifest_backend

    # the header only: the backend's loader reads and verifies the whole bundle next
    return manifest_backend(read_manifest(path), path)


def load_bundle(path: str | os.PathLike, backend: str | None = None):
    """Rebuild a trained model from a bundle file or run directory.

    ``backend`` None takes the bundle's own; another one converts a PyTorch bundle
    to TensorFlow and refuses the reverse (`BundleError`). An unknown backend is a
    `ConfigError` (a ValueError).
    """
    if not _is_path(path):
        hint = " (it is already loaded)" if _is_loaded_model(path) else ""
        raise TypeError("load_bundle(path, backend): path must be a bundle file or run "
                        f"directory (str or os.PathLike); found {_found(path)}{hint}.")
    if backend is not None:
        if backend not in BACKENDS:
            raise ConfigError(
                f"load_bundle: backend must be one of {', '.join(repr(b) for b in BACKENDS)} "
                f"(or None: the bundle's own); found {backend!r}."
            )
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
    predicts and stitches at them.
    A bundle path is loaded with the bundle's own backend unless ``config.backend``
    was set explicitly (then a PyTorch bundle is converted to TensorFlow, and a
    TensorFlow bundle is refused by 'pytorch'); a loaded model runs on its own backend,
    and an explicit ``config.backend`` naming another one is refused (`ConfigError`)."""
    from ptychopinn.data.readers import load_scan

    _check_reconstruct_args(model, scan, config)
    config = config or InferenceConfig()
    validate_backend(config.backend)
    chosen = "backend" in config.model_fields_set
    if model is None:
        if config.model_path is None:
            raise ConfigError("no model given: pass a bundle path or set model_path (--model).")
        model = config.model_path
    if _is_path(model):
        # options the backend cannot honour are refused before its framework loads
        backend = config.backend if chosen else _manifest_backend(model)
        check_execution_options(backend, config.execution)
        model = get_backend(backend).load_bundle(model)
    else:
        if chosen and config.backend != model.backend:
            convert = (" (a PyTorch bundle converts to TensorFlow when loaded: "
                       "load_bundle(path, backend='tensorflow'))" if model.backend == "pytorch"
                       else "")
            raise ConfigError(
                f"reconstruct: config.backend is {config.backend!r} but the model given is a "
                f"loaded {model.backend!r} model; leave backend unset (the model's own) or "
                f"set it to {model.backend!r}{convert}."
            )
        check_execution_options(model.backend, config.execution)
    if not chosen and config.backend != model.backend:
        config = config.model_copy(update={"backend": model.backend})
    if scan is None:
        if config.data_file is None:
            raise ConfigError("no scan given: pass a Scan or set data_file (--data).")
        scan = config.data_file
    if not isinstance(scan, Scan):
        scan = load_scan(scan)
    check_distinct_positions(scan)
    measured = None
    if config.position_refine_epochs > 0:
        from ptychopinn.refinement import correct_positions
        from ptychopinn.refinement.reconstruction import device_name

        measured = scan.positions_px
        scan = correct_positions(scan, config.position_refine_epochs, seed=config.seed,
                                 device=device_name(config),
                                 keep_linear=config.position_keep_linear)
    recon = get_backend(model.backend).reconstruct(model, scan, config)
    if measured is not None:  # in the object's frame, as positions_px
        recon.measured_positions_px = measured - recon.frame_offset_px
    _say_unused_orders(config, recon)
    if config.refine_epochs > 0:
        from ptychopinn.refinement import refine_reconstruction

        refine_reconstruction(recon, scan, model, config)
    return recon


def _say_unused_orders(config: InferenceConfig, recon) -> None:  # noqa: ANN001
    """Warn where mini-batch orders were asked for but the prior ran one (its FRC filter's
    half-scan estimates take one order; a model without a prior runs none): the option
    would otherwise be ignored without a word."""
    import logging

    asked = []
    if (config.prior_orders or 1) > 1:
        asked.append(f"prior_orders={config.prior_orders}")
    if config.prior_orders_filter:
        asked.append("prior_orders_filter=true")
    if asked and (recon.prior_orders or 1) == 1:
        logging.getLogger(__name__).warning(
            "%s did not apply: this reconstruction's prior ran one mini-batch order (the FRC "
            "filter's half-scan estimates take one; --prior-frc-filter off averages orders; a "
            "model without a prior runs none).", " and ".join(asked))


def simulate(config=None, path: str | os.PathLike | None = None) -> Scan:
    """Simulate a scan (default: the built-in textured object); optionally save it."""
    from ptychopinn.data.npz import save_npz
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    if config is not None and not isinstance(config, SimulationConfig):
        hint = (" (to save the scan, pass the file as path: simulate(config, path))"
                if _is_path(config) else "")
        raise TypeError("simulate(config, path): config must be a SimulationConfig or None; "
                        f"found {_found(config)}{hint}.")
    if path is not None and not _is_path(path):
        raise TypeError("simulate(config, path): path must be a file path (str or "
                        f"os.PathLike) or None; found {_found(path)}.")
    scan = simulate_scan(config or SimulationConfig())
    if path is not None:
        save_npz(scan, path)
    return scan
