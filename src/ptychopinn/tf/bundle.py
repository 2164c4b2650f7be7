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
from ptychopinn.config.schema import TrainingConfig
from ptychopinn.errors import BundleError
from ptychopinn.tf import keras, tf
from ptychopinn.tf.model import TFPtychoPINN

log = logging.getLogger(__name__)
BACKEND = "tensorflow"
_READABLE = ("tensorflow", "pytorch")


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
    source = manifest.get("backend")
    if source not in _READABLE:
        raise BundleError(f"{path}: bundle backend {source!r} is unknown; expected one of "
                          f"{_READABLE}.")
    cfg = manifest_config(manifest, path)
    shape = manifest.get("extra", {}).get("probe_shape")
    if not shape:
        raise BundleError(f"{path}: manifest lacks extra.probe_shape.")
    model = TFPtychoPINN(
        cfg.model, np.zeros(shape, dtype=np.complex64),
        probe_trainable=cfg.probe_trainable,
        intensity_scale_trainable=cfg.intensity_scale_trainable,
    )
    model.load_state(state, from_torch=source == "pytorch", where=str(path))
    if source == "pytorch":
        log.info("converted the pytorch bundle %s to the tensorflow backend", path)
    return LoadedModel(model=model, config=cfg, manifest=manifest,
                       path=resolve_bundle_path(path), backend=BACKEND)
