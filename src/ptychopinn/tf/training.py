"""Train a PINN with TensorFlow: the same run directory, losses and outputs as PyTorch.

Run directory layout (as `ptychopinn.training.runner`, checkpoints in
TensorFlow's format)::

    RUN/config.yaml                     resolved configuration
    RUN/checkpoints/last-<k>.*          tf.train.Checkpoint (for --resume)
    RUN/checkpoints/resume.json         what it was trained with (config, scan
                                        fingerprint, epochs, time), for --resume
    RUN/model.ptychopinn.safetensors    the bundle (backend 'tensorflow')
    RUN/history.json, RUN/logs/history.csv   per-epoch losses
    RUN/loss_curve.png, RUN/reconstruction/  figures, stitched training scan

The data preparation (`ptychopinn.training.data.prepare`), the probe
normalisation and the initial intensity scale are the shared code; the
generator starts from the PyTorch backend's initial weights for the same seed
(converted), so both backends start from the same point.
"""

from __future__ import annotations

import csv
import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch

from ptychopinn.atomic import atomic_open, check_output_dir, ensure_dir
from ptychopinn.config.io import save_config
from ptychopinn.config.schema import TrainingConfig
from ptychopinn.data.scan import Scan
from ptychopinn.errors import ConfigError
from ptychopinn.tf import physics as tfp
from ptychopinn.tf import tf
from ptychopinn.tf.model import GEN_PREFIX, TFPtychoPINN, polar
from ptychopinn.tf.optim import Schedule, coupled_weight_decay, make_optimizer
from ptychopinn.training.checks import (
    checked_training_inputs,
    clear_run_folder,
    load_training_scan,
    resumed_config,
    write_resume_state,
)
from ptychopinn.training.interrupt import (
    TrainingInterrupted,
    interrupted_message,
    sigterm_interrupts,
)
from ptychopinn.training.runner import (
    TrainResult,
    initial_physics,
    merge_history,
    post_training,
    settle_prior_recipe,
    write_json,
)

log = logging.getLogger(__name__)
_TERMS = ("poisson_nll", "amplitude_mae", "realspace_mae")


def _check_execution(cfg: TrainingConfig) -> None:
    from ptychopinn.tf.inference import check_execution

    ex = cfg.execution
    check_execution(ex, training=True)
    if ex.num_threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(ex.num_threads)
        except RuntimeError:  # the runtime is already initialised in this process
            log.warning("execution.num_threads ignored: TensorFlow is already initialised")
    if ex.deterministic:
        tf.config.experimental.enable_op_determinism()


def torch_initial_weights(model_cfg, seed: int) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The PyTorch generator's initial state dict for ``seed`` (numpy, torch RNG untouched)."""
    from ptychopinn.models.registry import build_generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_generator(model_cfg)
    return {GEN_PREFIX + k: v.detach().numpy() for k, v in net.state_dict().items()}


def loss_terms(model: TFPtychoPINN, cfg: TrainingConfig, amps, offsets, true, valid,
               training: bool, prior=None, frac=None) -> dict:
    """The weighted loss and its named terms for one batch (as in the PyTorch module)."""
    amp, phase = model.predict_amp_phase(amps, model.train_input_scale, training=training,
                                         prior=prior)
    terms = {}
    if cfg.nll_weight > 0 or cfg.mae_weight > 0:
        expected = model.expected_counts(polar(amp, phase), offsets, frac)
        counts = tf.square(amps)
        if cfg.nll_weight > 0:
            terms["poisson_nll"] = tfp.poisson_nll(expected, counts, valid)
        if cfg.mae_weight > 0:
            terms["amplitude_mae"] = tfp.amplitude_mae(expected, counts, valid)
    if cfg.realspace_weight > 0:
        p = model.probe
        ill = tf.reduce_sum(tf.math.real(p) ** 2 + tf.math.imag(p) ** 2, axis=0)
        weight = tf.cast(ill / tf.maximum(tf.reduce_max(ill), 1e-12) > 0.05, tf.float32)
        terms["realspace_mae"] = tfp.realspace_mae(amp, phase, true, weight)
    weights = {"poisson_nll": cfg.nll_weight, "amplitude_mae": cfg.mae_weight,
               "realspace_mae": cfg.realspace_weight}
    terms["loss"] = tf.add_n([weights[k] * v for k, v in terms.items()])
    return terms


class _Steps:
    """Graph-compiled train and evaluation steps."""

    def __init__(self, model: TFPtychoPINN, cfg: TrainingConfig, opt, valid) -> None:
        self.model, self.cfg, self.opt = model, cfg, opt
        self.valid = None if valid is None else tf.constant(valid)
        self.vars = model.variables_to_train()
        self.decay = coupled_weight_decay(cfg)
        n, c = cfg.model.N, cfg.model.n_channels
        # batches are (amplitudes, offsets[, prior][, true][, frac]) -- see `_batch`
        self.has_prior = bool(cfg.model.prior_iterations)
        self.has_true = cfg.realspace_weight > 0
        self.has_frac = cfg.model.subpixel == "probe_shift"
        sig = [tf.TensorSpec((None, c, n, n), tf.float32), tf.TensorSpec((None, c, 2), tf.float32)]
        sig += [tf.TensorSpec((None, c, n, n), tf.complex64)] * (self.has_prior + self.has_true)
        sig += [tf.TensorSpec((None, c, 2), tf.float32)] * self.has_frac
        self.train = tf.function(lambda *b: self._train(*self._split(b)), input_signature=sig,
                                 autograph=False)
        self.eval = tf.function(lambda *b: self._eval(*self._split(b)), input_signature=sig,
                                autograph=False)

    def _split(self, batch: tuple) -> tuple:
        """(amps, offsets[, prior][, true][, frac]) -> (amps, offsets, true, prior, frac)."""
        rest = list(batch[2:])
        prior = rest.pop(0) if self.has_prior else None
        true = rest.pop(0) if self.has_true else None
        frac = rest.pop(0) if self.has_frac else None
        return batch[0], batch[1], true, prior, frac

    def _train(self, amps, offsets, true, prior, frac):
        with tf.GradientTape() as tape:
            terms = loss_terms(self.model, self.cfg, amps, offsets, true, self.valid, True, prior,
                               frac)
        grads = tape.gradient(terms["loss"], self.vars)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                 for g, v in zip(grads, self.vars, strict=True)]
        if self.cfg.gradient_clip_val is not None:
            grads, _ = tf.clip_by_global_norm(grads, self.cfg.gradient_clip_val)
        if self.decay > 0:  # the network's weights only (they come first), not the physics
            n_gen = len(self.model.generator.trainable_variables)
            grads = [g + self.decay * v if i < n_gen else g
                     for i, (g, v) in enumerate(zip(grads, self.vars, strict=True))]
        self.opt.apply_gradients(zip(grads, self.vars, strict=True))
        return terms

    def _eval(self, amps, offsets, true, prior, frac):
        return loss_terms(self.model, self.cfg, amps, offsets, true, self.valid, False, prior,
                          frac)


def build_optimizer(cfg: TrainingConfig, model: TFPtychoPINN):
    """The configured Keras optimizer, built for the model's variables; AdamW's
    decoupled weight decay excludes the physical variables (intensity scale, probe)."""
    opt = make_optimizer(cfg)
    physical = model.variables_to_train()[len(model.generator.trainable_variables):]
    if physical and cfg.weight_decay > 0 and hasattr(opt, "exclude_from_weight_decay"):
        opt.exclude_from_weight_decay(var_list=physical)
    opt.build(model.variables_to_train())
    return opt


def _batch(data: dict, groups: np.ndarray) -> tuple:
    idx = data["indices"][groups]
    out = (tf.constant(data["amps"][idx]), tf.constant(data["offsets"][groups]))
    if data["prior"] is not None:
        out += (tf.constant(data["prior"](torch.from_numpy(idx)).numpy()),)
    if data["true"] is not None:
        out += (tf.constant(data["true"][idx]),)
    if data["frac"] is not None:
        out += (tf.constant(data["frac"][idx]),)
    return out


def _run_batches(fn, data: dict, groups: np.ndarray, bs: int, before=None, stop=None) -> dict:
    """Run ``fn`` over batches; returns the batch-size-weighted mean of each term."""
    sums: dict[str, float] = {}
    n = 0
    for s in range(0, len(groups), bs):
        g = groups[s : s + bs]
        if before is not None:
            before()
        terms = fn(*_batch(data, g))
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(g)
        n += len(g)
        if stop is not None and stop():
            break
    return {k: v / max(n, 1) for k, v in sums.items()}


def _restore(ckpt, manager, ckpt_dir: Path) -> None:  # noqa: ANN001
    """Restore the latest checkpoint of ``manager`` into ``ckpt``; a missing or damaged
    one is a ConfigError naming it."""
    if manager.latest_checkpoint is None:
        raise ConfigError(f"--resume: no tensorflow checkpoint in {ckpt_dir}; "
                          "start without --resume.")
    try:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    except (tf.errors.OpError, ValueError, AssertionError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(
            f"--resume: tensorflow checkpoint {manager.latest_checkpoint} cannot be restored "
            f"({type(exc).__name__}: {first}); expected one `ptychopinn train` wrote with "
            "these options. It cannot be continued: start the training again with "
            "--overwrite or in another --output-dir.") from None


def _write_csv(path: Path, history: list[dict]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with atomic_open(path, "w") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def train_tensorflow(cfg: TrainingConfig, scan: Scan | None = None, *,
                     resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train a PINN (or supervised) model with TensorFlow; returns a `TrainResult`.

    ``resume`` and ``overwrite`` as `ptychopinn.training.runner.train_pytorch`'s; so is
    `TrainingInterrupted` for a loop stopped by SIGINT or SIGTERM. The time limit
    (``max_time_minutes``) counts from the run's start, across resumes."""
    from ptychopinn.tf.bundle import load_tf, save_tf
    from ptychopinn.training.data import prepare, split_groups

    t_start = time.perf_counter()
    _check_execution(cfg)
    # every check a user's input can fail comes before the run folder is made
    check_output_dir(cfg.output_dir, "output_dir (the run folder)")
    if scan is None:
        scan = load_training_scan(cfg.train_data_file)
    test, point = checked_training_inputs(cfg, scan, resume=resume, overwrite=overwrite)
    run_dir = ensure_dir(cfg.output_dir, "output_dir (the run folder)")
    if overwrite:
        clear_run_folder(run_dir)
    tf.random.set_seed(cfg.seed)

    prep = prepare(scan, cfg)
    with_truth = cfg.realspace_weight > 0
    data = {"amps": prep.amplitudes.numpy(), "indices": prep.indices.numpy(),
            "offsets": prep.offsets_px.numpy(),
            "true": prep.true_patches.numpy() if with_truth else None,
            "frac": None if prep.frac_px is None else prep.frac_px.numpy()}
    train_ids, val_ids = split_groups(data["indices"].shape[0], cfg.val_fraction, cfg.seed)
    probe_n, units, log_s = initial_physics(cfg, scan, prep)
    init = load_tf(cfg.init_from) if cfg.init_from and not resume else None
    asked = cfg.model if init is None else None  # a fine-tuning takes its bundle's recipe
    cfg = resumed_config(cfg, point)
    cfg = settle_prior_recipe(cfg, scan, probe_n, prep, math.exp(log_s),
                              None if init is None else init.config.model)
    model = TFPtychoPINN(cfg.model, probe_n.numpy(), probe_trainable=cfg.probe_trainable,
                         intensity_scale_trainable=cfg.intensity_scale_trainable,
                         log_intensity_scale=log_s, input_scale=prep.input_scale)
    model.load_generator(torch_initial_weights(cfg.model, cfg.seed), from_torch=True,
                         where="initial weights")
    if init is not None:
        if init.config.model != cfg.model:
            raise ConfigError(f"init_from {cfg.init_from}: its model section differs from this "
                              "run's; use the same model settings to fine-tune.")
        model.load_generator(init.model.state(), where=str(cfg.init_from))
        log.info("initialised the generator from %s", init.path)

    bs = cfg.batch_size
    drop_last = len(train_ids) > bs
    steps_per_epoch = len(train_ids) // bs if drop_last else 1
    opt = build_optimizer(cfg, model)
    schedule = Schedule(cfg, steps_per_epoch)
    epoch_var = tf.Variable(-1, dtype=tf.int64, trainable=False)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    ckpt = tf.train.Checkpoint(model=model, optimizer=opt,
                               epoch=epoch_var, step=step_var, **schedule.trackables())
    ckpt_dir = run_dir / "checkpoints"
    manager = tf.train.CheckpointManager(ckpt, str(ckpt_dir), max_to_keep=1,
                                         checkpoint_name="last")
    epochs_saved = None  # finished epochs in the checkpoint (None: none yet)
    if resume:
        _restore(ckpt, manager, ckpt_dir)
        epochs_saved = int(epoch_var.numpy()) + 1
        log.info("resuming from %s (epoch %d)", manager.latest_checkpoint, epochs_saved)
    save_config(cfg, run_dir / "config.yaml")  # once the checkpoint is known to continue
    from ptychopinn.models.prior_recipe import featureless_probe_advice
    from ptychopinn.models.scan_prior import training_prior_note

    advice = featureless_probe_advice(cfg.model, torch.from_numpy(model.physics_probe.numpy()),
                                      asked=asked)
    if advice:
        log.warning("%s: %s", scan.source, advice)
    data["prior"] = model.scan_prior(data["amps"], prep.positions_px.numpy(),
                                     None if prep.valid is None else prep.valid.numpy(),
                                     amplitude_units=units, training=True)
    note = training_prior_note(data["prior"])
    if note:
        log.info("%s: %s", scan.source, note)
    steps = _Steps(model, cfg, opt, None if prep.valid is None else prep.valid.numpy())
    writer = None
    if cfg.execution.logger == "tensorboard":
        writer = tf.summary.create_file_writer(str(run_dir / "logs" / "tensorboard"))

    def before_step() -> None:
        opt.learning_rate = schedule.lr_for_step(int(step_var.numpy()))
        step_var.assign_add(1)

    new_history: list[dict] = []
    fit_before = 0.0 if point is None else point.fit_seconds  # of the sessions before
    schedule.t0 = time.monotonic() - fit_before  # the time limit counts from the run's start
    t_fit = time.perf_counter()
    n_seen = 0

    def one_epoch(epoch: int) -> bool:
        """Train and validate ``epoch``, checkpoint and log it; True: stop after it."""
        nonlocal n_seen, epochs_saved
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(train_ids)
        if drop_last:
            perm = perm[: steps_per_epoch * bs]
        train_terms = _run_batches(steps.train, data, perm, bs, before_step, schedule.out_of_time)
        n_seen += len(perm) * cfg.model.n_channels
        row: dict = {"epoch": epoch, **{f"train/{k}": v for k, v in train_terms.items()}}
        if len(val_ids):
            val_terms = _run_batches(steps.eval, data, val_ids, max(bs, 64))
            row.update({f"val/{k}": v for k, v in val_terms.items()})
        row["intensity_scale"] = model.intensity_scale
        row["lr"] = float(opt.learning_rate.numpy())
        new_history.append(row)
        epoch_var.assign(epoch)
        monitored = row.get("val/loss", row.get("train/loss", float("nan")))
        schedule.end_epoch(monitored)
        stop = schedule.should_stop(row.get("val/loss"))
        manager.save()
        epochs_saved = epoch + 1
        write_resume_state(ckpt_dir, cfg, scan, epochs_done=epochs_saved,
                           fit_seconds=fit_before + time.perf_counter() - t_fit)
        history = merge_history(run_dir, new_history, resume)
        write_json(run_dir / "history.json", history)
        if cfg.execution.logger == "csv":
            _write_csv(run_dir / "logs" / "history.csv", history)
        if writer is not None:
            with writer.as_default():
                for k, v in row.items():
                    if k != "epoch":
                        tf.summary.scalar(k, v, step=epoch)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                                                   if k != "epoch"))
        if stop or schedule.out_of_time():
            log.info("stopping after epoch %d (%s)", epoch,
                     "early stopping" if stop else "max_time_minutes reached")
            return True
        return False

    try:
        with sigterm_interrupts():
            for epoch in range(int(epoch_var.numpy()) + 1, cfg.nepochs):
                if one_epoch(epoch):
                    break
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (`sigterm_interrupts`)
        signum = getattr(exc, "signum", signal.SIGINT)
        raise TrainingInterrupted(signum, interrupted_message(
            signum, Path(manager.latest_checkpoint or ckpt_dir), epochs_saved)) from None
    t_fit = time.perf_counter() - t_fit
    history = merge_history(run_dir, new_history, resume)
    result = TrainResult(run_dir=run_dir, bundle_path=run_dir, history=history,
                         backend="tensorflow",
                         timings_s={"fit": t_fit,
                                    "train_patterns_per_s": n_seen / max(t_fit, 1e-9)})
    result.bundle_path = save_tf(
        run_dir, model, cfg, history=history,
        extra={"data_scale": prep.data_scale, "epochs_done": int(epoch_var.numpy()) + 1,
               # from the run's start: the sessions before a resume, and this one's loop
               "fit_seconds": fit_before + t_fit, "n_train_patterns": scan.n_patterns})
    write_json(run_dir / "history.json", history)
    _post_training(result, cfg, scan, test)
    result.timings_s["total"] = time.perf_counter() - t_start
    return result


def _post_training(result: TrainResult, cfg: TrainingConfig, scan: Scan,
                   test: Scan | None) -> None:
    from ptychopinn.tf.bundle import load_tf
    from ptychopinn.tf.inference import reconstruct_tensorflow

    post_training(result, cfg, scan, test, load=load_tf, reconstruct=reconstruct_tensorflow,
                  backend="tensorflow")
