"""Output heads of the generators: amplitude and phase, plus ``pad_object`` padding.

Owns the amplitude activations selectable by ``ModelConfig.amp_activation``
('sigmoid', 'softplus', 'exp' (clamped), 'relu'), the bounded phase head
``pi * tanh`` and the centring zero-pad used when decoders predict only the
central N/2 x N/2 of each patch.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional as F

from ptychopinn.errors import ConfigError

logger = logging.getLogger(__name__)

AMP_ACTIVATIONS: tuple[str, ...] = ("sigmoid", "softplus", "exp", "relu")
INITIAL_AMPLITUDE = 0.6
"""Amplitude the heads output at initialisation (before any training)."""
EXP_CLAMP = (-20.0, 8.0)
"""Pre-activation range of the 'exp' amplitude (keeps it finite: at most e**8)."""
PHASE_LIMIT = math.pi * (1.0 - 1e-6)
"""Phase bound: strictly inside (-pi, pi) even in float32 when tanh saturates."""
_HEAD_WEIGHT_GAIN = 0.1


def amplitude_activation(name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply the amplitude activation ``name`` to the pre-activation ``x`` (result >= 0)."""
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "softplus":
        return F.softplus(x)
    if name == "exp":
        return torch.exp(x.clamp(*EXP_CLAMP))
    if name == "relu":
        return F.relu(x)
    raise ConfigError(f"model.amp_activation: expected one of {AMP_ACTIVATIONS}; found {name!r}")


def amplitude_bias(name: str, amplitude: float = INITIAL_AMPLITUDE) -> float:
    """Pre-activation value at which activation ``name`` outputs ``amplitude``."""
    if name == "sigmoid":
        return math.log(amplitude / (1.0 - amplitude))
    if name == "softplus":
        return math.log(math.expm1(amplitude))
    if name == "exp":
        return math.log(amplitude)
    if name == "relu":
        return amplitude
    raise ConfigError(f"model.amp_activation: expected one of {AMP_ACTIVATIONS}; found {name!r}")


class AmplitudeHead(nn.Module):
    """3x3 conv to ``out_ch`` channels, then the amplitude activation (output >= 0).

    Initialised with small weights and a bias so the first outputs are close to
    :data:`INITIAL_AMPLITUDE`.
    """

    def __init__(self, in_ch: int, out_ch: int, activation: str = "sigmoid") -> None:
        super().__init__()
        amplitude_bias(activation)  # validates the name early
        self.activation = activation
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.post_init()

    def post_init(self) -> None:
        """Small Kaiming weights and the bias giving :data:`INITIAL_AMPLITUDE`."""
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="linear")
        with torch.no_grad():
            self.conv.weight.mul_(_HEAD_WEIGHT_GAIN)
        nn.init.constant_(self.conv.bias, amplitude_bias(self.activation))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the amplitude, shape (B, out_ch, H, W), >= 0."""
        return amplitude_activation(self.activation, self.conv(x))


class PhaseHead(nn.Module):
    """3x3 conv to ``out_ch`` channels, then ``pi * tanh`` (output strictly in (-pi, pi))."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.post_init()

    def post_init(self) -> None:
        """Small Kaiming weights and zero bias: the first phases are close to 0."""
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="linear")
        with torch.no_grad():
            self.conv.weight.mul_(_HEAD_WEIGHT_GAIN)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the phase in radians, shape (B, out_ch, H, W)."""
        return PHASE_LIMIT * torch.tanh(self.conv(x))


def centre_pad(x: torch.Tensor, n: int) -> torch.Tensor:
    """Zero-pad the last two axes of ``x`` symmetrically to ``n`` x ``n`` (centred)."""
    h, w = x.shape[-2:]
    if (n - h) % 2 or (n - w) % 2 or h > n or w > n:
        raise ValueError(f"centre_pad: cannot centre a {h} x {w} map in {n} x {n}")
    ph, pw = (n - h) // 2, (n - w) // 2
    return F.pad(x, (pw, pw, ph, ph))
