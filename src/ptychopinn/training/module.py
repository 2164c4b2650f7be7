"""The Lightning module: losses, optimisers and schedules around `PtychoPINN`, and how
its checkpoints are written and read.

Its ``hyper_parameters`` are plain data (the config as JSON-compatible dict, the
probe's shape and the training scan's fingerprint), so
``PINNModule.load_from_checkpoint(path)`` rebuilds it with no other argument; the
probe, scales and weights come from the state dict. Checkpoints go through
`SafeCheckpointIO`: written atomically beside their target, read as plain data only
(`read_checkpoint`), never unpickled.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor

from ptychopinn.atomic import atomic_open
from ptychopinn.config.schema import TrainingConfig
from ptychopinn.errors import ConfigError
from ptychopinn.models.pinn import PtychoPINN
from ptychopinn.physics.losses import amplitude_mae, poisson_nll, realspace_mae


class PINNModule(L.LightningModule):
    """Self-supervised (PINN) or supervised training of the generator.

    Parameters
    ----------
    config
        ``TrainingConfig`` as plain data (``model_dump(mode="json")``).
    probe_shape
        ``[M, N, N]`` of the probe (its values come from the state dict or
        ``probe``).
    probe
        The probe tensor for a new run (not a hyper-parameter).
    log_intensity_scale, input_scale
        Initial scales for a new run.
    scan_fingerprint
        The training scan's `ptychopinn.training.checks.scan_fingerprint` (kept in the
        checkpoint, so that ``--resume`` can refuse another scan); None: not recorded.
    """

    def __init__(
        self,
        config: dict,
        probe_shape: list[int],
        probe: Tensor | None = None,
        log_intensity_scale: float = 0.0,
        input_scale: float = 1.0,
        scan_fingerprint: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["probe"])
        self.cfg = TrainingConfig.model_validate(config)
        if probe is None:
            probe = torch.zeros(*probe_shape, dtype=torch.complex64)
        self.model = PtychoPINN(
            self.cfg.model,
            probe,
            probe_trainable=self.cfg.probe_trainable,
            intensity_scale_trainable=self.cfg.intensity_scale_trainable,
            log_intensity_scale=log_intensity_scale,
        )
        self.model.train_input_scale.fill_(float(input_scale))
        self.register_buffer("valid_mask", torch.ones(probe_shape[-2:]))
        self._t0: float | None = None

    # ----------------------------------------------------------------- steps
    def _losses(self, batch: dict) -> dict[str, Tensor]:
        amps: Tensor = batch["amplitudes"]
        cfg = self.cfg
        amp, phase = self.model.predict_amp_phase(
            amps, self.model.train_input_scale, batch.get("prior")
        )
        terms: dict[str, Tensor] = {}
        need_physics = cfg.nll_weight > 0 or cfg.mae_weight > 0
        if need_physics:
            patches = torch.polar(amp, phase)
            expected = self.model.expected_counts(patches, batch["offsets"], batch.get("frac"))
            counts = amps.square()
            valid = self.valid_mask
            if cfg.nll_weight > 0:
                terms["poisson_nll"] = poisson_nll(expected, counts, valid)
            if cfg.mae_weight > 0:
                terms["amplitude_mae"] = amplitude_mae(expected, counts, valid)
        if cfg.realspace_weight > 0:
            if "true_patches" not in batch:
                raise RuntimeError(
                    "realspace_weight > 0 (or model_type 'supervised') needs a scan with a "
                    "ground-truth object ('objectGuess')."
                )
            weight = self.model.physics.illumination(self.model.probe) > 0.05
            terms["realspace_mae"] = realspace_mae(
                amp, phase, batch["true_patches"], weight.to(amp.dtype)
            )
        weights = {
            "poisson_nll": cfg.nll_weight,
            "amplitude_mae": cfg.mae_weight,
            "realspace_mae": cfg.realspace_weight,
        }
        terms["loss"] = sum(weights[k] * v for k, v in terms.items())
        return terms

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        terms = self._losses(batch)
        bs = batch["amplitudes"].shape[0]
        for k, v in terms.items():
            self.log(
                f"train/{k}",
                v.detach(),
                on_step=False,
                on_epoch=True,
                batch_size=bs,
                prog_bar=(k == "loss"),
                sync_dist=True,
            )
        self.log(
            "intensity_scale",
            torch.exp(self.model.log_intensity_scale.detach()),
            on_step=False,
            on_epoch=True,
            batch_size=bs,
            sync_dist=True,
        )
        return terms["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        terms = self._losses(batch)
        bs = batch["amplitudes"].shape[0]
        for k, v in terms.items():
            self.log(
                f"val/{k}",
                v,
                on_step=False,
                on_epoch=True,
                batch_size=bs,
                prog_bar=(k == "loss"),
                sync_dist=True,
            )

    # ------------------------------------------------------------ optimisers
    def configure_optimizers(self):
        cfg = self.cfg
        # weight decay regularises the network only: the intensity scale and a
        # trainable probe are physical quantities, not weights to shrink
        gen = [p for p in self.model.generator.parameters() if p.requires_grad]
        gen_ids = {id(p) for p in gen}
        phys = [p for p in self.parameters() if p.requires_grad and id(p) not in gen_ids]
        params = [{"params": gen, "weight_decay": cfg.weight_decay}]
        if phys:
            params.append({"params": phys, "weight_decay": 0.0})
        if cfg.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.SGD(
                params, lr=cfg.learning_rate, momentum=0.9, weight_decay=cfg.weight_decay
            )
        if cfg.scheduler == "none":
            return opt
        if cfg.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=5)
            monitor = "val/loss" if cfg.val_fraction > 0 else "train/loss"
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": monitor, "interval": "epoch"},
            }
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=self._cosine_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _progress(self) -> float:
        """Fraction of the budget used: max of epochs and wall-clock fractions (both
        counted from the run's start, across resumes, as the time limit is)."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        total = max(1, trainer.num_training_batches) * self.cfg.nepochs
        frac = trainer.global_step / total if math.isfinite(total) else 0.0
        elapsed = self._elapsed_s(trainer)
        if self.cfg.max_time_minutes is not None and elapsed is not None:
            frac = max(frac, elapsed / (60.0 * self.cfg.max_time_minutes))
        return min(frac, 1.0)

    def _elapsed_s(self, trainer) -> float | None:  # noqa: ANN001
        """Training seconds so far: the Trainer's `Timer` (restored on resume, so counted
        from the run's start) where ``max_time`` made one, else this session's."""
        from lightning.pytorch.callbacks import Timer

        for cb in trainer.callbacks:
            if isinstance(cb, Timer):
                return float(cb.time_elapsed("train"))
        return None if self._t0 is None else time.monotonic() - self._t0

    def _cosine_factor(self, step: int) -> float:
        warm = 50
        if step < warm:
            return (step + 1) / warm
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * self._progress()))

    def on_train_start(self) -> None:
        self._t0 = time.monotonic()


# ------------------------------------------------------------------ checkpoints
_RESTART = ("start the training again with --overwrite (it replaces this run's checkpoint "
            "and model) or in another --output-dir")


def _unreadable(path: str | os.PathLike, exc: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed with ``exc``, in one short line."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return ("it holds Python objects other than tensors and plain data (not loaded: "
                "unpickling them could run code)")
    with contextlib.suppress(OSError):
        if os.path.getsize(path) == 0:
            return "it is empty (0 bytes)"
    first = (str(exc).strip().splitlines() or [""])[0]
    if "mmap can only be used" in first:  # torch's words for a file not in its zip format
        return "it is not in the zip format torch.save writes (truncated, or another file)"
    return f"it is truncated or damaged ({type(exc).__name__}: {first.split('. ')[0][:160]})"


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *,
                    mmap: bool = False) -> dict:
    """The checkpoint at ``path`` as plain data: ``torch.load(..., weights_only=True)``
    whatever the environment says (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` only changes
    loads that leave ``weights_only`` unset), so a crafted file never runs code.
    ``mmap``: map the tensors instead of reading them (to read the metadata of a large
    checkpoint). A missing, unreadable or foreign file is a `ConfigError` naming it."""
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise ConfigError(f"--resume: no checkpoint at {path}; start without --resume.") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise ConfigError(f"--resume: checkpoint {path} cannot be read: {_unreadable(path, exc)}; "
                          f"expected a checkpoint written by `ptychopinn train`. It cannot be "
                          f"continued: {_RESTART}.") from None
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise ConfigError(f"--resume: {path} is not a training checkpoint (expected a "
                          f"dictionary with a 'state_dict'; found {type(raw).__name__}"
                          f"{' without one' if isinstance(raw, dict) else ''}). {_RESTART}.")
    return raw


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O for the run folder's ``checkpoints/``.

    ``save_checkpoint`` writes with `torch.save` through `ptychopinn.atomic.atomic_open`
    (a temporary file in the checkpoint's own folder, renamed over it), so an interrupted
    write leaves the previous checkpoint intact; Lightning's own writer stages the file
    elsewhere and, across file systems, ends in a truncating copy. ``load_checkpoint``
    reads plain data only (`read_checkpoint`), whatever ``weights_only`` it is asked for.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO.save_checkpoint takes no storage_options; "
                            f"found {storage_options!r}")
        with atomic_open(path, "wb") as fh:
            torch.save(checkpoint, fh)

    def load_checkpoint(self, path: str | os.PathLike,
                        map_location: Any = lambda storage, loc: storage,
                        weights_only: bool | None = None, **kwargs: Any) -> dict[str, Any]:
        return read_checkpoint(path, map_location)
