"""What a training checks before it writes anything to its run folder: the folder
(`check_run_folder`: a trained model there is continued with ``resume``, replaced with
``overwrite``, else refused), a fine-tuning's ``init_from`` bundle (`check_init_from`),
a resumed run's checkpoint, options and scan (`check_resume`, `scan_fingerprint`), the
options that need a ground truth and the test scan (`check_training_inputs`). Shared by
both backends' runners."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptychopinn.atomic import atomic_write_text
from ptychopinn.bundle.format import BUNDLE_FILENAME
from ptychopinn.config.schema import ModelConfig, TrainingConfig
from ptychopinn.data.scan import Scan, check_distinct_positions
from ptychopinn.errors import ConfigError, DataError, OutputPathError

log = logging.getLogger(__name__)


def load_training_scan(path: str, *, what: str = "train_data_file") -> Scan:
    from ptychopinn.data.readers import load_scan

    if path is None:
        raise ConfigError(
            f"{what} is not set; pass --data FILE (an NPZ following the data contract)."
        )
    return load_scan(path)


def _set_value(value) -> str:  # noqa: ANN001 (a JSON value)
    """``value`` as ``--set KEY=VALUE`` writes it (strings bare, the rest as JSON)."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def init_model_mismatch(init_from: str, init_model: ModelConfig, model: ModelConfig) -> str:
    """The error of a fine-tuning whose model section (``model``) is not that of the
    ``init_from`` bundle (``init_model``): each key that differs with both values, and the
    ``--set`` options that make them the same."""
    a, b = init_model.model_dump(mode="json"), model.model_dump(mode="json")
    keys = [k for k in b if a.get(k) != b.get(k)]
    if not keys:
        return (f"init_from {init_from}: its model section differs from this run's; use the "
                "same model settings to fine-tune.")
    diffs = "; ".join(f"model.{k}: {_set_value(a.get(k))} in {init_from}, "
                      f"{_set_value(b.get(k))} here" for k in keys)
    sets = " ".join(f"--set model.{k}={_set_value(a.get(k))}" for k in keys)
    return (f"init_from {init_from}: its model section differs from this run's ({diffs}); "
            f"fine-tuning needs the same model settings: pass {sets} (or drop the options "
            "that changed them).")


def check_init_from(cfg: TrainingConfig) -> None:
    """ConfigError when the model section of ``cfg`` cannot fine-tune the ``init_from``
    bundle (read from its manifest alone, before any model is built or data prepared);
    BundleError when that is not a readable bundle. ``model.prior_recipe`` 'auto' is
    resolved as the training will: a fine-tuning takes its bundle's recipe."""
    from ptychopinn.bundle.format import manifest_config, read_bundle
    from ptychopinn.bundle.validate import manifest_backend
    from ptychopinn.models.prior_recipe import resolve_prior_recipe

    manifest, _ = read_bundle(cfg.init_from)
    if cfg.backend == "pytorch" and manifest_backend(manifest, cfg.init_from) == "tensorflow":
        raise ConfigError(
            f"init_from (--init) {cfg.init_from}: a 'tensorflow' bundle cannot start a "
            "'pytorch' training (TensorFlow bundles are not converted to PyTorch); train "
            "with --backend tensorflow, or give --init a PyTorch bundle."
        )
    init_model = manifest_config(manifest, cfg.init_from).model
    # with a bundle to be like (``like``), the recipe is settled without reading the probe
    model, _ = resolve_prior_recipe(cfg.model, None, like=init_model)
    if init_model != model:
        raise ConfigError(init_model_mismatch(cfg.init_from, init_model, model))


#: The TensorFlow backend's record, beside its checkpoints, of what they were trained
#: with (PyTorch checkpoints hold it in their ``hyper_parameters``).
RESUME_STATE_FILE = "resume.json"

#: The options a resumed run may change: how long it trains (they take effect: the
#: cosine schedule follows nepochs and max_time_minutes), where and how it runs, and
#: what it does after training. Every other option shapes the training the checkpoint
#: continues (the model, optimisation, loss, data, seeds, devices and precision), so it
#: must stay as it was. ``train_data_file`` may name another path: the scan's
#: fingerprint is what is compared.
RESUME_MAY_CHANGE = frozenset({
    "output_dir", "train_data_file", "test_data_file", "save_reconstruction", "init_from",
    "nepochs", "max_time_minutes", "early_stopping_patience",
    "execution.accelerator", "execution.deterministic", "execution.logger",
    "execution.mlflow_tracking_uri", "execution.progress_bar", "execution.num_threads",
})


@dataclass(frozen=True)
class ResumePoint:
    """What ``--resume`` continues (`check_resume`): ``checkpoint`` (the file, or the
    TensorFlow checkpoint folder); ``model``: this run's model section with its
    ``prior_recipe`` settled as the checkpoint's (None where the checkpoint records no
    configuration); ``epochs_done`` (None: not recorded); ``fit_seconds``: its training
    time so far (0 where not recorded)."""

    checkpoint: Path
    model: ModelConfig | None = None
    epochs_done: int | None = None
    fit_seconds: float = 0.0


def scan_fingerprint(scan: Scan) -> dict:
    """What identifies a training scan, kept in checkpoints for ``--resume`` to compare:
    its pattern count and size, and SHA-256 hashes of its positions and of up to 64
    evenly spaced diffraction patterns (as float32, so the file format does not
    matter). Cheap for any scan size."""
    n = int(scan.n_patterns)
    picks = np.unique(np.linspace(0, n - 1, min(n, 64)).round().astype(np.int64))
    sample = np.ascontiguousarray(np.asarray(scan.diffraction[picks], dtype=np.float32))
    positions = np.ascontiguousarray(np.asarray(scan.positions_px, dtype=np.float64))
    return {"n_patterns": n, "N": int(scan.patch_size),
            "positions_sha256": hashlib.sha256(positions.tobytes()).hexdigest(),
            "diffraction_sha256": hashlib.sha256(sample.tobytes()).hexdigest()}


def _scan_mismatch(saved: dict, now: dict, *, positions: bool) -> list[str]:
    """How the scan fingerprint ``now`` differs from ``saved`` (empty: the same scan);
    ``positions`` False skips the positions (corrected anew by a probe retrieval)."""
    diffs = [f"{k}: {saved[k]} there, {now[k]} here" for k in ("n_patterns", "N")
             if k in saved and saved[k] != now[k]]
    if not diffs:
        if saved.get("diffraction_sha256", now["diffraction_sha256"]) != now["diffraction_sha256"]:
            diffs.append("its diffraction patterns differ")
        if positions and saved.get("positions_sha256",
                                   now["positions_sha256"]) != now["positions_sha256"]:
            diffs.append("its scan positions differ")
    return diffs


def _flat_config(config: dict) -> dict:
    """A config dict with its sections' keys dotted (``model.N``)."""
    out: dict = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def resume_mismatch(checkpoint: Path, saved: dict, cfg: TrainingConfig) -> str | None:
    """The error of a ``--resume`` whose options ``cfg`` differ from those the checkpoint
    was trained with (``saved``, a config dict) in keys a resumed run cannot change (not
    in `RESUME_MAY_CHANGE`): each key with both values, and the ``--set`` options that
    make them the same; None when none differs. Keys the checkpoint does not record
    (options added since) are not compared."""
    a, b = _flat_config(saved), _flat_config(cfg.model_dump(mode="json"))
    keys = [k for k in b if k in a and k not in RESUME_MAY_CHANGE and a[k] != b[k]]
    if not keys:
        return None
    diffs = "; ".join(f"{k}: {_set_value(a[k])} in the checkpoint, {_set_value(b[k])} here"
                      for k in keys)
    sets = " ".join(f"--set {k}={_set_value(a[k])}" for k in keys)
    return (f"--resume: {checkpoint} was trained with other settings ({diffs}); a resumed "
            f"run keeps them: pass {sets} (or drop the options that changed them), or start "
            "a new training with --overwrite or in another --output-dir (--init fine-tunes "
            "this run's model with new settings).")


def _saved_model(config: dict, cfg: TrainingConfig) -> ModelConfig | None:
    """``cfg``'s model section with ``prior_recipe`` 'auto' settled as the checkpoint's
    (whose config is ``config``) was; None when that model section does not validate."""
    from pydantic import ValidationError

    from ptychopinn.models.prior_recipe import resolve_prior_recipe

    try:
        saved = ModelConfig.model_validate(config.get("model", {}))
    except ValidationError:
        return None
    return resolve_prior_recipe(cfg.model, None, like=saved)[0]


def _compare_resume(cfg: TrainingConfig, scan: Scan | None, where: Path,
                    saved: dict | None) -> ResumePoint:
    """Refuse (ConfigError) a resume of the checkpoint at ``where``, recorded as ``saved``
    (``config``, ``scan`` fingerprint, ``epochs_done``, ``fit_seconds``; None: written
    before they were recorded), with other options or another scan than ``cfg``, ``scan``."""
    if saved is None:
        log.info("--resume: %s records neither its options nor its scan (written by an "
                 "earlier version): they are not compared with this run's", where)
        return ResumePoint(where)
    config = saved["config"]
    model = _saved_model(config, cfg)
    ours = cfg if model is None else cfg.model_copy(update={"model": model})
    if model is None and cfg.model.prior_recipe == "auto":  # settled when training starts
        config = {**config, "model": {k: v for k, v in config.get("model", {}).items()
                                      if k != "prior_recipe"}}
    msg = resume_mismatch(where, config, ours)
    if msg:
        raise ConfigError(msg)
    done = saved.get("epochs_done")
    done = done if isinstance(done, int) else None
    if done is not None and cfg.nepochs < done:
        raise ConfigError(
            f"--resume: nepochs (--epochs) is {cfg.nepochs}, but {where} has already trained "
            f"{done} epochs; expected {done} or more (nepochs counts the run's epochs from its "
            "start, not the ones to add), or start again with --overwrite.")
    fingerprint = saved.get("scan")
    if not isinstance(fingerprint, dict):
        fingerprint = None
    if scan is not None and fingerprint is None:
        log.info("--resume: %s records no fingerprint of its training scan (written by an "
                 "earlier version): %s is not compared with it", where, scan.source)
    elif scan is not None:
        diffs = _scan_mismatch(fingerprint, scan_fingerprint(scan),
                               positions=not cfg.probe_refine_positions)
        if diffs:
            raise ConfigError(
                f"--resume: the training scan {scan.source} is not the one {where} was "
                f"trained on ({'; '.join(diffs)}); a resumed run trains on the same scan: "
                "pass that scan with --data, or train on this one in a new run (--overwrite "
                "or another --output-dir; --init fine-tunes this run's model on it).")
    fit_s = saved.get("fit_seconds")
    fit_s = float(fit_s) if isinstance(fit_s, (int, float)) else 0.0
    limit = cfg.max_time_minutes
    if limit is not None and fit_s >= 60.0 * limit:
        log.warning("--resume: %s has already trained %.1f min, its whole max_time_minutes=%g "
                    "(the time limit counts from the run's start, across resumes): it ends at "
                    "once; raise it with --max-minutes to train further", where, fit_s / 60.0,
                    limit)
    elif done is not None and cfg.nepochs == done:
        log.info("--resume: %s has already trained its %d epochs; raise --epochs to train "
                 "further", where, done)
    return ResumePoint(where, model, done, fit_s)


def _pytorch_saved(last: Path) -> dict:
    """What the PyTorch checkpoint ``last`` records for `_compare_resume` (its tensors
    mapped, not read)."""
    from ptychopinn.training.module import read_checkpoint
    from ptychopinn.training.runner import _HistoryCallback

    raw = read_checkpoint(last, mmap=True)
    hp = raw.get("hyper_parameters")
    config = hp.get("config") if isinstance(hp, dict) else None
    if not isinstance(config, dict):
        raise ConfigError(f"--resume: {last} records no training configuration "
                          "(hyper_parameters['config']); expected a checkpoint written by "
                          "`ptychopinn train`. Start again with --overwrite or in another "
                          "--output-dir.")
    epoch = raw.get("epoch")
    states = raw.get("callbacks") if isinstance(raw.get("callbacks"), dict) else {}
    fit_s = (states.get(_HistoryCallback().state_key) or {}).get("fit_seconds")
    if fit_s is None:  # from before the history kept it: the time limit's Timer, if any
        fit_s = ((states.get("Timer") or {}).get("time_elapsed") or {}).get("train")
    return {"config": config, "scan": hp.get("scan_fingerprint"),
            "epochs_done": epoch + 1 if isinstance(epoch, int) else None,
            "fit_seconds": fit_s if isinstance(fit_s, (int, float)) else None}


def _checkpoint_epochs(last: Path) -> int | None:
    """The finished epochs the PyTorch checkpoint ``last`` holds (None: none there)."""
    if not last.is_file():
        return None
    with contextlib.suppress(ConfigError):
        return _pytorch_saved(last)["epochs_done"]
    return None


def read_resume_state(path: Path) -> dict | None:
    """The TensorFlow checkpoints' `RESUME_STATE_FILE` (None when absent: written before
    it existed); a damaged one is a ConfigError naming it."""
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--resume: {path} cannot be read ({exc}); expected the JSON "
                          "record `ptychopinn train` writes beside its checkpoints. Start "
                          "again with --overwrite or in another --output-dir.") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise ConfigError(f"--resume: {path} holds no 'config' object; expected the JSON "
                          "record `ptychopinn train` writes beside its checkpoints. Start "
                          "again with --overwrite or in another --output-dir.")
    return state


def write_resume_state(ckpt_dir: Path, cfg: TrainingConfig, scan: Scan, *,
                       epochs_done: int, fit_seconds: float) -> None:
    """Record (atomically) beside TensorFlow checkpoints what they were trained with,
    for `check_resume`."""
    atomic_write_text(ckpt_dir / RESUME_STATE_FILE, json.dumps({
        "config": cfg.model_dump(mode="json"), "scan": scan_fingerprint(scan),
        "epochs_done": int(epochs_done), "fit_seconds": float(fit_seconds)}, indent=1))


def _start_again(other_found: bool, other: str) -> str:
    """What to do when ``--resume`` finds no checkpoint of the run's backend."""
    if other_found:
        return (f"the folder holds a {other!r} training: resume it with --backend {other}, "
                "or start again with --overwrite.")
    return "start without --resume."


def check_resume(cfg: TrainingConfig, scan: Scan | None = None) -> ResumePoint:
    """ConfigError when ``resume`` cannot continue the training in ``cfg.output_dir``: no
    checkpoint of the run's backend, one that cannot be read (plain data only: never
    unpickled), options that differ from those it was trained with where a resumed run
    cannot change them (`RESUME_MAY_CHANGE`), ``nepochs`` below its finished epochs, or
    (with ``scan``) another training scan than its own (`scan_fingerprint`). Checked
    before anything is written to the run folder (the run would otherwise overwrite its
    config.yaml first). Returns what it continues."""
    where = resume_checkpoint(cfg)
    if cfg.backend == "tensorflow":
        return _compare_resume(cfg, scan, where, read_resume_state(where / RESUME_STATE_FILE))
    return _compare_resume(cfg, scan, where, _pytorch_saved(where))


def resume_checkpoint(cfg: TrainingConfig) -> Path:
    """The checkpoint ``--resume`` continues (PyTorch's ``last.ckpt``, TensorFlow's
    checkpoint folder); ConfigError when the run folder holds none of the run's backend
    (saying so where it holds the other backend's). Cheap: nothing is read."""
    ckpts = Path(cfg.output_dir) / "checkpoints"
    tf_found, pt_found = (ckpts / "checkpoint").is_file(), (ckpts / "last.ckpt").is_file()
    if cfg.backend == "tensorflow":
        if not tf_found:
            raise ConfigError(f"--resume: no tensorflow checkpoint in {ckpts}; "
                              + _start_again(pt_found, "pytorch"))
        return ckpts
    if not pt_found:
        raise ConfigError(f"--resume: no checkpoint at {ckpts / 'last.ckpt'}; "
                          + _start_again(tf_found, "tensorflow"))
    return ckpts / "last.ckpt"


def resumed_config(cfg: TrainingConfig, point: ResumePoint | None) -> TrainingConfig:
    """``cfg`` with the model section `check_resume` settled (its ``prior_recipe`` as the
    checkpoint's); ``cfg`` itself for a new run."""
    if point is None or point.model is None:
        return cfg
    return cfg.model_copy(update={"model": point.model})


def trained_run_files(run_dir: str | os.PathLike) -> list[Path]:
    """What a training left in ``run_dir`` that a new training would replace: its model
    bundle and its checkpoints (either backend's)."""
    run = Path(run_dir)
    found = [run / BUNDLE_FILENAME] if (run / BUNDLE_FILENAME).is_file() else []
    ckpts = run / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        found.append(ckpts)
    return found


def check_torch_accelerator(name: str) -> None:
    """ConfigError when ``execution.accelerator`` asks for a device torch does not see
    (Lightning fails with a MisconfigurationException traceback otherwise, once the run
    started). 'gpu' is Lightning's: a CUDA GPU or an Apple MPS device."""
    import torch

    cuda = torch.cuda.is_available()
    mps = torch.backends.mps.is_available()
    if (name == "cuda" and not cuda) or (name == "gpu" and not (cuda or mps)):
        what = "CUDA GPU"
    elif name == "mps" and not mps:
        what = "Apple MPS device"
    else:
        return
    raise ConfigError(
        f"--accelerator {name} (execution.accelerator): expected a device this machine has; "
        f"torch finds no {what}. Use --accelerator cpu, or auto to take what there is."
    )


def check_run_folder(cfg: TrainingConfig, *, resume: bool = False,
                     overwrite: bool = False) -> None:
    """`OutputPathError` when ``output_dir`` holds a trained model or a checkpoint and the
    run neither continues it (``resume``) nor replaces it (``overwrite``): a second
    ``train`` into the same folder never silently replaces a model. ConfigError for both."""
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: --resume continues "
                          "the run in the folder, --overwrite starts it again.")
    if resume or overwrite:
        return
    found = trained_run_files(cfg.output_dir)
    if found:
        raise OutputPathError(
            f"output_dir (the run folder) {cfg.output_dir}: already holds a training "
            f"({', '.join(str(f) for f in found)}); expected a new folder or one without a "
            "model. Continue that training with --resume (resume=True), replace it with "
            "--overwrite (overwrite=True), or give another --output-dir."
        )


RUN_OUTPUTS = ("reconstruction", "test_reconstruction", "logs", "loss_curve.png",
               "history.json", "retrieved_probe.npz")
"""What a training writes into its run folder besides the bundle and the checkpoints
(`trained_run_files`); ``overwrite`` removes them too. Anything else in the folder is
the user's and is left alone (``config.yaml`` is written again by the new run)."""


def clear_run_folder(run_dir: Path) -> None:
    """Remove a previous training's bundle, checkpoints and outputs (`RUN_OUTPUTS`:
    reconstructions, logs, history, loss curve, retrieved probe) for ``overwrite``, so
    that the new run cannot resume, or be mistaken for, the old one, and no old score
    or log is left beside the new model."""
    import shutil

    run = Path(run_dir)
    outputs = [run / name for name in RUN_OUTPUTS if (run / name).exists()]
    for f in trained_run_files(run) + outputs:
        if f.is_dir() and not f.is_symlink():
            shutil.rmtree(f)
        else:
            f.unlink()
        log.info("overwrite: removed %s", f)


def check_training_inputs(cfg: TrainingConfig, scan: Scan, *, resume: bool = False,
                          overwrite: bool = False) -> Scan | None:
    """What either backend checks before it trains, so that a bad input never costs
    a training: the run folder (`check_run_folder`: a trained model there is continued
    with ``resume``, replaced with ``overwrite``, else refused), the options that need a
    ground truth, the ``init_from`` bundle's model section (`check_init_from`; not where
    ``resume`` continues a run, which does not read it), and the test scan
    (``test_data_file``), loaded now and returned (None when not set); with ``resume``,
    that its checkpoint can continue with these options and this scan (`check_resume`)."""
    return checked_training_inputs(cfg, scan, resume=resume, overwrite=overwrite)[0]


def checked_training_inputs(cfg: TrainingConfig, scan: Scan, *, resume: bool = False,
                            overwrite: bool = False) -> tuple[Scan | None, ResumePoint | None]:
    """`check_training_inputs`, and what ``resume`` continues (`check_resume`; None for a
    new run)."""
    check_run_folder(cfg, resume=resume, overwrite=overwrite)
    check_distinct_positions(scan)
    if cfg.backend == "pytorch":
        check_torch_accelerator(cfg.execution.accelerator)
    point = None
    if resume:
        point = check_resume(cfg, scan)
    elif cfg.init_from:
        check_init_from(cfg)
    if cfg.model.model_type == "supervised" and scan.object is None:
        raise ConfigError(
            f"model_type 'supervised' needs a ground-truth object, but {scan.source} has no "
            "'objectGuess'; use model_type 'pinn' (self-supervised)."
        )
    if cfg.realspace_weight > 0 and scan.object is None:
        raise ConfigError(f"realspace_weight > 0 needs 'objectGuess' in {scan.source}.")
    if cfg.test_data_file is None:
        return None, point
    try:
        test = load_training_scan(cfg.test_data_file, what="test_data_file")
    except DataError as exc:
        raise DataError(f"test_data_file: {exc}") from exc
    if test.patch_size != scan.patch_size:
        raise DataError(
            f"test_data_file {test.source}: expected {scan.patch_size}x{scan.patch_size} "
            f"patterns like the training scan {scan.source}; found "
            f"{test.patch_size}x{test.patch_size}."
        )
    return test, point
