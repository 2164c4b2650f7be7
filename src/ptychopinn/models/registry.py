"""The generator registry: architecture name -> network class.

Owns ``register_generator`` (a class decorator), ``available_generators`` and
``build_generator``, which the training and inference code call with the
``ModelConfig``. The built-in architectures ('cnn', 'unet') register
themselves when their modules are imported; ``build_generator`` imports them.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ptychopinn.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from ptychopinn.config import ModelConfig

logger = logging.getLogger(__name__)

_BUILTIN_MODULES: tuple[str, ...] = ("ptychopinn.models.cnn", "ptychopinn.models.unet")
_REGISTRY: dict[str, type] = {}


def register_generator(name: str) -> Callable[[type], type]:
    """Class decorator registering a generator class under ``name``.

    The class must take the ``ModelConfig`` as its only constructor argument
    and return ``(amplitude, phase)`` from ``forward``.

    Raises
    ------
    ValueError
        If ``name`` is already taken by a different class.
    """

    def decorate(cls: type) -> type:
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise ValueError(
                f"generator name {name!r} is already registered to "
                f"{old.__module__}.{old.__qualname__}"
            )
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def available_generators() -> list[str]:
    """Sorted names of the registered generator architectures."""
    _load_builtins()
    return sorted(_REGISTRY)


def build_generator(model_cfg: ModelConfig | Any) -> nn.Module:
    """Build the generator named by ``model_cfg.architecture``, in train mode.

    Raises
    ------
    ConfigError
        If the architecture is not registered (the message lists those that are).
    """
    _load_builtins()
    name = model_cfg.architecture
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ConfigError(
            f"model.architecture: unknown generator {name!r}; expected one of the registered "
            f"generators: {', '.join(sorted(_REGISTRY))}"
        )
    net = cls(model_cfg)
    n_params = sum(p.numel() for p in net.parameters())
    logger.info("built generator %r: %d parameters", name, n_params)
    return net
