"""Building blocks shared by the generator networks.

Owns the small convolutional pieces (conv + activation blocks, normalisation
choice, down/up sampling, the spatial mixer of the U-Net bottleneck), the
filter-count arithmetic and the weight initialisation used by every generator.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from torch.nn import functional as F

from ptychopinn.errors import ConfigError

logger = logging.getLogger(__name__)

NORMS: tuple[str, ...] = ("none", "group", "batch")


def scaled_filters(base: float, scale: float) -> int:
    """Return ``base * scale`` rounded to an int of at least 1 (a layer width)."""
    return max(1, int(round(base * scale)))


def n_stages_for(n: int, bottleneck: int = 8) -> int:
    """Number of 2x down-sampling stages that take an ``n`` x ``n`` input to ``bottleneck``.

    Raises
    ------
    ConfigError
        If ``n`` is not ``bottleneck`` times a power of two (at least 2).
    """
    ratio = n // bottleneck
    if n % bottleneck or ratio < 2 or ratio & (ratio - 1):
        raise ConfigError(
            f"model.N: the generators need N = {bottleneck} x a power of two (>= {2 * bottleneck}) "
            f"so that the bottleneck is {bottleneck} x {bottleneck}; found N={n}"
        )
    return int(math.log2(ratio))


def stage_filters(n: int, scale: float, deepest: int = 128, bottleneck: int = 8) -> list[int]:
    """Filters of the encoder stages taking ``n`` x ``n`` down to ``bottleneck`` x ``bottleneck``.

    The deepest stage has ``deepest * scale`` filters and each shallower one half
    as many: N=64 gives [32, 64, 128], N=128 [16, 32, 64, 128], N=32 [64, 128].
    """
    stages = n_stages_for(n, bottleneck)
    return [scaled_filters(deepest / 2 ** (stages - 1 - i), scale) for i in range(stages)]


def make_norm(kind: str, channels: int) -> nn.Module:
    """Return a normalisation layer: 'none' (identity), 'group' (GroupNorm) or 'batch'."""
    if kind == "none":
        return nn.Identity()
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ConfigError(f"generator norm: expected one of {NORMS}; found {kind!r}")


def conv_act(
    in_ch: int, out_ch: int, *, stride: int = 1, norm: str = "none", kernel: int = 3
) -> nn.Sequential:
    """One ``kernel`` x ``kernel`` 'same' convolution, optional normalisation, then ReLU."""
    use_bias = norm == "none"
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=use_bias),
        make_norm(norm, out_ch),
        nn.ReLU(inplace=True),
    )


def double_conv(in_ch: int, out_ch: int, *, norm: str = "none") -> nn.Sequential:
    """Two 3x3 conv + ReLU layers (the original PtychoPINN block body)."""
    return nn.Sequential(conv_act(in_ch, out_ch, norm=norm), conv_act(out_ch, out_ch, norm=norm))


class ConvPool(nn.Module):
    """Two 3x3 conv + ReLU, then 2x2 max-pool (halves the spatial size)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = double_conv(in_ch, out_ch)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return self.pool(self.body(x))


class ConvUp(nn.Module):
    """Two 3x3 conv + ReLU, then 2x nearest-neighbour up-sampling (doubles the size)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = double_conv(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        return F.interpolate(self.body(x), scale_factor=2.0, mode="nearest")


class SpatialMixer(nn.Module):
    """Residual token-mixing MLP over the ``size`` x ``size`` positions of a feature map.

    Every output position sees every input position (the inverse diffraction map
    is non-local), with weights shared across channels so it stays small:
    ``x + W2 relu(W1 x)`` along the flattened spatial axis, then a 1x1 channel mix.
    """

    def __init__(self, channels: int, size: int, hidden: int | None = None) -> None:
        super().__init__()
        tokens = size * size
        hidden = hidden or tokens
        self.size = size
        self.norm = nn.GroupNorm(1, channels)
        self.token_in = nn.Linear(tokens, hidden)
        self.token_out = nn.Linear(hidden, tokens)
        self.channel = nn.Conv2d(channels, channels, 1)
        self.post_init()

    def post_init(self) -> None:
        """Start close to an identity mixer (small token branch), after :func:`init_weights`."""
        nn.init.kaiming_normal_(self.token_out.weight, nonlinearity="linear")
        with torch.no_grad():
            self.token_out.weight.mul_(0.1)
        nn.init.zeros_(self.token_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mix across space (residually), then across channels."""
        b, c, h, w = x.shape
        t = self.norm(x).reshape(b, c, h * w)
        t = self.token_out(F.gelu(self.token_in(t))).reshape(b, c, h, w)
        return F.relu(self.channel(x + t))


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal (ReLU gain) weights and zero biases for every conv/linear in ``module``.

    Afterwards every sub-module with a ``post_init()`` method (output heads,
    zero-initialised residual branches) gets to set its own special values.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        post = getattr(m, "post_init", None)
        if m is not module and callable(post):
            post()
