"""The TensorFlow/Keras implementation behind ``backend='tensorflow'``.

Importing this package imports TensorFlow (quietly, Keras on its TensorFlow
backend); nothing else in ptychopinn imports it, so ``import ptychopinn`` and
the PyTorch backend never load TensorFlow. The framework-neutral parts (data
preparation, grouping, probe preparation, stitching, metrics, the bundle
format) are shared with the PyTorch backend; only the network, the
differentiable physics and the training loop live here.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

if keras.backend.backend() != "tensorflow":  # pragma: no cover - user environment
    raise RuntimeError(
        "the tensorflow backend needs Keras on its TensorFlow backend, but KERAS_BACKEND="
        f"{keras.backend.backend()!r}; unset KERAS_BACKEND or set it to 'tensorflow'."
    )

__all__ = ["keras", "tf"]
