"""ptychopinn: physics-informed neural-network ptychography.

The public API is listed in ``__all__`` (with the sub-packages used as
``pp.metrics.<function>`` and the like); heavy modules (torch, Lightning,
matplotlib) load on first use so that ``import ptychopinn`` and the CLI's
``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ModelConfig": "ptychopinn.config",
    "TrainingConfig": "ptychopinn.config",
    "InferenceConfig": "ptychopinn.config",
    "ExecutionConfig": "ptychopinn.config",
    "load_config": "ptychopinn.config",
    "save_config": "ptychopinn.config",
    "Scan": "ptychopinn.data",
    "load_npz": "ptychopinn.data",
    "save_npz": "ptychopinn.data",
    "load_scan": "ptychopinn.data.readers",
    "SimulationConfig": "ptychopinn.simulation",
    "simulate_scan": "ptychopinn.simulation",
    "group_neighbors": "ptychopinn.grouping",
    "train": "ptychopinn.api",
    "reconstruct": "ptychopinn.api",
    "load_bundle": "ptychopinn.api",
    "simulate": "ptychopinn.api",
    "evaluate": "ptychopinn.metrics",
    "refine": "ptychopinn.refinement",
    "DataError": "ptychopinn.errors",
    "ConfigError": "ptychopinn.errors",
    "BundleError": "ptychopinn.errors",
    "BackendUnavailableError": "ptychopinn.errors",
    "PtychoPINNError": "ptychopinn.errors",
}

# sub-packages the documentation uses as ``pp.<name>.<function>``, imported on first use
_SUBPACKAGES = (
    "config",
    "data",
    "integrations",
    "metrics",
    "pretraining",
    "refinement",
    "simulation",
)

__all__ = ["__version__", *sorted(_LAZY), *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"ptychopinn.{name}")
    raise AttributeError(f"module 'ptychopinn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
