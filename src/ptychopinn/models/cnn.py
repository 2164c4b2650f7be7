"""The original PtychoPINN generator ('cnn'), re-implemented from its description.

An encoder of conv-conv-maxpool blocks takes the N x N diffraction amplitudes
to an 8 x 8 bottleneck; two separate decoders (amplitude, phase) of
conv-conv-upsample blocks mirror it back to N x N (or N/2 with ``pad_object``),
each ending in a 3x3 conv to C channels and its head. No skip connections and
no normalisation, as in the original.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ptychopinn.models.blocks import ConvPool, ConvUp, init_weights, stage_filters
from ptychopinn.models.heads import AmplitudeHead, PhaseHead, centre_pad
from ptychopinn.models.registry import register_generator

logger = logging.getLogger(__name__)

BOTTLENECK = 8
"""Spatial size of the encoder output, whatever N."""
LAST_STAGE_FILTERS = 128
"""Filters of the deepest encoder stage (times n_filters_scale); each shallower stage halves."""


def encoder_filters(n: int, scale: float) -> list[int]:
    """Filters of the encoder stages for patch size ``n``: ..., 32, 64, 128 (times ``scale``).

    N=64 gives [32, 64, 128]; every doubling of N prepends a stage with half
    the filters (N=128: [16, 32, 64, 128]); N=32 drops the first ([64, 128]).
    """
    return stage_filters(n, scale, LAST_STAGE_FILTERS, BOTTLENECK)


def _decoder(filters: list[int], n_up: int, out_ch: int) -> tuple[nn.Sequential, int]:
    """Up-sampling blocks mirroring ``filters`` (deepest first); returns (blocks, last width)."""
    widths = filters[::-1][:n_up]
    blocks, in_ch = [], filters[-1]
    for w in widths:
        blocks.append(ConvUp(in_ch, w))
        in_ch = w
    return nn.Sequential(*blocks), in_ch


@register_generator("cnn")
class CNNGenerator(nn.Module):
    """Original PtychoPINN encoder / twin-decoder CNN.

    Parameters
    ----------
    model_cfg
        ``ptychopinn.config.ModelConfig``; reads N, gridsize, n_filters_scale,
        amp_activation and pad_object.

    Attributes
    ----------
    bottleneck_size
        Spatial size of the encoder output (always 8).
    """

    def __init__(self, model_cfg) -> None:  # noqa: ANN001 (ModelConfig, imported lazily)
        super().__init__()
        self.N = int(model_cfg.N)
        self.channels = int(model_cfg.gridsize) ** 2
        self.pad_object = bool(model_cfg.pad_object)
        self.bottleneck_size = BOTTLENECK
        filters = encoder_filters(self.N, float(model_cfg.n_filters_scale))
        self.filters = filters

        enc, in_ch = [], model_cfg.input_channels
        for w in filters:
            enc.append(ConvPool(in_ch, w))
            in_ch = w
        self.encoder = nn.Sequential(*enc)

        n_up = len(filters) - (1 if self.pad_object else 0)
        self.amp_decoder, amp_ch = _decoder(filters, n_up, self.channels)
        self.phase_decoder, phase_ch = _decoder(filters, n_up, self.channels)
        self.amp_head = AmplitudeHead(amp_ch, self.channels, model_cfg.amp_activation)
        self.phase_head = PhaseHead(phase_ch, self.channels)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map diffraction amplitudes (B, C, N, N) to (amplitude, phase), each (B, C, N, N)."""
        z = self.encoder(x)
        amp = self.amp_head(self.amp_decoder(z))
        phase = self.phase_head(self.phase_decoder(z))
        if self.pad_object:
            amp, phase = centre_pad(amp, self.N), centre_pad(phase, self.N)
        return amp, phase
