"""Optimizers, learning-rate schedules and early stopping for the TensorFlow loop.

They reproduce the PyTorch backend's choices (``ptychopinn.training.module``):
Adam/SGD with L2 weight decay added to the gradient (as ``torch.optim`` does),
AdamW with decoupled decay, SGD momentum 0.9, eps 1e-8; 'cosine' is a 50-step
linear warm-up then a cosine decay to 2 % of the rate over the larger of the
step and wall-clock fractions of the budget; 'plateau' halves the rate after 5
epochs without a relative gain of 1e-4 in the monitored loss.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ptychopinn.config.schema import TrainingConfig
from ptychopinn.tf import keras, tf

WARMUP_STEPS = 50
COSINE_FLOOR = 0.02
PLATEAU_FACTOR = 0.5
PLATEAU_PATIENCE = 5
PLATEAU_THRESHOLD = 1e-4


def make_optimizer(cfg: TrainingConfig) -> keras.optimizers.Optimizer:
    """The optimizer named by ``cfg.optimizer`` at ``cfg.learning_rate``."""
    lr = float(cfg.learning_rate)
    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(lr, epsilon=1e-8)
    if cfg.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay, epsilon=1e-8)
    return keras.optimizers.SGD(lr, momentum=0.9)


def coupled_weight_decay(cfg: TrainingConfig) -> float:
    """L2 decay added to the gradients (adam, sgd); AdamW decays inside the optimizer."""
    return float(cfg.weight_decay) if cfg.optimizer in ("adam", "sgd") else 0.0


@dataclass
class Schedule:
    """The learning-rate schedule and early stopping, with checkpointable state.

    ``state`` holds the variables a resumed run needs (best monitored loss,
    epochs without gain for the scheduler and for early stopping).
    """

    cfg: TrainingConfig
    steps_per_epoch: int
    t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.best_sched = tf.Variable(math.inf, dtype=tf.float64, trainable=False)
        self.bad_sched = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_stop = tf.Variable(math.inf, dtype=tf.float64, trainable=False)
        self.bad_stop = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.lr_scale = tf.Variable(1.0, dtype=tf.float64, trainable=False)

    def trackables(self) -> dict:
        """Variables to put in the training checkpoint."""
        return {"best_sched": self.best_sched, "bad_sched": self.bad_sched,
                "best_stop": self.best_stop, "bad_stop": self.bad_stop,
                "lr_scale": self.lr_scale}

    def progress(self, step: int) -> float:
        """Fraction of the budget used: the max of the step and wall-clock fractions."""
        total = max(1, self.steps_per_epoch) * self.cfg.nepochs
        frac = step / total
        if self.cfg.max_time_minutes is not None:
            frac = max(frac, (time.monotonic() - self.t0) / (60.0 * self.cfg.max_time_minutes))
        return min(frac, 1.0)

    def lr_for_step(self, step: int) -> float:
        """Learning rate of optimisation step ``step`` (0-based)."""
        base = float(self.cfg.learning_rate)
        if self.cfg.scheduler == "cosine":
            if step < WARMUP_STEPS:
                return base * (step + 1) / WARMUP_STEPS
            p = self.progress(step)
            return base * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * p)))
        if self.cfg.scheduler == "plateau":
            return base * float(self.lr_scale.numpy())
        return base

    def end_epoch(self, monitored: float) -> None:
        """Plateau bookkeeping after an epoch whose monitored loss is ``monitored``."""
        if self.cfg.scheduler != "plateau" or not math.isfinite(monitored):
            return
        best = float(self.best_sched.numpy())
        if monitored < best * (1 - PLATEAU_THRESHOLD):
            self.best_sched.assign(monitored)
            self.bad_sched.assign(0)
            return
        self.bad_sched.assign_add(1)
        if int(self.bad_sched.numpy()) > PLATEAU_PATIENCE:
            self.lr_scale.assign(float(self.lr_scale.numpy()) * PLATEAU_FACTOR)
            self.bad_sched.assign(0)

    def should_stop(self, val_loss: float | None) -> bool:
        """Early stopping on the validation loss (patience from the config)."""
        patience = self.cfg.early_stopping_patience
        if not patience or val_loss is None:
            return False
        if val_loss < float(self.best_stop.numpy()):
            self.best_stop.assign(val_loss)
            self.bad_stop.assign(0)
            return False
        self.bad_stop.assign_add(1)
        return int(self.bad_stop.numpy()) >= patience

    def out_of_time(self) -> bool:
        """Whether ``max_time_minutes`` has passed since the loop started."""
        limit = self.cfg.max_time_minutes
        return limit is not None and time.monotonic() - self.t0 >= 60.0 * limit
