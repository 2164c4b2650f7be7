"""Save and rebuild TensorFlow PINN models as bundles (backend 'tensorflow').

The bundle is the package's one format (`ptychopinn.bundle.format`): a single
safetensors file whose manifest records ``backend: tensorflow``. Generator
weights are stored in Keras layout under ``generator.<torch path>.<keras
name>``; the physical tensors keep the PyTorch names. `load_tf` also reads a
PyTorch bundle and converts its weights (OIHW -> HWIO, linear transposed,
norm weight/bias -> gamma/beta), since the Keras networks mirror the PyTorch
ones layer by layer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ptychopinn.bundle.format import (
    manifest_config,
    read_bundle,
    resolve_bundle_path,
    save_bundle,
)
from ptychopinn.bundle.pytorch import LoadedModel
from ptychopinn.bundle.validate import (
    architecture_summary,
    check_weights,
    manifest_backend,
    probe_shape,
)
from ptychopinn.config.schema import TrainingConfig
from ptychopinn.errors import BundleError
from ptychopinn.tf import keras, tf
from ptychopinn.tf.model import TFPtychoPINN

log = logging.getLogger(__name__)
BACKEND = "tensorflow"


def save_tf(path: str | os.PathLike, model: TFPtychoPINN, config: TrainingConfig, *,
            history: list[dict] | None = None, extra: dict | None = None) -> Path:
    """Bundle a `TFPtychoPINN` with its config; returns the bundle path."""
    info = {
        "probe_shape": list(model.probe_shape),
        "intensity_scale": model.intensity_scale,
        "train_input_scale": float(model.train_input_scale.numpy()),
        "weights_layout": "keras",
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    info.update(extra or {})
    return save_bundle(path, model.state(), config=config.model_dump(mode="json"),
                       backend=BACKEND, history=history, extra=info)


def load_tf(path: str | os.PathLike) -> LoadedModel:
    """Rebuild a `TFPtychoPINN` from a tensorflow bundle, or convert a pytorch one.

    Returns a `LoadedModel` with ``backend == 'tensorflow'``.
    """
    manifest, state = read_bundle(path)
    source = manifest_backend(manifest, path)
    cfg = manifest_config(manifest, path)
    shape = probe_shape(manifest, path, cfg.model.N)
    try:
        model = TFPtychoPINN(
            cfg.model, np.zeros(shape, dtype=np.complex64),
            probe_trainable=cfg.probe_trainable,
            intensity_scale_trainable=cfg.intensity_scale_trainable,
        )
    except BundleError:
        raise
    except (ValueError, RuntimeError, TypeError) as exc:
        raise BundleError(f"{path}: cannot build the model its manifest's config "
                          f"describes ({exc}).") from exc
    check_weights(path, _expected(model, from_torch=source == "pytorch"), state,
                  architecture_summary(cfg), optional=frozenset({"prior_amplitude_scale"}),
                  ignored_suffix="num_batches_tracked" if source == "pytorch" else None)
    try:
        model.load_state(state, from_torch=source == "pytorch", where=str(path))
    except BundleError:
        raise
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as exc:
        # all was checked above; kept so nothing escapes raw
        raise BundleError(f"{path}: the weights do not match the architecture its manifest's "
                          f"config describes ({type(exc).__name__}: {exc}).") from None
    if source == "pytorch":
        log.info("converted the pytorch bundle %s to the tensorflow backend", path)
    return LoadedModel(model=model, config=cfg, manifest=manifest,
                       path=resolve_bundle_path(path), backend=BACKEND)


def _expected(model: TFPtychoPINN, *, from_torch: bool) -> dict[str, tuple[str, tuple]]:
    """``{name: (dtype, shape)}`` of the tensors a bundle for ``model`` holds: Keras layout,
    or ``from_torch`` the PyTorch names and layout of the mirrored generator (BatchNorm's
    ``num_batches_tracked`` aside, which the conversion does not use)."""
    from ptychopinn.tf.layers import keras_to_torch
    from ptychopinn.tf.model import GEN_PREFIX

    if from_torch:
        state = keras_to_torch(model.generator, GEN_PREFIX)
        state.update({k: v for k, v in model.state().items() if not k.startswith(GEN_PREFIX)})
    else:
        state = model.state()
    return {k: (str(np.asarray(v).dtype), tuple(np.shape(v))) for k, v in state.items()}
