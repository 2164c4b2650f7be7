"""Backend dispatch: 'pytorch' (default) or 'tensorflow', validated first.

Each backend module provides ``train(cfg, scan, resume) -> TrainResult``,
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


def get_backend(name: object) -> ModuleType:
    """The implementation module of a backend (validated, framework checked)."""
    backend = validate_backend(name)
    require_framework(backend)
    return importlib.import_module(f"ptychopinn.backends.{backend}_backend")
