"""The TensorFlow PINN: Keras generator + physics + intensity scale (+ trainable probe).

Mirrors `ptychopinn.models.pinn.PtychoPINN`: the probe is prepared once with
the shared `ptychopinn.physics.probe.prepare_probe` (mask, small probe,
smoothing); the expected counts are ``exp(2 log_s) * sum_m |F(P_m O)|^2``;
inputs are divided by the global input scale before the generator. Its
`state` uses the PyTorch state-dict names for the physical tensors
(``log_intensity_scale``, ``physics.probe`` ...) and ``generator.<torch
path>.<keras name>`` for the network weights.
"""

from __future__ import annotations

import numpy as np

from ptychopinn.config.schema import ModelConfig
from ptychopinn.models.heads import INITIAL_AMPLITUDE
from ptychopinn.tf import physics as tfp
from ptychopinn.tf import tf
from ptychopinn.tf.layers import keras_state, load_keras_state, torch_to_keras
from ptychopinn.tf.networks import build_keras_generator

GEN_PREFIX = "generator."


def _prepared_probe(probe: np.ndarray, cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from ptychopinn.physics.probe import prepare_probe

    prepared, mask = prepare_probe(
        torch.from_numpy(np.asarray(probe, dtype=np.complex64)),
        probe_mask=cfg.probe_mask,
        probe_big=cfg.probe_big,
        smoothing_sigma=cfg.gaussian_smoothing_sigma,
    )
    return prepared.numpy().astype(np.complex64), mask.numpy().astype(np.float32)


def _support(cfg: ModelConfig) -> np.ndarray:
    from ptychopinn.physics.forward import central_support

    return central_support(cfg.N, cfg.pad_object).numpy().astype(np.float32)


class TFPtychoPINN(tf.Module):
    """Generator + physics + intensity scale, in TensorFlow.

    Parameters
    ----------
    model_cfg
        The model section of the configuration.
    probe
        ``(M, N, N)`` complex probe, already normalised (`normalise_probe`).
    probe_trainable, intensity_scale_trainable
        Which physical parameters are learned.
    log_intensity_scale
        Initial natural log of the amplitude scale.
    input_scale
        sqrt(mean counts per pixel) of the training data.
    """

    def __init__(
        self,
        model_cfg: ModelConfig,
        probe: np.ndarray,
        *,
        probe_trainable: bool = False,
        intensity_scale_trainable: bool = True,
        log_intensity_scale: float = 0.0,
        input_scale: float = 1.0,
    ) -> None:
        super().__init__(name="ptychopinn")
        self.cfg = model_cfg
        self.generator = build_keras_generator(model_cfg)
        prepared, mask = _prepared_probe(probe, model_cfg)
        if prepared.ndim == 2:
            prepared = prepared[None]
        self.probe_shape = tuple(prepared.shape)
        self.physics_probe = tf.Variable(prepared, trainable=False, name="physics_probe")
        self.probe_support = tf.Variable(mask, trainable=False, name="probe_support")
        self.support = tf.Variable(_support(model_cfg), trainable=False, name="support")
        self.log_intensity_scale = tf.Variable(
            float(log_intensity_scale), dtype=tf.float32, trainable=intensity_scale_trainable,
            name="log_intensity_scale",
        )
        self.train_input_scale = tf.Variable(float(input_scale), dtype=tf.float32,
                                             trainable=False, name="train_input_scale")
        self.prior_amplitude_scale = tf.Variable(
            float(np.exp(float(log_intensity_scale))), dtype=tf.float32, trainable=False,
            name="prior_amplitude_scale")
        self.probe_trainable = probe_trainable
        self._predictor = None
        self.probe_param = None
        if probe_trainable:
            real_view = np.stack([prepared.real, prepared.imag], axis=-1).astype(np.float32)
            self.probe_param = tf.Variable(real_view, trainable=True, name="probe_param")

    # ------------------------------------------------------------------ parameters
    @property
    def probe(self) -> tf.Tensor:
        """The probe the physics uses (the trainable one if refined)."""
        if self.probe_param is not None:
            return tf.complex(self.probe_param[..., 0], self.probe_param[..., 1])
        return tf.convert_to_tensor(self.physics_probe)

    def variables_to_train(self) -> list:
        """Generator weights, the log intensity scale and the probe, as configured."""
        out = list(self.generator.trainable_variables)
        if self.log_intensity_scale.trainable:
            out.append(self.log_intensity_scale)
        if self.probe_param is not None:
            out.append(self.probe_param)
        return out

    @property
    def intensity_scale(self) -> float:
        return float(np.exp(float(self.log_intensity_scale.numpy())))

    def probe_numpy(self) -> np.ndarray:
        """The current probe as complex64 numpy ``(M, N, N)``."""
        return np.asarray(self.probe.numpy(), dtype=np.complex64)

    def illumination(self) -> np.ndarray:
        """``sum_m |probe_m|^2`` normalised to max 1 (a stitching weight)."""
        p = self.probe_numpy()
        ill = (p.real**2 + p.imag**2).sum(0)
        return (ill / max(float(ill.max()), 1e-12)).astype(np.float32)

    # ------------------------------------------------------------------ graphs
    def resolve_prior(self, amplitudes: tf.Tensor, prior=None):
        """Mirror of `PtychoPINN.resolve_prior`: the batch's complex prior or None.

        ``prior`` is the ``(B, C, N, N)`` physics prior of the patterns
        (`scan_prior` looked up by pattern index, computed by the shared
        physics module); without it only single-pattern priors work.
        """
        if not self.cfg.prior_iterations:
            return None
        if prior is None:
            if self.cfg.prior_scope == "scan":
                raise ValueError(
                    "model.prior_scope is 'scan': each pattern's physics prior is a patch of "
                    "the whole scan's estimate; pass prior= (see scan_prior)")
            if self.cfg.prior_neighbors > 1:
                raise ValueError(
                    f"model.prior_neighbors is {self.cfg.prior_neighbors}: each pattern's "
                    "physics prior needs its scan neighbours; pass prior= (see scan_prior)")
            amps = tf.convert_to_tensor(amplitudes, tf.float32)
            prior = tfp.error_reduction(amps / self.prior_amplitude_scale, self.physics_probe,
                                        int(self.cfg.prior_iterations))
        return tf.convert_to_tensor(prior, tf.complex64)

    def network_input(self, amplitudes: tf.Tensor, input_scale, prior=None) -> tf.Tensor:
        """Mirror of `PtychoPINN.network_input`: scaled amplitudes or the prior (re, im)."""
        prior = self.resolve_prior(amplitudes, prior)
        if prior is None:
            amps = tf.convert_to_tensor(amplitudes, tf.float32)
            return amps / tf.cast(input_scale, tf.float32)
        return tf.concat([tf.math.real(prior), tf.math.imag(prior)], axis=1)

    def scan_prior(self, amplitudes: np.ndarray, positions_px: np.ndarray,
                   valid: np.ndarray | None = None, iterations: int | None = None,
                   frc_filter: bool | None = None, extra_iterations: int = 0,
                   phase_momentum: float = 0.0, converge_passes: int = 0,
                   start_phase: str | None = None,
                   com_correction: bool | None = None, step_scale: float | None = None,
                   settle_passes: int | None = None,
                   amplitude_units: str | None = None, orders: int | None = None,
                   orders_filter: bool | None = None, training: bool = False):
        """The per-pattern physics prior of a scan (`models.scan_prior.ScanPrior`, computed
        by the shared torch physics with this model's probe and scale, dose-normalised
        as in `ScanPrior.for_model`; ``iterations`` and ``frc_filter`` override the
        model's passes and FRC filter, ``extra_iterations``, ``phase_momentum``,
        ``converge_passes`` and
        ``start_phase`` as in `ScanPrior`, ``com_correction``, ``step_scale``, ``settle_passes``,
        ``amplitude_units``, ``orders``, ``orders_filter`` and ``training`` as in
        `ScanPrior.for_config`; training takes none of the extra, momentum and converge
        passes); None without prior."""
        import torch

        from ptychopinn.models.scan_prior import ScanPrior, refuse_training_options

        passes = {"extra_iterations": extra_iterations, "phase_momentum": phase_momentum,
                  "converge_passes": converge_passes}
        if training:  # the defaults (0) are training's own
            refuse_training_options([k for k, v in passes.items() if v])

        return ScanPrior.for_config(
            self.cfg, torch.from_numpy(np.asarray(amplitudes, np.float32)), positions_px,
            torch.from_numpy(self.physics_probe.numpy()),
            prior_amplitude_scale=float(self.prior_amplitude_scale.numpy()),
            train_input_scale=float(self.train_input_scale.numpy()), iterations=iterations,
            frc_filter=frc_filter, start_phase=start_phase,
            com_correction=com_correction, step_scale=step_scale,
            settle_passes=settle_passes, amplitude_units=amplitude_units, orders=orders,
            orders_filter=orders_filter, training=training,
            valid=None if valid is None else torch.from_numpy(np.asarray(valid)),
            **({} if training else passes))

    def predict_amp_phase(self, amplitudes: tf.Tensor, input_scale, training: bool = False,
                          prior=None):
        """Amplitudes ``(B, C, N, N)`` -> ``(amplitude, phase)`` of the patches (with
        ``prior_residual``, the heads correct the prior as in `PtychoPINN`)."""
        prior = self.resolve_prior(amplitudes, prior)
        amp, phase = self.generator(self.network_input(amplitudes, input_scale, prior),
                                    training=training)
        if prior is not None and self.cfg.prior_residual:
            factor = amp * (1.0 / INITIAL_AMPLITUDE)
            if self.cfg.prior_residual_gate:  # as PtychoPINN: keep the prior where dark
                p = tf.convert_to_tensor(self.physics_probe)
                ill = tf.reduce_sum(tf.math.real(p) ** 2 + tf.math.imag(p) ** 2, axis=0)
                g = ill / tf.maximum(tf.reduce_max(ill), 1e-12)
                factor = tf.pow(tf.maximum(factor, 1e-6), g)
                phase = phase * g
            amp = tf.abs(prior) * factor
            phase = phase + tf.math.angle(prior)
        return amp, phase

    def predict_patches(self, amplitudes: tf.Tensor, input_scale, prior=None) -> tf.Tensor:
        """Amplitudes ``(B, C, N, N)`` -> complex patches ``(B, C, N, N)``."""
        amp, phase = self.predict_amp_phase(amplitudes, input_scale, prior=prior)
        return polar(amp, phase)

    def compiled_predictor(self):
        """`predict_patches` as a graph traced once for any batch size (cached)."""
        if self._predictor is None:
            c, n = self.cfg.n_channels, self.cfg.N
            sig = [tf.TensorSpec((None, c, n, n), tf.float32), tf.TensorSpec((), tf.float32)]
            if self.cfg.prior_iterations:
                sig.append(tf.TensorSpec((None, c, n, n), tf.complex64))
            self._predictor = tf.function(self.predict_patches, autograph=False,
                                          input_signature=sig)
        return self._predictor

    def expected_counts(self, patches: tf.Tensor, offsets_px: tf.Tensor | None,
                        frac_px: tf.Tensor | None = None) -> tf.Tensor:
        """Complex patches -> expected counts through the physics and the scale
        (``frac_px``: see `ptychopinn.tf.physics.forward_intensity`)."""
        intensity = tfp.forward_intensity(patches, offsets_px, self.probe, self.support,
                                          self.cfg.object_big, frac_px)
        return intensity * tf.exp(2.0 * self.log_intensity_scale)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray]:
        """All tensors as numpy arrays, keyed like the PyTorch model where shared."""
        out = keras_state(self.generator, GEN_PREFIX)
        out.update(self._physical_state())
        return out

    def _physical_state(self) -> dict[str, np.ndarray]:
        out = {
            "log_intensity_scale": np.asarray(self.log_intensity_scale.numpy(), np.float32),
            "train_input_scale": np.asarray(self.train_input_scale.numpy(), np.float32),
            "prior_amplitude_scale": np.asarray(self.prior_amplitude_scale.numpy(), np.float32),
            "physics.probe": self.physics_probe.numpy(),
            "physics.probe_support": self.probe_support.numpy(),
            "physics.support": self.support.numpy(),
        }
        if self.probe_param is not None:
            out["probe_param"] = self.probe_param.numpy()
        return out

    def load_generator(self, state: dict[str, np.ndarray], *, from_torch: bool = False,
                       where: str = "bundle") -> None:
        """Assign the ``generator.*`` weights of a `state` (or of a PyTorch state dict)."""
        if from_torch:
            torch_to_keras(self.generator, state, GEN_PREFIX, where)
        else:
            load_keras_state(self.generator, state, GEN_PREFIX, where)

    def load_state(self, state: dict[str, np.ndarray], *, from_torch: bool = False,
                   where: str = "bundle") -> None:
        """Assign a `state` (or, ``from_torch``, a PyTorch `PtychoPINN` state dict)."""
        from ptychopinn.errors import BundleError

        self.load_generator(state, from_torch=from_torch, where=where)
        physical = self._physical_state()
        for key, var in (("log_intensity_scale", self.log_intensity_scale),
                         ("train_input_scale", self.train_input_scale),
                         ("prior_amplitude_scale", self.prior_amplitude_scale),
                         ("physics.probe", self.physics_probe),
                         ("physics.probe_support", self.probe_support),
                         ("physics.support", self.support),
                         ("probe_param", self.probe_param)):
            if var is None:
                continue
            if key == "prior_amplitude_scale" and key not in state:
                # older bundles: only used when prior_iterations > 0, which they predate
                var.assign(float(np.exp(float(self.log_intensity_scale.numpy()))))
                continue
            if key not in state:
                raise BundleError(f"{where}: missing tensor {key!r}.")
            value = np.asarray(state[key]).astype(physical[key].dtype)
            if value.size == physical[key].size:  # the format stores scalars as (1,)
                value = value.reshape(physical[key].shape)
            if value.shape != physical[key].shape:
                raise BundleError(f"{where}: tensor {key!r} has shape {value.shape}, expected "
                                  f"{physical[key].shape}.")
            var.assign(value)


def polar(amp: tf.Tensor, phase: tf.Tensor) -> tf.Tensor:
    """``amp * exp(i phase)`` as complex64."""
    amp = tf.cast(amp, tf.float32)
    phase = tf.cast(phase, tf.float32)
    return tf.complex(amp * tf.cos(phase), amp * tf.sin(phase))
