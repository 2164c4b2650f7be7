"""The differentiable physics in TensorFlow, mirroring `ptychopinn.physics` exactly.

Same conventions as the PyTorch physics: a position ``[y, x]`` is the probe
centre; patch pixel ``(i, j)`` samples the object at ``(y - N/2 + i,
x - N/2 + j)`` with bilinear interpolation (the integer window is clamped to
the canvas); `place_patches` is the exact adjoint of `extract_patches`;
``far_field = fftshift(fft2(x, norm="ortho"))``; expected counts are
``sum_m |far_field(probe_m * patch)|^2`` (with ``model.subpixel='probe_shift'``
whole-pixel windows and the probe Fourier-shifted by each pattern's remainder:
`shifted_probe_intensity`); the object_big group consistency
places the C patches on a canvas of size ``N + 2 ceil(max|offset|) + 4``
(centre ``m/2``), divides by the placed support (where it exceeds 1e-3) and
re-extracts. The loss terms match `ptychopinn.physics.losses`.
"""

from __future__ import annotations

import math

import numpy as np

from ptychopinn.tf import tf


def _taps(positions: tf.Tensor, n: int, h, w) -> tuple[tf.Tensor, tf.Tensor]:
    """Flat indices ``(B, K, N+1, N+1)`` into the ``B*H*W`` canvas and fractions ``(B, K, 2)``."""
    pos = tf.cast(positions, tf.float64)
    top = pos - n / 2.0
    i0 = tf.floor(top)
    frac = tf.cast(top - i0, tf.float32)
    i0 = tf.cast(i0, tf.int64)
    h = tf.cast(h, tf.int64)
    w = tf.cast(w, tf.int64)
    ar = tf.range(n + 1, dtype=tf.int64)
    rows = tf.clip_by_value(i0[..., 0:1] + ar, 0, h - 1)  # (B, K, N+1)
    cols = tf.clip_by_value(i0[..., 1:2] + ar, 0, w - 1)
    b = tf.shape(pos, out_type=tf.int64)[0]
    base = tf.reshape(tf.range(b, dtype=tf.int64) * (h * w), (-1, 1, 1, 1))
    index = base + rows[..., :, None] * w + cols[..., None, :]
    return index, frac


def _weights(frac: tf.Tensor, dtype: tf.DType) -> tuple[tf.Tensor, ...]:
    fy = frac[..., 0][..., None, None]
    fx = frac[..., 1][..., None, None]
    ws = ((1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx)
    return tuple(tf.cast(x, dtype) for x in ws)


def extract_patches(obj: tf.Tensor, positions: tf.Tensor, n: int) -> tf.Tensor:
    """``obj (B, H, W)`` and ``positions (B, K, 2)`` -> patches ``(B, K, N, N)`` (obj's dtype)."""
    shape = tf.shape(obj)
    h, w = shape[1], shape[2]
    index, frac = _taps(positions, n, h, w)
    win = tf.gather(tf.reshape(obj, (-1,)), index)  # (B, K, N+1, N+1)
    w00, w01, w10, w11 = _weights(frac, obj.dtype)
    return (
        w00 * win[:, :, :-1, :-1]
        + w01 * win[:, :, :-1, 1:]
        + w10 * win[:, :, 1:, :-1]
        + w11 * win[:, :, 1:, 1:]
    )


def place_patches(patches: tf.Tensor, positions: tf.Tensor, shape) -> tf.Tensor:
    """Adjoint of `extract_patches`: ``patches (B, K, N, N)`` summed into ``(B, H, W)``."""
    n = patches.shape[-1]
    h, w = shape
    index, frac = _taps(positions, n, h, w)
    w00, w01, w10, w11 = _weights(frac, patches.dtype)
    win = (
        tf.pad(w00 * patches, [[0, 0], [0, 0], [0, 1], [0, 1]])
        + tf.pad(w01 * patches, [[0, 0], [0, 0], [0, 1], [1, 0]])
        + tf.pad(w10 * patches, [[0, 0], [0, 0], [1, 0], [0, 1]])
        + tf.pad(w11 * patches, [[0, 0], [0, 0], [1, 0], [1, 0]])
    )
    b = tf.shape(patches, out_type=tf.int64)[0]
    size = b * tf.cast(h, tf.int64) * tf.cast(w, tf.int64)
    flat = tf.math.unsorted_segment_sum(
        tf.reshape(win, (-1,)), tf.reshape(index, (-1,)), size
    )
    return tf.reshape(flat, tf.stack([tf.cast(b, tf.int32), tf.cast(h, tf.int32),
                                      tf.cast(w, tf.int32)]))


def group_consistency(patches: tf.Tensor, offsets_px: tf.Tensor, support: tf.Tensor) -> tf.Tensor:
    """Merge a group's patches ``(B, C, N, N)`` on a shared canvas and re-extract them.

    ``offsets_px (B, C, 2)`` are the members' positions relative to the group
    centre; ``support (N, N)`` weighs where patches are defined.
    """
    n = patches.shape[-1]
    off = tf.cast(offsets_px, tf.float32)
    span = tf.reduce_max(tf.abs(off)) if off.shape.num_elements() != 0 else 0.0
    m = n + 2 * tf.cast(tf.math.ceil(span), tf.int32) + 4
    pos = tf.cast(off, tf.float64) + tf.cast(m, tf.float64) / 2.0
    wgt = tf.broadcast_to(tf.cast(support, tf.float32), tf.shape(patches))
    num = place_patches(patches * tf.cast(wgt, patches.dtype), pos, (m, m))
    den = place_patches(wgt, pos, (m, m))
    merged = num / tf.cast(tf.maximum(den, 1e-3), num.dtype)
    merged = tf.where(den > 1e-3, merged, tf.zeros_like(merged))
    return extract_patches(merged, pos, n)


def far_field(exit_wave: tf.Tensor) -> tf.Tensor:
    """Unitary 2-D FFT over the last two axes with the zero frequency centred."""
    n = tf.cast(tf.shape(exit_wave)[-1] * tf.shape(exit_wave)[-2], tf.float32)
    f = tf.signal.fft2d(exit_wave) / tf.cast(tf.sqrt(n), exit_wave.dtype)
    return tf.signal.fftshift(f, axes=(-2, -1))


def back_propagate(wave: tf.Tensor) -> tf.Tensor:
    """Inverse of `far_field`."""
    n = tf.cast(tf.shape(wave)[-1] * tf.shape(wave)[-2], tf.float32)
    return tf.signal.ifft2d(tf.signal.ifftshift(wave, axes=(-2, -1))) * tf.cast(
        tf.sqrt(n), wave.dtype
    )


def error_reduction(amplitudes: tf.Tensor, probe: tf.Tensor, iterations: int) -> tf.Tensor:
    """Mirror of `ptychopinn.physics.prior.error_reduction` (no gradient)."""
    amps = tf.stop_gradient(tf.cast(amplitudes, tf.float32))
    p = tf.stop_gradient(tf.cast(probe, tf.complex64))
    if len(p.shape) == 2:
        p = p[None]
    power = tf.reduce_sum(tf.math.real(p) ** 2 + tf.math.imag(p) ** 2, axis=0)
    step = tf.math.conj(p) / tf.cast(tf.maximum(tf.reduce_max(power), 1e-30), tf.complex64)
    obj = tf.ones_like(amps, dtype=tf.complex64)
    for _ in range(int(iterations)):
        psi = obj[..., None, :, :] * p
        field = far_field(psi)
        model_amp = tf.sqrt(tf.reduce_sum(tf.math.real(field) ** 2 + tf.math.imag(field) ** 2,
                                          axis=-3))
        ratio = (amps / tf.maximum(model_amp, 1e-6))[..., None, :, :]
        psi_new = back_propagate(field * tf.cast(ratio, tf.complex64))
        obj = obj + tf.reduce_sum(step * (psi_new - psi), axis=-3)
    return obj


def diffracted_intensity(patches: tf.Tensor, probe: tf.Tensor) -> tf.Tensor:
    """Expected counts ``sum_m |far_field(probe_m * patch)|^2``; probe ``(M, N, N)``."""
    field = far_field(patches[..., None, :, :] * probe)
    return tf.reduce_sum(tf.math.real(field) ** 2 + tf.math.imag(field) ** 2, axis=-3)


def shifted_probe_intensity(patches: tf.Tensor, probe: tf.Tensor, frac: tf.Tensor) -> tf.Tensor:
    """Expected counts ``sum_m |far_field(P_m(r - f) * patch)|^2`` of whole-pixel windows
    seen through the probe shifted by each pattern's sub-pixel remainder ``frac (..., 2)``
    (Fourier shift theorem; as `ptychopinn.physics.propagation.shifted_probe_intensity`)."""
    n = probe.shape[-1]
    freq = tf.constant(np.fft.fftfreq(n), tf.float32)
    frac = tf.cast(frac, tf.float32)
    phase_y = (-2.0 * math.pi) * frac[..., 0, None] * freq  # (..., N)
    phase_x = (-2.0 * math.pi) * frac[..., 1, None] * freq
    ramp = tf.exp(tf.complex(0.0, phase_y[..., :, None] + phase_x[..., None, :]))  # (..., N, N)
    probes = tf.signal.ifft2d(tf.signal.fft2d(probe) * ramp[..., None, :, :])  # (..., M, N, N)
    field = far_field(patches[..., None, :, :] * probes)
    return tf.reduce_sum(tf.math.real(field) ** 2 + tf.math.imag(field) ** 2, axis=-3)


def forward_intensity(
    patches: tf.Tensor,
    offsets_px: tf.Tensor | None,
    probe: tf.Tensor,
    support: tf.Tensor,
    object_big: bool,
    frac_px: tf.Tensor | None = None,
) -> tf.Tensor:
    """Expected counts (before the intensity scale) of a batch of groups, ``(B, C, N, N)``.

    ``frac_px (B, C, 2)`` for ``model.subpixel='probe_shift'``: the patches are
    whole-pixel windows and the probe carries each pattern's sub-pixel remainder."""
    if object_big and offsets_px is not None and patches.shape[1] > 1:
        patches = group_consistency(patches, offsets_px, support)
    if frac_px is None:
        return diffracted_intensity(patches, probe)
    return shifted_probe_intensity(patches, probe, frac_px)


# ----------------------------------------------------------------------------- losses
def _masked_mean(x: tf.Tensor, valid: tf.Tensor | None) -> tf.Tensor:
    if valid is None:
        return tf.reduce_mean(x)
    valid = tf.broadcast_to(tf.cast(valid, x.dtype), tf.shape(x))
    return tf.reduce_sum(x * valid) / tf.maximum(tf.reduce_sum(valid), 1.0)


def poisson_nll(
    expected: tf.Tensor, counts: tf.Tensor, valid: tf.Tensor | None = None
) -> tf.Tensor:
    """Poisson deviance ``lam - k log lam - (k - k log k)`` per pixel, over the mean count."""
    lam = tf.maximum(expected, 1e-8)
    dev = lam - counts * tf.math.log(lam) - (counts - tf.math.xlogy(counts, counts))
    norm = tf.maximum(tf.reduce_mean(counts), 1e-8)
    return _masked_mean(dev, valid) / norm


def amplitude_mae(
    expected: tf.Tensor, counts: tf.Tensor, valid: tf.Tensor | None = None
) -> tf.Tensor:
    """Mean ``|sqrt(lam) - sqrt(k)|`` over the mean ``sqrt(k)``."""
    meas = tf.sqrt(counts)
    err = tf.abs(tf.sqrt(tf.maximum(expected, 1e-12)) - meas)
    return _masked_mean(err, valid) / tf.maximum(tf.reduce_mean(meas), 1e-8)


def wrap_phase(phi: tf.Tensor) -> tf.Tensor:
    """Wrap to ``[-pi, pi)``."""
    return tf.math.floormod(phi + math.pi, 2 * math.pi) - math.pi


def realspace_mae(
    amp: tf.Tensor, phase: tf.Tensor, true_patches: tf.Tensor, weight: tf.Tensor | None = None
) -> tf.Tensor:
    """MAE of amplitude plus wrapped phase against the true complex patches."""
    err = tf.abs(amp - tf.abs(true_patches)) + tf.abs(
        wrap_phase(phase - tf.math.angle(true_patches))
    )
    if weight is None:
        return tf.reduce_mean(err)
    weight = tf.broadcast_to(tf.cast(weight, err.dtype), tf.shape(err))
    return tf.reduce_sum(err * weight) / tf.maximum(tf.reduce_sum(weight), 1e-8)
