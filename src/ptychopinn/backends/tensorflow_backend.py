"""The TensorFlow/Keras backend (``backend='tensorflow'``); TensorFlow loads on import.

Same contract as `ptychopinn.backends.pytorch_backend`: ``train(cfg, scan=None,
*, resume=False, overwrite=False) -> TrainResult``, ``load_bundle(path) -> LoadedModel`` (reads
tensorflow bundles and converts pytorch ones) and ``reconstruct(loaded, scan,
cfg) -> Reconstruction``. The implementation lives in `ptychopinn.tf`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ptychopinn.bundle.pytorch import LoadedModel  # noqa: E402
from ptychopinn.tf.bundle import load_tf as load_bundle  # noqa: E402
from ptychopinn.tf.inference import reconstruct_tensorflow as reconstruct  # noqa: E402
from ptychopinn.tf.training import train_tensorflow as train  # noqa: E402

NAME = "tensorflow"
__all__ = ["NAME", "LoadedModel", "load_bundle", "reconstruct", "train"]
