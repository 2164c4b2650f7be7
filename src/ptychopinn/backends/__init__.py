"""Backend dispatch: 'pytorch' (default) or 'tensorflow', validated first.

Each backend module provides ``train(cfg, scan, *, resume, overwrite) -> TrainResult``,
``load_bundle(path) -> LoadedModel`` and ``reconstruct(loaded, scan, cfg) ->
Reconstruction``. A backend whose framework is missing raises
`BackendUnavailableError` naming the install command; there is no silent
fallback to the other backend.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from ptychopinn.config.schema import BACKENDS
from ptychopinn.errors import BackendUnavailableError

_FRAMEWORK = {"pytorch": "torch", "tensorflow": "tensorflow"}
_INSTALL = {
    "pytorch": "pip install torch  (CPU: pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu)",
    "tensorflow": "pip install 'ptychopinn[tensorflow]'",
}


def validate_backend(name: object) -> str:
    """Return ``name`` if it is a valid backend literal, else raise ValueError."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(repr(b) for b in BACKENDS)}; found {name!r}"
        )
    return name


def require_framework(backend: str) -> None:
    """Raise `BackendUnavailableError` if the backend's framework is not installed."""
    pkg = _FRAMEWORK[validate_backend(backend)]
    if importlib.util.find_spec(pkg) is None:
        raise BackendUnavailableError(
            f"backend {backend!r} needs the '{pkg}' package, which is not installed. "
            f"Install it with: {_INSTALL[backend]}"
        )


def check_execution_options(backend: str, execution, *, training: bool = False) -> None:  # noqa: ANN001
    """Refuse execution options ``backend`` cannot honour (`ConfigError`), before its
    framework loads or any work starts (TensorFlow's import alone takes seconds).

    ``execution`` is an `ExecutionConfig`; ``training`` adds the options only training
    reads (strategy, devices, nodes, logger); inference (either backend) runs on one
    device and refuses several. Whether a GPU is visible is the backend's own check,
    once its framework is loaded.
    """
    from ptychopinn.errors import ConfigError

    ex = execution
    if not training and (ex.strategy != "auto" or ex.num_nodes != 1
                         or ex.devices not in (1, "auto")):
        raise ConfigError(
            "inference runs on one device (the first GPU, or the CPU): execution.strategy "
            f"must be 'auto', devices 1 and num_nodes 1; found strategy={ex.strategy!r}, "
            f"devices={ex.devices!r}, num_nodes={ex.num_nodes} (several devices are for "
            "training; run one infer per scan on each device instead)."
        )
    if validate_backend(backend) != "tensorflow":
        return
    if ex.accelerator == "mps":
        raise ConfigError("execution.accelerator='mps' is not supported by the tensorflow "
                          "backend; use 'cpu', 'gpu' or 'auto' (or backend 'pytorch').")
    if ex.precision not in ("auto", "32-true"):
        raise ConfigError(f"execution.precision={ex.precision!r} is not supported by the "
                          "tensorflow backend; use '32-true' or 'auto' (float32 there), or "
                          "backend 'pytorch'.")
    if not training:
        return
    if ex.strategy != "auto" or ex.num_nodes != 1 or ex.devices not in (1, "auto"):
        raise ConfigError(
            "the tensorflow backend trains on one device: execution.strategy must be 'auto', "
            f"devices 1 and num_nodes 1; found strategy={ex.strategy!r}, devices={ex.devices!r}, "
            f"num_nodes={ex.num_nodes} (use backend 'pytorch' for distributed training)."
        )
    if ex.logger == "mlflow":
        raise ConfigError("execution.logger='mlflow' is not supported by the tensorflow backend; "
                          "use 'csv', 'tensorboard' or 'none'.")


def get_backend(name: object) -> ModuleType:
    """The implementation module of a backend (validated, framework checked)."""
    backend = validate_backend(name)
    require_framework(backend)
    return importlib.import_module(f"ptychopinn.backends.{backend}_backend")
