"""The Lightning module: losses, optimisers and schedules around `PtychoPINN`.

Its ``hyper_parameters`` are plain data (the config as JSON-compatible dict and
the probe's shape), so ``PINNModule.load_from_checkpoint(path)`` rebuilds it
with no other argument; the probe, scales and weights come from the state dict.
"""

from __future__ import annotations

import math
import time

import lightning as L
import torch
from torch import Tensor

from ptychopinn.config.schema import TrainingConfig
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
    """

    def __init__(
        self,
        config: dict,
        probe_shape: list[int],
        probe: Tensor | None = None,
        log_intensity_scale: float = 0.0,
        input_scale: float = 1.0,
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
        """Fraction of the budget used: max of epochs and wall-clock fractions."""
        trainer = self._trainer
        if trainer is None:
            return 0.0
        total = max(1, trainer.num_training_batches) * self.cfg.nepochs
        frac = trainer.global_step / total if math.isfinite(total) else 0.0
        if self.cfg.max_time_minutes is not None and self._t0 is not None:
            frac = max(frac, (time.monotonic() - self._t0) / (60.0 * self.cfg.max_time_minutes))
        return min(frac, 1.0)

    def _cosine_factor(self, step: int) -> float:
        warm = 50
        if step < warm:
            return (step + 1) / warm
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * self._progress()))

    def on_train_start(self) -> None:
        self._t0 = time.monotonic()
