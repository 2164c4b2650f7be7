"""The PINN: a generator network wrapped with the physics forward model.

Two graphs share the same weights:

* inference graph: diffraction amplitudes -> object patches (`predict_patches`);
* training graph: amplitudes -> patches -> physics -> expected counts
  (`expected_counts`), compared with the measured counts by the losses.

The global intensity scale (learnable or fixed) and an optionally trainable
probe live here, not in the buffer-only physics module.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ptychopinn.config.schema import ModelConfig
from ptychopinn.models.heads import INITIAL_AMPLITUDE
from ptychopinn.physics.forward import ForwardModel
from ptychopinn.physics.prior import (
    error_reduction,
    neighbourhood_error_reduction,
    prior_channels,
)


def normalise_probe(probe: Tensor, probe_scale: float) -> tuple[Tensor, float]:
    """Scale the probe to max amplitude ``probe_scale / 4``; returns (probe, factor)."""
    peak = float(probe.abs().max())
    if peak <= 0:
        return probe, 1.0
    factor = (probe_scale / 4.0) / peak
    return probe * factor, factor


class PtychoPINN(nn.Module):
    """Generator + physics + intensity scale.

    Parameters
    ----------
    model_cfg
        The model section of the configuration.
    probe
        ``(M, N, N)`` complex probe in the data's scale (sqrt-counts units).
    probe_trainable, intensity_scale_trainable
        Which physical parameters are learned.
    log_intensity_scale
        Initial natural log of the amplitude scale ``s`` (expected counts are
        ``s**2 * sum_m |F(P_m O)|**2`` with the normalised probe).
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        probe: Tensor,
        *,
        probe_trainable: bool = False,
        intensity_scale_trainable: bool = True,
        log_intensity_scale: float = 0.0,
    ) -> None:
        super().__init__()
        from ptychopinn.models.registry import build_generator

        self.cfg = model_cfg
        # channels-last convolutions are ~2x faster on CPUs (oneDNN) and no slower on GPUs
        self.generator = build_generator(model_cfg).to(memory_format=torch.channels_last)
        self.physics = ForwardModel(
            probe,
            object_big=model_cfg.object_big,
            pad_object=model_cfg.pad_object,
            probe_mask=model_cfg.probe_mask,
            probe_big=model_cfg.probe_big,
            smoothing_sigma=model_cfg.gaussian_smoothing_sigma,
        )
        self.log_intensity_scale = nn.Parameter(
            torch.tensor(float(log_intensity_scale)), requires_grad=intensity_scale_trainable
        )
        self.probe_trainable = probe_trainable
        if probe_trainable:
            self.probe_param = nn.Parameter(torch.view_as_real(self.physics.probe.clone()))
        # sqrt(mean counts per pixel) of the training data (for reference / fallback)
        self.register_buffer("train_input_scale", torch.tensor(1.0))
        # data amplitudes / prior_amplitude_scale are in the normalised probe's
        # scale: the physics prior's fixed input normalisation (the initial s)
        self.register_buffer(
            "prior_amplitude_scale", torch.tensor(math.exp(float(log_intensity_scale)))
        )

    @property
    def probe(self) -> Tensor:
        if self.probe_trainable:
            return torch.view_as_complex(self.probe_param)
        return self.physics.probe

    def prior_estimate(self, amplitudes: Tensor, offsets_px: Tensor | None = None) -> Tensor:
        """The physics first guess of patches (see `physics.prior`).

        ``amplitudes (..., N, N)`` alone: each pattern's single-pattern
        estimate. ``amplitudes (B, K, N, N)`` with ``offsets_px (B, K, 2)``:
        member 0's joint estimate with its K - 1 neighbours (what the model is
        trained on when ``prior_neighbors == K``; `models.scan_prior.ScanPrior`
        computes it for a whole scan). Uses the fixed initial probe (the
        ``physics.probe`` buffer), so it is a pure function of the data.
        """
        iters = int(self.cfg.prior_iterations or 0)
        scaled = amplitudes / self.prior_amplitude_scale
        if offsets_px is None:
            return error_reduction(scaled, self.physics.probe, iters)
        return neighbourhood_error_reduction(scaled, offsets_px, self.physics.probe, iters)

    def resolve_prior(self, amplitudes: Tensor, prior: Tensor | None = None) -> Tensor | None:
        """The ``(B, C, N, N)`` physics prior of a batch: ``prior`` if given (a
        `ScanPrior` lookup), else computed from ``amplitudes`` when the model's
        prior is single-pattern; None for raw-diffraction models. A model with
        ``prior_scope='scan'`` or ``prior_neighbors > 1`` raises without
        ``prior`` (the rest of the scan is not in the batch)."""
        if not self.cfg.prior_iterations:
            return None
        if prior is not None:
            return prior
        if self.cfg.prior_scope == "scan":
            raise ValueError(
                "model.prior_scope is 'scan': each pattern's physics prior is a patch of the "
                "whole scan's estimate, which a batch does not hold; compute it with "
                "models.scan_prior.ScanPrior and pass prior=..."
            )
        if self.cfg.prior_neighbors > 1:
            raise ValueError(
                f"model.prior_neighbors is {self.cfg.prior_neighbors}: each pattern's "
                "physics prior needs its scan neighbours, which a batch does not hold; "
                "compute it with models.scan_prior.ScanPrior and pass prior=..."
            )
        return self.prior_estimate(amplitudes)

    def network_input(
        self, amplitudes: Tensor, input_scale: Tensor | float, prior: Tensor | None = None
    ) -> Tensor:
        """The generator's input: scaled amplitudes, or the prior estimate (re, im)."""
        prior = self.resolve_prior(amplitudes, prior)
        if prior is None:
            return amplitudes / input_scale
        return prior_channels(prior)

    def predict_patches(
        self, amplitudes: Tensor, input_scale: Tensor | float, prior: Tensor | None = None
    ) -> Tensor:
        """Diffraction amplitudes ``(B, C, N, N)`` -> complex patches ``(B, C, N, N)``."""
        amp, phase = self.predict_amp_phase(amplitudes, input_scale, prior)
        return torch.polar(amp, phase)

    def predict_amp_phase(
        self, amplitudes: Tensor, input_scale: Tensor | float, prior: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Diffraction amplitudes -> (amplitude, phase) of the patches.

        With ``prior_residual`` the heads correct the prior: amplitude
        ``|prior| * head / INITIAL_AMPLITUDE``, phase ``arg(prior) + head``.
        """
        prior = self.resolve_prior(amplitudes, prior)
        x = self.network_input(amplitudes, input_scale, prior)
        amp, phase = self.generator(x.contiguous(memory_format=torch.channels_last))
        amp, phase = amp.float(), phase.float()
        if prior is not None and self.cfg.prior_residual:
            factor = amp * (1.0 / INITIAL_AMPLITUDE)
            if self.cfg.prior_residual_gate:  # keep the prior where the probe is dark
                g = self.physics.illumination()
                factor = factor.clamp_min(1e-6).pow(g)
                phase = phase * g
            amp = prior.abs() * factor
            phase = phase + prior.angle()
        return amp, phase

    def expected_counts(
        self, patches: Tensor, offsets_px: Tensor | None, frac_px: Tensor | None = None
    ) -> Tensor:
        """Complex patches -> expected counts through the physics and the scale
        (``frac_px``: see `ForwardModel.forward`)."""
        intensity = self.physics(patches, offsets_px, probe=self.probe, frac_px=frac_px)
        return intensity * torch.exp(2.0 * self.log_intensity_scale)

    def forward(
        self,
        amplitudes: Tensor,
        offsets_px: Tensor,
        input_scale: Tensor | float,
        prior: Tensor | None = None,
        frac_px: Tensor | None = None,
    ) -> Tensor:
        return self.expected_counts(
            self.predict_patches(amplitudes, input_scale, prior), offsets_px, frac_px
        )


def initial_log_scale(
    counts_per_pattern: float, probe_norm: Tensor, amplitude_units: str, factor: float
) -> float:
    """Initial log amplitude scale.

    For sqrt-count data with the probe in the data's scale the physics is exact
    at ``s = 1 / factor``; for arbitrary units ``s`` is estimated so that an
    object of amplitude 0.7 reproduces the mean counts per pattern.
    """
    if amplitude_units == "sqrt_counts":
        return -math.log(factor)
    power = float((probe_norm.abs() ** 2).sum())
    return 0.5 * math.log(max(counts_per_pattern, 1e-12) / (0.49 * max(power, 1e-12)))
