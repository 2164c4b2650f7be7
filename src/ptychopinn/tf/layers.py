"""Keras counterparts of `ptychopinn.models.blocks` and `ptychopinn.models.heads`.

Every parameterised Keras layer is created through `Mirror.add` under the
dotted path of the PyTorch module it mirrors (``encoder.0.body.0.0``), so a
PyTorch state dict converts to Keras weights by name (`torch_to_keras`) and
back (`keras_to_torch`): conv kernels OIHW <-> HWIO, linear weights
transposed, norm weight/bias <-> gamma/beta. Networks run channels-last
internally; their inputs and outputs are ``(B, C, N, N)`` like the PyTorch
generators.
"""

from __future__ import annotations

import math

import numpy as np

from ptychopinn.errors import BundleError
from ptychopinn.models.heads import EXP_CLAMP, PHASE_LIMIT
from ptychopinn.tf import keras, tf


class Mirror(keras.Model):
    """A Keras network whose layers are keyed by the mirrored PyTorch module paths."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.torch_paths: dict[str, keras.layers.Layer] = {}

    def add(self, path: str, layer: keras.layers.Layer) -> keras.layers.Layer:
        """Register ``layer`` as the mirror of the PyTorch module at ``path``."""
        if path in self.torch_paths:
            raise ValueError(f"duplicate mirrored path {path!r}")
        self.torch_paths[path] = layer
        return layer

    # ------------------------------------------------------------------ blocks
    def conv(self, path: str, out_ch: int, *, kernel: int = 3, stride: int = 1,
             use_bias: bool = True) -> keras.layers.Layer:
        """A conv with PyTorch's symmetric ``kernel // 2`` zero padding."""
        if stride == 1:
            return self.add(path, keras.layers.Conv2D(out_ch, kernel, padding="same",
                                                      use_bias=use_bias, name=path))
        conv = self.add(path, keras.layers.Conv2D(out_ch, kernel, strides=stride, padding="valid",
                                                  use_bias=use_bias, name=path))
        pad = keras.layers.ZeroPadding2D(kernel // 2)
        return keras.Sequential([pad, conv])

    def norm(self, path: str, kind: str, channels: int):
        """Mirror of `ptychopinn.models.blocks.make_norm` (None for 'none')."""
        if kind == "none":
            return None
        if kind == "group":
            return self.add(path, keras.layers.GroupNormalization(
                groups=math.gcd(channels, 8), axis=-1, epsilon=1e-5, name=path))
        if kind == "batch":
            return self.add(path, keras.layers.BatchNormalization(
                axis=-1, momentum=0.9, epsilon=1e-5, name=path))
        raise ValueError(f"unknown norm {kind!r}")

    def conv_act(self, path: str, out_ch: int, *, stride: int = 1, norm: str = "none",
                 kernel: int = 3) -> ConvAct:
        """Mirror of ``blocks.conv_act`` at ``path`` (a Sequential: conv, norm, ReLU)."""
        conv = self.conv(f"{path}.0", out_ch, kernel=kernel, stride=stride,
                         use_bias=norm == "none")
        return ConvAct(conv, self.norm(f"{path}.1", norm, out_ch))

    def double_conv(self, path: str, out_ch: int, *, norm: str = "none") -> keras.Sequential:
        """Mirror of ``blocks.double_conv``."""
        return keras.Sequential([self.conv_act(f"{path}.0", out_ch, norm=norm),
                                 self.conv_act(f"{path}.1", out_ch, norm=norm)])


    def mixer(self, path: str, channels: int, size: int, hidden: int | None = None) -> SpatialMix:
        """Mirror of ``blocks.SpatialMixer`` at ``path``."""
        tokens = size * size
        return SpatialMix(
            self.add(f"{path}.norm", keras.layers.GroupNormalization(
                groups=1, axis=-1, epsilon=1e-5, name=f"{path}.norm")),
            self.add(f"{path}.token_in", keras.layers.Dense(hidden or tokens,
                                                            name=f"{path}.token_in")),
            self.add(f"{path}.token_out", keras.layers.Dense(tokens, name=f"{path}.token_out")),
            self.add(f"{path}.channel", keras.layers.Conv2D(channels, 1, name=f"{path}.channel")),
        )


class SpatialMix(keras.layers.Layer):
    """Residual token-mixing MLP over the positions, then a 1x1 channel mix (NHWC)."""

    def __init__(self, norm, token_in, token_out, channel) -> None:
        super().__init__()
        self.norm, self.token_in, self.token_out, self.channel = norm, token_in, token_out, channel

    def call(self, x):
        shape = tf.shape(x)
        b, h, w, c = shape[0], shape[1], shape[2], shape[3]
        t = tf.reshape(tf.transpose(self.norm(x), (0, 3, 1, 2)), tf.stack([b, c, h * w]))
        t = self.token_out(tf.nn.gelu(self.token_in(t), approximate=False))
        t = tf.transpose(tf.reshape(t, tf.stack([b, c, h, w])), (0, 2, 3, 1))
        return tf.nn.relu(self.channel(x + t))


class ConvAct(keras.layers.Layer):
    """conv -> optional norm -> ReLU."""

    def __init__(self, conv, norm) -> None:
        super().__init__()
        self.conv_layer, self.norm_layer = conv, norm

    def call(self, x, training=False):
        x = self.conv_layer(x)
        if self.norm_layer is not None:
            x = self.norm_layer(x, training=training)
        return tf.nn.relu(x)


def amplitude_activation(name: str, x: tf.Tensor) -> tf.Tensor:
    """Mirror of ``heads.amplitude_activation``."""
    if name == "sigmoid":
        return tf.sigmoid(x)
    if name == "softplus":
        return tf.nn.softplus(x)
    if name == "exp":
        return tf.exp(tf.clip_by_value(x, *EXP_CLAMP))
    if name == "relu":
        return tf.nn.relu(x)
    raise ValueError(f"unknown amplitude activation {name!r}")


def phase_activation(x: tf.Tensor) -> tf.Tensor:
    """Mirror of ``heads.PhaseHead``'s ``pi * tanh``."""
    return PHASE_LIMIT * tf.tanh(x)


def centre_pad(x: tf.Tensor, n: int) -> tf.Tensor:
    """Zero-pad an NHWC map symmetrically to ``n`` x ``n``."""
    h = x.shape[1]
    p = (n - h) // 2
    return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])


def upsample2(x: tf.Tensor) -> tf.Tensor:
    """2x nearest-neighbour up-sampling (NHWC)."""
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


def upsample2_bilinear(x: tf.Tensor) -> tf.Tensor:
    """2x bilinear up-sampling (NHWC), as ``F.interpolate(..., align_corners=False)``."""
    h, w = x.shape[1], x.shape[2]
    return tf.image.resize(x, (2 * h, 2 * w), method="bilinear", antialias=False)


def to_nhwc(x: tf.Tensor) -> tf.Tensor:
    return tf.transpose(x, (0, 2, 3, 1))


def to_nchw(x: tf.Tensor) -> tf.Tensor:
    return tf.transpose(x, (0, 3, 1, 2))


# ------------------------------------------------------------------ weight conversion
_TORCH_NAMES = {
    "Conv2D": (("weight", "kernel"), ("bias", "bias")),
    "Dense": (("weight", "kernel"), ("bias", "bias")),
    "GroupNormalization": (("weight", "gamma"), ("bias", "beta")),
    "BatchNormalization": (("weight", "gamma"), ("bias", "beta"),
                           ("running_mean", "moving_mean"), ("running_var", "moving_variance")),
}


def _layer_vars(layer: keras.layers.Layer) -> dict[str, object]:
    return {v.path.rsplit("/", 1)[-1]: v for v in layer.weights}


def _to_keras_layout(kind: str, torch_name: str, arr: np.ndarray) -> np.ndarray:
    if torch_name == "weight" and kind == "Conv2D":
        return np.transpose(arr, (2, 3, 1, 0))
    if torch_name == "weight" and kind == "Dense":
        return arr.T
    return arr


def _to_torch_layout(kind: str, torch_name: str, arr: np.ndarray) -> np.ndarray:
    if torch_name == "weight" and kind == "Conv2D":
        return np.transpose(arr, (3, 2, 0, 1))
    if torch_name == "weight" and kind == "Dense":
        return arr.T
    return arr


def keras_state(net: Mirror, prefix: str = "") -> dict[str, np.ndarray]:
    """Keras weights as ``{prefix}{torch_path}.{keras_name}`` numpy arrays (Keras layout)."""
    out = {}
    for path, layer in net.torch_paths.items():
        for name, var in _layer_vars(layer).items():
            out[f"{prefix}{path}.{name}"] = np.asarray(var.numpy())
    return out


def load_keras_state(net: Mirror, state: dict[str, np.ndarray], prefix: str = "",
                     where: str = "bundle") -> None:
    """Assign weights saved by `keras_state`; raises `BundleError` on any mismatch."""
    expected = keras_state(net, prefix)
    given = {k: v for k, v in state.items() if k.startswith(prefix)}
    _check_keys(set(expected), set(given), where)
    for path, layer in net.torch_paths.items():
        for name, var in _layer_vars(layer).items():
            _assign(var, given[f"{prefix}{path}.{name}"], f"{prefix}{path}.{name}", where)


def torch_to_keras(net: Mirror, state: dict[str, np.ndarray], prefix: str = "",
                   where: str = "bundle") -> None:
    """Load a PyTorch generator state dict (``{prefix}{path}.weight`` ...) into ``net``."""
    given = {k: v for k, v in state.items()
             if k.startswith(prefix) and not k.endswith("num_batches_tracked")}
    expected = set()
    for path, layer in net.torch_paths.items():
        names = _TORCH_NAMES[type(layer).__name__]
        kvars = _layer_vars(layer)
        for tname, kname in names:
            if kname in kvars:
                expected.add(f"{prefix}{path}.{tname}")
    _check_keys(expected, set(given), where)
    for path, layer in net.torch_paths.items():
        kind = type(layer).__name__
        kvars = _layer_vars(layer)
        for tname, kname in _TORCH_NAMES[kind]:
            if kname in kvars:
                key = f"{prefix}{path}.{tname}"
                _assign(kvars[kname], _to_keras_layout(kind, tname, np.asarray(given[key])),
                        key, where)


def keras_to_torch(net: Mirror, prefix: str = "") -> dict[str, np.ndarray]:
    """The PyTorch state dict (numpy, PyTorch layout) of the mirrored generator."""
    out = {}
    for path, layer in net.torch_paths.items():
        kind = type(layer).__name__
        kvars = _layer_vars(layer)
        for tname, kname in _TORCH_NAMES[kind]:
            if kname in kvars:
                arr = np.asarray(kvars[kname].numpy())
                out[f"{prefix}{path}.{tname}"] = np.ascontiguousarray(
                    _to_torch_layout(kind, tname, arr))
    return out


def _check_keys(expected: set[str], given: set[str], where: str) -> None:
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise BundleError(
            f"{where}: the generator weights do not match the architecture in its config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})."
        )


def _assign(var, value: np.ndarray, key: str, where: str) -> None:
    if tuple(var.shape) != tuple(value.shape):
        raise BundleError(
            f"{where}: weight {key!r} has shape {tuple(value.shape)}, the architecture "
            f"expects {tuple(var.shape)}."
        )
    var.assign(value.astype(np.float32))
