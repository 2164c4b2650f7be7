"""Keras generators mirroring the PyTorch ones layer by layer, under the same names.

``build_keras_generator(model_cfg)`` builds the network named by
``model_cfg.architecture`` ('cnn' or 'unet', the keys of the PyTorch registry).
Each network maps diffraction amplitudes ``(B, C, N, N)`` to ``(amplitude,
phase)``, each ``(B, C, N, N)``, and its weights convert to and from the
PyTorch generator's state dict (`ptychopinn.tf.layers.torch_to_keras`).
"""

from __future__ import annotations

import logging

from ptychopinn.errors import ConfigError
from ptychopinn.models.blocks import stage_filters
from ptychopinn.models.cnn import BOTTLENECK, encoder_filters
from ptychopinn.tf import keras, tf
from ptychopinn.tf.layers import (
    Mirror,
    amplitude_activation,
    centre_pad,
    phase_activation,
    to_nchw,
    to_nhwc,
    upsample2,
    upsample2_bilinear,
)

logger = logging.getLogger(__name__)


class KerasCNN(Mirror):
    """Mirror of `ptychopinn.models.cnn.CNNGenerator` (encoder + twin decoders)."""

    def __init__(self, model_cfg) -> None:  # noqa: ANN001 (ModelConfig)
        super().__init__(name="cnn")
        self.N = int(model_cfg.N)
        self.channels = int(model_cfg.gridsize) ** 2
        self.pad_object = bool(model_cfg.pad_object)
        self.activation = str(model_cfg.amp_activation)
        self.bottleneck_size = BOTTLENECK
        filters = encoder_filters(self.N, float(model_cfg.n_filters_scale))
        self.enc = [self.double_conv(f"encoder.{i}.body", w) for i, w in enumerate(filters)]
        n_up = len(filters) - (1 if self.pad_object else 0)
        widths = filters[::-1][:n_up]
        self.amp_dec = [self.double_conv(f"amp_decoder.{i}.body", w) for i, w in enumerate(widths)]
        self.phase_dec = [self.double_conv(f"phase_decoder.{i}.body", w)
                          for i, w in enumerate(widths)]
        self.amp_head = self.conv("amp_head.conv", self.channels)
        self.phase_head = self.conv("phase_head.conv", self.channels)

    def call(self, x, training=False):
        """Amplitudes ``(B, C, N, N)`` -> ``(amplitude, phase)``."""
        z = to_nhwc(x)
        for block in self.enc:
            z = tf.nn.max_pool2d(block(z, training=training), 2, 2, "VALID")
        a, p = z, z
        for block in self.amp_dec:
            a = upsample2(block(a, training=training))
        for block in self.phase_dec:
            p = upsample2(block(p, training=training))
        amp = amplitude_activation(self.activation, self.amp_head(a))
        phase = phase_activation(self.phase_head(p))
        if self.pad_object:
            amp, phase = centre_pad(amp, self.N), centre_pad(phase, self.N)
        return to_nchw(amp), to_nchw(phase)


class KerasUNet(Mirror):
    """Mirror of `ptychopinn.models.unet.UNetGenerator` (stem, stride-2 stages, token
    mixer at the 8 x 8 bottleneck, one bilinear decoder with additive skips, two heads)."""

    def __init__(self, model_cfg, *, norm: str = "group", mixer: bool = True,  # noqa: ANN001
                 skips: bool = True) -> None:
        super().__init__(name="unet")
        self.N = int(model_cfg.N)
        self.channels = int(model_cfg.gridsize) ** 2
        self.pad_object = bool(model_cfg.pad_object)
        self.activation = str(model_cfg.amp_activation)
        self.use_skips = skips
        self.bottleneck_size = BOTTLENECK
        filters = stage_filters(self.N, float(model_cfg.n_filters_scale), 128, BOTTLENECK)
        stem = max(1, filters[0] // 2)
        self.stem = self.conv_act("stem", stem, norm=norm)
        self.down = [keras.Sequential([self.conv_act(f"down.{i}.0", w, stride=2, norm=norm),
                                       self.conv_act(f"down.{i}.1", w, norm=norm)])
                     for i, w in enumerate(filters)]
        self.mix = self.mixer("mixer", filters[-1], BOTTLENECK) if mixer else None
        # mirror of UNetGenerator.energy: log-brightness of each pattern into the bottleneck
        self.energy = self.add("energy", keras.layers.Dense(filters[-1], name="energy"))
        widths = [stem, *filters[:-1]]
        n_up = len(filters) - (1 if self.pad_object else 0)
        levels = range(len(filters) - 1, len(filters) - 1 - n_up, -1)
        self.up = [(self.conv_act(f"up.{k}.pre", widths[lv], norm=norm),
                    self.conv_act(f"up.{k}.post", widths[lv], norm=norm))
                   for k, lv in enumerate(levels)]
        self.amp_head = self.conv("amp_head.conv", self.channels)
        self.phase_head = self.conv("phase_head.conv", self.channels)

    def call(self, x, training=False):
        """Amplitudes ``(B, C, N, N)`` -> ``(amplitude, phase)``."""
        feats = [self.stem(to_nhwc(x), training=training)]
        for stage in self.down:
            feats.append(stage(feats[-1], training=training))
        b, k = tf.shape(x)[0], x.shape[1]
        blocks = tf.reshape(tf.square(x), [b, k // self.channels, self.channels, self.N, self.N])
        log_energy = tf.math.log(
            tf.reduce_mean(tf.reduce_sum(blocks, axis=1), axis=[2, 3]) + 1e-6)
        h = feats[-1] + self.energy(log_energy)[:, None, None, :]
        h = self.mix(h) if self.mix is not None else h
        for i, (pre, post) in enumerate(self.up):
            h = pre(upsample2_bilinear(h), training=training)
            if self.use_skips:
                h = h + feats[-(i + 2)]
            h = post(h, training=training)
        amp = amplitude_activation(self.activation, self.amp_head(h))
        phase = phase_activation(self.phase_head(h))
        if self.pad_object:
            amp, phase = centre_pad(amp, self.N), centre_pad(phase, self.N)
        return to_nchw(amp), to_nchw(phase)


_KERAS_GENERATORS: dict[str, type] = {"cnn": KerasCNN, "unet": KerasUNet}
"""Keras generators by the PyTorch registry's names."""


def available_keras_generators() -> list[str]:
    """Architectures the tensorflow backend implements."""
    return sorted(_KERAS_GENERATORS)


def build_keras_generator(model_cfg) -> Mirror:  # noqa: ANN001 (ModelConfig)
    """Build (and call once, to create the weights) the Keras generator of ``model_cfg``."""
    name = model_cfg.architecture
    cls = _KERAS_GENERATORS.get(name)
    if cls is None:
        raise ConfigError(
            f"model.architecture: the tensorflow backend has no generator {name!r}; expected "
            f"one of {', '.join(available_keras_generators())} (or use backend 'pytorch')."
        )
    net = cls(model_cfg)
    net(tf.zeros((1, model_cfg.input_channels, model_cfg.N, model_cfg.N)))
    logger.info("built keras generator %r: %d parameters", name, net.count_params())
    return net


__all__ = ["KerasCNN", "KerasUNet", "available_keras_generators", "build_keras_generator"]
