"""Validated, immutable configuration: model, execution, training, inference."""

from ptychopinn.config.io import (
    build,
    load_config,
    parse_set,
    save_config,
    to_dict,
    with_overrides,
)
from ptychopinn.config.schema import (
    BACKENDS,
    ExecutionConfig,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)

__all__ = [
    "BACKENDS",
    "ExecutionConfig",
    "InferenceConfig",
    "ModelConfig",
    "TrainingConfig",
    "build",
    "load_config",
    "parse_set",
    "save_config",
    "to_dict",
    "with_overrides",
]
