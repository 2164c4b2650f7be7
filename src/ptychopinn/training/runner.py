"""Run a training: data -> Lightning Trainer -> checkpoints -> bundle -> reconstruction.

Run directory layout::

    RUN/config.yaml                     resolved configuration
    RUN/checkpoints/last.ckpt           Lightning checkpoint (for --resume): written
                                        atomically after every epoch; holds the
                                        config and the scan's fingerprint
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ptychopinn.atomic import atomic_write_text, check_output_dir, ensure_dir
from ptychopinn.config.io import save_config
from ptychopinn.config.schema import InferenceConfig, TrainingConfig
from ptychopinn.data.scan import MEASURED_POSITIONS_KEY, Scan
from ptychopinn.errors import ConfigError
from ptychopinn.training.checks import (
    _checkpoint_epochs,
    checked_training_inputs,
    clear_run_folder,
    init_model_mismatch,
    load_training_scan,
    resumed_config,
    scan_fingerprint,
)
from ptychopinn.training.interrupt import (
    TrainingInterrupted,
    _stopping_signal,
    interrupted_message,
)

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
    """Collects the epoch-level metrics Lightning logged and the training time, and keeps
    both in checkpoints (so a resumed run reports every epoch and its whole fit time)."""

    def __new__(cls):
        import lightning as L

        class _CB(L.Callback):
            def __init__(self) -> None:
                self.history: list[dict] = []
                self.fit_seconds_before = 0.0  # of the sessions before a resume
                self._t0: float | None = None
                self._t1: float | None = None

            def on_train_start(self, trainer, pl_module) -> None:
                self._t0, self._t1 = time.perf_counter(), None

            def on_train_end(self, trainer, pl_module) -> None:
                self._t1 = time.perf_counter()

            def fit_seconds(self) -> float:
                """Training seconds from the run's start, across resumes (as the time
                limit's Timer counts them: from the start to the end of training)."""
                if self._t0 is None:
                    return self.fit_seconds_before
                return self.fit_seconds_before + (self._t1 or time.perf_counter()) - self._t0

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
                return {"history": [dict(r) for r in self.history],
                        "fit_seconds": self.fit_seconds()}

            def load_state_dict(self, state_dict: dict) -> None:
                self.history = [dict(r) for r in state_dict.get("history", [])]
                self.fit_seconds_before = float(state_dict.get("fit_seconds", 0.0))

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


@contextlib.contextmanager
def _without_resume_warning(resume: bool):
    """On ``resume``, drop ModelCheckpoint's warnings that the checkpoint folder is not
    empty (it holds the checkpoint the run continues from, as it should) and, for a run
    folder moved or copied since, that its "best model" records are not reloaded (it
    keeps only last.ckpt, ranked by nothing)."""
    import warnings

    with warnings.catch_warnings():
        if resume:
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is "
                                    "not empty")
            warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
        yield


def _make_trainer(L, cfg: TrainingConfig, run_dir: Path, callbacks: list, train_dl):  # noqa: ANN001, N803
    import datetime as dt

    from ptychopinn.training.module import SafeCheckpointIO

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
        plugins=[SafeCheckpointIO()],  # atomic writes; plain-data reads only
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

    ``resume`` continues the training in ``cfg.output_dir`` from its checkpoint (with
    the options and the scan it was trained with: `check_resume`); ``overwrite``
    replaces a training there (without either, a folder holding a model or a checkpoint
    is refused: `check_run_folder`). ``extra_callbacks`` are Lightning callbacks added
    to the Trainer (e.g. a benchmark's periodic evaluation). A fit stopped by SIGINT or
    SIGTERM raises `TrainingInterrupted` and writes no bundle.
    """
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
    test, point = checked_training_inputs(cfg, scan, resume=resume, overwrite=overwrite)
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
    cfg = resumed_config(cfg, point)
    cfg = settle_prior_recipe(cfg, scan, probe_n, data, math.exp(log_s),
                              None if init is None else init.config.model)
    save_config(cfg, run_dir / "config.yaml")
    module = PINNModule(
        cfg.model_dump(mode="json"),
        list(probe_n.shape),
        probe=probe_n,
        log_intensity_scale=log_s,
        input_scale=data.input_scale,
        scan_fingerprint=scan_fingerprint(scan),
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
    try:
        with _without_lightning_pytree_warning(), _without_resume_warning(resume):
            trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl,
                        ckpt_path=ckpt_path)
    except SystemExit as exc:
        signum = _stopping_signal(exc)
        if signum is None:
            raise
        raise TrainingInterrupted(signum, interrupted_message(
            signum, last, _checkpoint_epochs(last))) from None
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
            # from the run's start: the sessions before a resume, and this one's
            "fit_seconds": hist_cb.fit_seconds(),
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
    # inference runs on one device, whatever the training ran on
    one = {"logger": "none", "devices": 1, "strategy": "auto", "num_nodes": 1}
    icfg = InferenceConfig(backend=backend, execution=cfg.execution.model_copy(update=one))
    if cfg.save_reconstruction:
        recon = reconstruct(loaded, scan, icfg)
        measured = scan.metadata.get(MEASURED_POSITIONS_KEY)  # trained at corrected positions
        if measured is not None and np.shape(measured) == scan.positions_px.shape:
            recon.measured_positions_px = np.asarray(measured) - recon.frame_offset_px
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
