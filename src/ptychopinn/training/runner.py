"""Run a training: data -> Lightning Trainer -> checkpoints -> bundle -> reconstruction.

Run directory layout::

    RUN/config.yaml                     resolved configuration
    RUN/checkpoints/last.ckpt           Lightning checkpoint (for --resume)
    RUN/model.ptychopinn.safetensors    the bundle (weights + manifest)
    RUN/history.json                    per-epoch losses
    RUN/logs/                           CSV / TensorBoard / MLflow logs
    RUN/reconstruction/                 stitched training scan (optional)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ptychopinn.atomic import atomic_write_text, check_output_dir, ensure_dir
from ptychopinn.bundle.format import BUNDLE_FILENAME
from ptychopinn.config.io import save_config
from ptychopinn.config.schema import InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.data.scan import Scan
from ptychopinn.errors import ConfigError, DataError, OutputPathError

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    run_dir: Path
    bundle_path: Path
    history: list[dict]
    backend: str = "pytorch"
    reconstruction: object | None = None  # ptychopinn.inference.Reconstruction
    metrics: dict | None = None
    test_metrics: dict | None = None
    timings_s: dict = field(default_factory=dict)


class _HistoryCallback:
    """Collects the epoch-level metrics Lightning logged (and keeps them in checkpoints)."""

    def __new__(cls):
        import lightning as L

        class _CB(L.Callback):
            def __init__(self) -> None:
                self.history: list[dict] = []

            def on_train_epoch_end(self, trainer, pl_module) -> None:
                row = {"epoch": int(trainer.current_epoch)}
                for k, v in trainer.callback_metrics.items():
                    if k.startswith(("train/", "val/")) or k == "intensity_scale":
                        row[k] = float(v)
                row["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
                self.history.append(row)

            # kept in every checkpoint (plain data), so a run resumed after a crash, which
            # wrote no history.json, still reports its earlier epochs
            def state_dict(self) -> dict:
                return {"history": [dict(r) for r in self.history]}

            def load_state_dict(self, state_dict: dict) -> None:
                self.history = [dict(r) for r in state_dict.get("history", [])]

        return _CB()


def _logger(cfg: TrainingConfig, run_dir: Path):
    kind = cfg.execution.logger
    if kind == "none":
        return False
    from lightning.pytorch import loggers

    if kind == "csv":
        return loggers.CSVLogger(run_dir / "logs", name="csv")
    if kind == "tensorboard":
        try:
            return loggers.TensorBoardLogger(run_dir / "logs", name="tensorboard")
        except ModuleNotFoundError as exc:
            raise ConfigError(
                "execution.logger='tensorboard' needs the tensorboard package: "
                "pip install 'ptychopinn[tensorboard]'"
            ) from exc
    try:
        import mlflow  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError(
            "execution.logger='mlflow' needs the mlflow package: pip install 'ptychopinn[mlflow]'"
        ) from None
    uri = cfg.execution.mlflow_tracking_uri or _local_mlflow_uri(run_dir / "logs")
    return loggers.MLFlowLogger(experiment_name="ptychopinn", tracking_uri=uri)


def _local_mlflow_uri(logs: Path) -> str:
    """A local MLflow store in the run directory (never a server).

    SQLite when SQLAlchemy is present (MLflow's recommended local store), else
    the file store, which recent MLflow releases only accept when
    ``MLFLOW_ALLOW_FILE_STORE`` is set.
    """
    import importlib.util

    logs.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("sqlalchemy") is not None:
        return f"sqlite:///{(logs / 'mlflow.db').resolve()}"
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (logs / "mlruns").resolve().as_uri()


def training_precision(precision: str) -> str:
    """Lightning's precision for ``execution.precision`` ('auto' trains in '32-true')."""
    return "32-true" if precision == "auto" else precision


def _accelerator(cfg: TrainingConfig) -> str:
    acc = cfg.execution.accelerator
    return "gpu" if acc == "cuda" else acc


def load_training_scan(path: str, *, what: str = "train_data_file") -> Scan:
    from ptychopinn.data.readers import load_scan

    if path is None:
        raise ConfigError(
            f"{what} is not set; pass --data FILE (an NPZ following the data contract)."
        )
    return load_scan(path)


class _DropAdvert(logging.Filter):
    """Drops Lightning's start-up advertisement for its cloud logger (noise in every run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage().lower()


@contextlib.contextmanager
def _without_lightning_advert():
    """While building the Trainer, filter the advert out of Lightning's rank-zero loggers."""
    names = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
    flt = _DropAdvert()
    for name in names:
        logging.getLogger(name).addFilter(flt)
    try:
        yield
    finally:
        for name in names:
            logging.getLogger(name).removeFilter(flt)


#: Recent torch deprecates `LeafSpec`, which Lightning's own pytree helper still builds on
#: every batch; the FutureWarning names no user code and says nothing a user can act on.
_LIGHTNING_LEAFSPEC_WARNING = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


@contextlib.contextmanager
def _without_lightning_pytree_warning():
    """While fitting, drop only torch's LeafSpec FutureWarning (raised inside Lightning);
    every other warning passes as before."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_LIGHTNING_LEAFSPEC_WARNING,
                                category=FutureWarning)
        yield


def _make_trainer(L, cfg: TrainingConfig, run_dir: Path, callbacks: list, train_dl):  # noqa: ANN001, N803
    import datetime as dt

    return L.Trainer(
        accelerator=_accelerator(cfg),
        devices=cfg.execution.devices,
        strategy=cfg.execution.strategy,
        num_nodes=cfg.execution.num_nodes,
        precision=training_precision(cfg.execution.precision),
        deterministic=cfg.execution.deterministic,
        max_epochs=cfg.nepochs,
        max_time=dt.timedelta(minutes=cfg.max_time_minutes) if cfg.max_time_minutes else None,
        gradient_clip_val=cfg.gradient_clip_val,
        logger=_logger(cfg, run_dir),
        callbacks=callbacks,
        enable_progress_bar=cfg.execution.progress_bar,
        enable_model_summary=False,
        default_root_dir=str(run_dir),
        log_every_n_steps=max(1, min(50, len(train_dl))),
        num_sanity_val_steps=0,
    )


def initial_physics(cfg: TrainingConfig, scan: Scan,
                    data) -> tuple[torch.Tensor, str, float]:  # noqa: ANN001
    """``(probe, units, log_scale)`` a model of ``cfg`` starts from on ``scan`` (both
    backends): the probe normalised to ``model.probe_scale`` (`models.pinn.normalise_probe`),
    the amplitudes' units ('arbitrary' where ``nphotons`` rescales the data) and the initial
    log amplitude scale (`models.pinn.initial_log_scale`); ``data``: the
    `training.data.PreparedData`."""
    from ptychopinn.models.pinn import initial_log_scale, normalise_probe

    probe, factor = normalise_probe(torch.from_numpy(scan.probe), cfg.model.probe_scale)
    units = "arbitrary" if cfg.nphotons is not None else scan.amplitude_units
    return probe, units, initial_log_scale(data.counts_per_pattern, probe, units, factor)


def settle_prior_recipe(cfg: TrainingConfig, scan: Scan, probe: torch.Tensor, data,  # noqa: ANN001
                        amplitude_scale: float, init_model=None) -> TrainingConfig:  # noqa: ANN001
    """``cfg`` with ``model.prior_recipe='auto'`` resolved for this scan
    (`models.prior_recipe.resolve_prior_recipe`; both backends), the choice logged;
    ``data``: the `training.data.PreparedData`; ``amplitude_scale``: the model's initial
    one; ``init_model``: the model section of the ``init_from`` bundle, whose recipe a
    fine-tuning keeps."""
    from ptychopinn.models.prior_recipe import resolve_prior_recipe

    model_cfg, chosen = resolve_prior_recipe(
        cfg.model, probe, like=init_model, amplitudes=data.amplitudes,
        positions_px=data.positions_px, amplitude_scale=amplitude_scale, valid=data.valid)
    if chosen:
        log.info("%s: %s", scan.source, chosen)
    return cfg.model_copy(update={"model": model_cfg})


def train_pytorch(
    cfg: TrainingConfig,
    scan: Scan | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    extra_callbacks: list | None = None,
) -> TrainResult:
    """Train a PINN (or supervised) model with Lightning; returns a `TrainResult`.

    ``resume`` continues the training in ``cfg.output_dir`` from its checkpoint;
    ``overwrite`` replaces a training there (without either, a folder holding a model
    or a checkpoint is refused: `check_run_folder`). ``extra_callbacks`` are Lightning
    callbacks added to the Trainer (e.g. a benchmark's periodic evaluation).
    """
    import time

    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from torch.utils.data import DataLoader

    from ptychopinn.bundle.pytorch import load_pinn, save_pinn
    from ptychopinn.models.prior_recipe import featureless_probe_advice
    from ptychopinn.models.scan_prior import ScanPrior, training_prior_note
    from ptychopinn.training.data import GroupDataset, collate_batch, prepare, split_groups
    from ptychopinn.training.module import PINNModule

    t_start = time.perf_counter()
    # every check a user's input can fail comes before the run folder is made
    check_output_dir(cfg.output_dir, "output_dir (the run folder)")
    if scan is None:
        scan = load_training_scan(cfg.train_data_file)
    test = check_training_inputs(cfg, scan, resume=resume, overwrite=overwrite)
    run_dir = ensure_dir(cfg.output_dir, "output_dir (the run folder)")
    if overwrite:
        clear_run_folder(run_dir)
    if cfg.execution.num_threads:
        torch.set_num_threads(cfg.execution.num_threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    data = prepare(scan, cfg)
    train_ids, val_ids = split_groups(data.indices.shape[0], cfg.val_fraction, cfg.seed)
    with_truth = cfg.realspace_weight > 0

    probe_n, units, log_s = initial_physics(cfg, scan, data)
    init = load_pinn(cfg.init_from) if cfg.init_from and not resume else None
    asked = cfg.model if init is None else None  # a fine-tuning takes its bundle's recipe
    cfg = settle_prior_recipe(cfg, scan, probe_n, data, math.exp(log_s),
                              None if init is None else init.config.model)
    save_config(cfg, run_dir / "config.yaml")
    module = PINNModule(
        cfg.model_dump(mode="json"),
        list(probe_n.shape),
        probe=probe_n,
        log_intensity_scale=log_s,
        input_scale=data.input_scale,
    )
    if data.valid is not None:
        module.valid_mask.copy_(data.valid)
    advice = featureless_probe_advice(cfg.model, module.model.physics.probe, asked=asked)
    if advice:
        log.warning("%s: %s", scan.source, advice)
    prior = ScanPrior.for_model(module.model, data.amplitudes, data.positions_px, valid=data.valid,
                                amplitude_units=units, training=True)
    note = training_prior_note(prior)
    if note:
        log.info("%s: %s", scan.source, note)
    train_dl = DataLoader(
        GroupDataset(data, train_ids, with_truth, prior),
        batch_size=cfg.batch_size,
        shuffle=True,
        collate_fn=collate_batch,
        drop_last=len(train_ids) > cfg.batch_size,
    )
    val_dl = None
    if len(val_ids):
        val_dl = DataLoader(
            GroupDataset(data, val_ids, with_truth, prior),
            batch_size=max(cfg.batch_size, 64),
            shuffle=False,
            collate_fn=collate_batch,
        )
    if init is not None:
        if init.config.model != cfg.model:
            raise ConfigError(init_model_mismatch(cfg.init_from, init.config.model, cfg.model))
        module.model.generator.load_state_dict(init.model.generator.state_dict())
        log.info("initialised the generator from %s", init.path)

    ckpt_dir = run_dir / "checkpoints"
    # last.ckpt after every epoch, overwritten: what --resume continues an interrupted run
    # from (save_last with save_top_k=0 wrote it only when fit ended: Lightning 2.6)
    callbacks = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="last",
            save_top_k=1,
            save_last=False,
            every_n_epochs=1,
            enable_version_counter=False,
        )
    ]
    hist_cb = _HistoryCallback()
    callbacks.append(hist_cb)
    callbacks.extend(extra_callbacks or [])
    if cfg.early_stopping_patience and val_dl is not None:
        callbacks.append(EarlyStopping(monitor="val/loss", patience=cfg.early_stopping_patience))
    if cfg.execution.progress_bar:
        from lightning.pytorch.callbacks import TQDMProgressBar

        callbacks.append(TQDMProgressBar(refresh_rate=max(1, len(train_dl) // 4)))
    with _without_lightning_advert():
        trainer = _make_trainer(L, cfg, run_dir, callbacks, train_dl)
    ckpt_path = None
    last = ckpt_dir / "last.ckpt"
    if resume:  # its existence checked before the run (`check_resume`)
        ckpt_path = str(last)
        log.info("resuming from %s", last)
    t_fit = time.perf_counter()
    with _without_lightning_pytree_warning():
        trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl,
                    ckpt_path=ckpt_path)
    t_fit = time.perf_counter() - t_fit
    history = _merge_history(run_dir, hist_cb.history, resume)
    result = TrainResult(
        run_dir=run_dir, bundle_path=run_dir, history=history, timings_s={"fit": t_fit}
    )
    if trainer.global_rank != 0:
        return result
    model = module.model.cpu().eval()
    bundle = save_pinn(
        run_dir,
        model,
        cfg,
        history=history,
        extra={
            "data_scale": data.data_scale,
            "epochs_done": int(trainer.current_epoch),
            "fit_seconds": t_fit,
            "n_train_patterns": scan.n_patterns,
        },
    )
    result.bundle_path = bundle
    _write_json(run_dir / "history.json", history)
    _post_training(result, cfg, scan, test)
    result.timings_s["total"] = time.perf_counter() - t_start
    return result


def _merge_history(run_dir: Path, new: list[dict], resume: bool) -> list[dict]:
    old: list[dict] = []
    path = run_dir / "history.json"
    if resume and path.is_file():
        old = json.loads(path.read_text())
    epochs = {row["epoch"] for row in new}
    return [r for r in old if r["epoch"] not in epochs] + new


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1))


def _post_training(result: TrainResult, cfg: TrainingConfig, scan: Scan,
                   test: Scan | None) -> None:
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.inference.reconstruct import reconstruct_pytorch

    post_training(result, cfg, scan, test, load=load_pinn, reconstruct=reconstruct_pytorch,
                  backend="pytorch")


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
    from ptychopinn.models.prior_recipe import resolve_prior_recipe

    manifest, _ = read_bundle(cfg.init_from)
    init_model = manifest_config(manifest, cfg.init_from).model
    # with a bundle to be like (``like``), the recipe is settled without reading the probe
    model, _ = resolve_prior_recipe(cfg.model, None, like=init_model)
    if init_model != model:
        raise ConfigError(init_model_mismatch(cfg.init_from, init_model, model))


def check_resume(cfg: TrainingConfig) -> None:
    """ConfigError when ``resume`` has no checkpoint of the run's backend to continue from
    (checked before anything is written to the run folder: the run would otherwise
    overwrite its config.yaml first)."""
    ckpts = Path(cfg.output_dir) / "checkpoints"
    if cfg.backend == "tensorflow":
        if not (ckpts / "checkpoint").is_file():
            raise ConfigError(f"--resume: no tensorflow checkpoint in {ckpts}; "
                              "start without --resume.")
    elif not (ckpts / "last.ckpt").is_file():
        raise ConfigError(f"--resume: no checkpoint at {ckpts / 'last.ckpt'}; "
                          "start without --resume.")


def trained_run_files(run_dir: str | os.PathLike) -> list[Path]:
    """What a training left in ``run_dir`` that a new training would replace: its model
    bundle and its checkpoints (either backend's)."""
    run = Path(run_dir)
    found = [run / BUNDLE_FILENAME] if (run / BUNDLE_FILENAME).is_file() else []
    ckpts = run / "checkpoints"
    if ckpts.is_dir() and any(ckpts.iterdir()):
        found.append(ckpts)
    return found


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


def clear_run_folder(run_dir: Path) -> None:
    """Remove a previous training's bundle and checkpoints (``overwrite``), so that the new
    run cannot resume, or be mistaken for, the old one."""
    import shutil

    for f in trained_run_files(run_dir):
        if f.is_dir():
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
    that its checkpoint exists (`check_resume`)."""
    check_run_folder(cfg, resume=resume, overwrite=overwrite)
    if resume:
        check_resume(cfg)
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
        return None
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
    return test


def post_training(result: TrainResult, cfg: TrainingConfig, scan: Scan, test: Scan | None, *,
                  load: Callable, reconstruct: Callable, backend: str) -> None:
    """After a training of either backend: the loss figure, and the stitched
    reconstruction of the training scan and of the test scan (`check_training_inputs`)
    from the saved bundle (``load(bundle_path)``,
    ``reconstruct(loaded, scan, InferenceConfig)``)."""
    from ptychopinn.inference.reconstruct import write_outputs

    try:
        from ptychopinn.figures import plot_loss_curve

        if result.history:
            plot_loss_curve(result.history, result.run_dir / "loss_curve.png")
    except Exception as exc:  # a figure never breaks a training
        log.warning("loss curve skipped: %s", exc)
    if not cfg.save_reconstruction and test is None:
        return
    loaded = load(result.bundle_path)
    icfg = InferenceConfig(backend=backend,
                           execution=cfg.execution.model_copy(update={"logger": "none"}))
    if cfg.save_reconstruction:
        recon = reconstruct(loaded, scan, icfg)
        write_outputs(recon, result.run_dir / "reconstruction", scan=scan)
        result.reconstruction = recon
        result.metrics = recon.metrics
    if test is not None:
        trec = reconstruct(loaded, test, icfg)
        write_outputs(trec, result.run_dir / "test_reconstruction", scan=test)
        result.test_metrics = trec.metrics


# Shared with the TensorFlow backend's runner.
merge_history = _merge_history
write_json = _write_json
