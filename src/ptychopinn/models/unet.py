"""The improved default generator ('unet'): a lean U-Net with a global bottleneck.

Designed for reconstruction quality per CPU-second: a cheap full-resolution
stem, stride-2 convolution stages down to an 8 x 8 bottleneck, a token-mixing
MLP there (every output position sees every input position: the inverse
diffraction map is non-local), then ONE shared decoder (bilinear 2x
up-sampling + convs, additive skip connections from the encoder) feeding an
amplitude head and a phase head. The log brightness of each input pattern
enters the bottleneck as a learnt bias, so the per-sample GroupNorm does not
hide the object's transmission. The input is either the diffraction
amplitudes (C channels) or, with ``prior_iterations > 0``, the physics prior
estimate of each patch (real and imaginary parts, 2C channels; see
`ptychopinn.physics.prior`), which lives in the object's own frame so the
skip connections carry aligned detail. With ``pad_object`` the decoder stops at N/2
and the result is zero-padded to N.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from ptychopinn.errors import ConfigError
from ptychopinn.models.blocks import (
    NORMS,
    SpatialMixer,
    conv_act,
    init_weights,
    stage_filters,
)
from ptychopinn.models.heads import AmplitudeHead, PhaseHead, centre_pad
from ptychopinn.models.registry import register_generator

logger = logging.getLogger(__name__)

BOTTLENECK = 8
"""Spatial size of the bottleneck, whatever N."""
DEFAULT_NORM = "group"
_ENERGY_EPS = 1e-6


def pattern_energy(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Mean squared input per pattern, ``(B, C)``: channel blocks of width C are summed.

    For diffraction input (C channels) this is the pattern's mean count rate;
    for the prior input (re and im blocks) it is the estimate's mean |O|^2.
    """
    b, k, h, w = x.shape
    return x.reshape(b, k // channels, channels, h, w).square().sum(1).mean(dim=(-2, -1))


class _UpBlock(nn.Module):
    """Bilinear 2x up-sampling, conv, optional additive skip, conv."""

    def __init__(self, in_ch: int, out_ch: int, norm: str) -> None:
        super().__init__()
        self.pre = conv_act(in_ch, out_ch, norm=norm)
        self.post = conv_act(out_ch, out_ch, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """Up-sample ``x`` and merge ``skip`` (same size and width as the output)."""
        x = self.pre(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        if skip is not None:
            x = x + skip
        return self.post(x)


@register_generator("unet")
class UNetGenerator(nn.Module):
    """Lean U-Net generator (the default architecture).

    Parameters
    ----------
    model_cfg
        ``ptychopinn.config.ModelConfig``; reads N, gridsize, n_filters_scale,
        amp_activation and pad_object.
    norm
        Normalisation after each conv: 'group' (default), 'batch' or 'none'.
    mixer
        Use the global token-mixing MLP at the 8 x 8 bottleneck.
    skips
        Use additive skip connections from the encoder to the decoder.

    Attributes
    ----------
    bottleneck_size
        Spatial size of the bottleneck (always 8).
    """

    def __init__(
        self,
        model_cfg,  # noqa: ANN001 (ModelConfig)
        *,
        norm: str = DEFAULT_NORM,
        mixer: bool = True,
        skips: bool = True,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ConfigError(f"unet norm: expected one of {NORMS}; found {norm!r}")
        self.N = int(model_cfg.N)
        self.channels = int(model_cfg.gridsize) ** 2
        self.pad_object = bool(model_cfg.pad_object)
        self.use_skips = skips
        self.bottleneck_size = BOTTLENECK
        filters = stage_filters(self.N, float(model_cfg.n_filters_scale), 128, BOTTLENECK)
        stem = max(1, filters[0] // 2)
        self.filters = filters

        self.in_channels = model_cfg.input_channels
        self.stem = conv_act(self.in_channels, stem, norm=norm)
        self.down = nn.ModuleList()
        in_ch = stem
        for w in filters:
            self.down.append(
                nn.Sequential(conv_act(in_ch, w, stride=2, norm=norm), conv_act(w, w, norm=norm))
            )
            in_ch = w
        self.mixer = SpatialMixer(filters[-1], BOTTLENECK) if mixer else nn.Identity()
        # GroupNorm after the bias-free stem removes each pattern's absolute
        # brightness, which carries the object's transmission: feed its log back
        # in at the bottleneck.
        self.energy = nn.Linear(self.channels, filters[-1])

        widths = [stem, *filters[:-1]]  # feature widths at N, N/2, ..., 16
        n_up = len(filters) - (1 if self.pad_object else 0)
        self.up = nn.ModuleList()
        for level in range(len(filters) - 1, len(filters) - 1 - n_up, -1):
            self.up.append(_UpBlock(in_ch, widths[level], norm))
            in_ch = widths[level]
        self.amp_head = AmplitudeHead(in_ch, self.channels, model_cfg.amp_activation)
        self.phase_head = PhaseHead(in_ch, self.channels)
        init_weights(self)
        nn.init.normal_(self.energy.weight, std=0.05)
        nn.init.zeros_(self.energy.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map diffraction amplitudes (B, C, N, N) to (amplitude, phase), each (B, C, N, N)."""
        feats = [self.stem(x)]
        for stage in self.down:
            feats.append(stage(feats[-1]))
        log_energy = torch.log(pattern_energy(x, self.channels) + _ENERGY_EPS)
        h = self.mixer(feats[-1] + self.energy(log_energy)[:, :, None, None])
        for i, block in enumerate(self.up):
            h = block(h, feats[-(i + 2)] if self.use_skips else None)
        amp, phase = self.amp_head(h), self.phase_head(h)
        if self.pad_object:
            amp, phase = centre_pad(amp, self.N), centre_pad(phase, self.N)
        return amp, phase
