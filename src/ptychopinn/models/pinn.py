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
from ptychopinn.physics.forward import ForwardModel
from ptychopinn.physics.prior import error_reduction, prior_channels


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
        self.generator = build_generator(model_cfg)
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

    def prior_estimate(self, amplitudes: Tensor) -> Tensor:
        """The physics first guess of each pattern's patch (see `physics.prior`).

        Uses the fixed initial probe (the ``physics.probe`` buffer), so it is a
        pure function of the data and may be computed once per scan.
        """
        return error_reduction(
            amplitudes / self.prior_amplitude_scale,
            self.physics.probe,
            int(self.cfg.prior_iterations or 0),
        )

    def network_input(
        self, amplitudes: Tensor, input_scale: Tensor | float, prior: Tensor | None = None
    ) -> Tensor:
        """The generator's input: scaled amplitudes, or the prior estimate (re, im).

        ``prior`` is a precomputed `prior_estimate` of ``amplitudes`` (optional).
        """
        if not self.cfg.prior_iterations:
            return amplitudes / input_scale
        if prior is None:
            prior = self.prior_estimate(amplitudes)
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
        """Diffraction amplitudes -> (amplitude, phase) of the patches."""
        amp, phase = self.generator(self.network_input(amplitudes, input_scale, prior))
        return amp.float(), phase.float()

    def expected_counts(self, patches: Tensor, offsets_px: Tensor | None) -> Tensor:
        """Complex patches -> expected counts through the physics and the scale."""
        intensity = self.physics(patches, offsets_px, probe=self.probe)
        return intensity * torch.exp(2.0 * self.log_intensity_scale)

    def forward(
        self, amplitudes: Tensor, offsets_px: Tensor, input_scale: Tensor | float
    ) -> Tensor:
        return self.expected_counts(self.predict_patches(amplitudes, input_scale), offsets_px)


PRIOR_CACHE_LIMIT_BYTES = 1 << 30
"""Precompute the physics prior of every pattern when it fits in this many bytes."""


def precompute_prior(
    model: PtychoPINN, amplitudes: Tensor, chunk: int = 512
) -> Tensor | None:
    """The physics prior of every pattern of a scan (``(n, N, N)`` complex64, on the CPU).

    Training and inference call this once per scan: a pattern belongs to ~C
    groups, so computing its prior per group member would repeat the work.
    Chunks go to the model's device and back. Returns None when the model
    takes raw diffraction or the cache would exceed `PRIOR_CACHE_LIMIT_BYTES`
    (the prior is then computed per batch inside `network_input`).
    """
    iters = int(model.cfg.prior_iterations or 0)
    n = amplitudes.shape[0]
    if iters == 0 or n * amplitudes.shape[-1] * amplitudes.shape[-2] * 8 > PRIOR_CACHE_LIMIT_BYTES:
        return None
    device = model.prior_amplitude_scale.device
    with torch.no_grad():
        parts = [
            model.prior_estimate(amplitudes[i : i + chunk].to(device)).cpu()
            for i in range(0, n, chunk)
        ]
    return torch.cat(parts)


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
