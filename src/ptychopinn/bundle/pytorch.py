"""Save and rebuild PyTorch PINN models as bundles."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ptychopinn.bundle.format import manifest_config, read_bundle, save_bundle
from ptychopinn.bundle.validate import (
    architecture_summary,
    check_weights,
    manifest_backend,
    probe_shape,
)
from ptychopinn.config.schema import TrainingConfig
from ptychopinn.errors import BundleError


@dataclass
class LoadedModel:
    """A model rebuilt from a bundle, ready for inference."""

    model: torch.nn.Module  # ptychopinn.models.pinn.PtychoPINN, in eval mode
    config: TrainingConfig
    manifest: dict
    path: Path
    backend: str = "pytorch"

    @property
    def history(self) -> list[dict]:
        return self.manifest.get("history", [])


def save_pinn(
    path: str | os.PathLike,
    model: torch.nn.Module,
    config: TrainingConfig,
    *,
    history: list[dict] | None = None,
    extra: dict | None = None,
) -> Path:
    """Bundle a `PtychoPINN` with its config (backend 'pytorch')."""
    probe = model.probe.detach()
    info = {
        "probe_shape": list(probe.shape),
        "intensity_scale": float(torch.exp(model.log_intensity_scale.detach())),
        "train_input_scale": float(model.train_input_scale),
    }
    info.update(extra or {})
    return save_bundle(
        path,
        model.state_dict(),
        config=config.model_dump(mode="json"),
        backend="pytorch",
        history=history,
        extra=info,
    )


def load_pinn(path: str | os.PathLike) -> LoadedModel:
    """Rebuild a `PtychoPINN` from a bundle; no other input is needed.

    Every stored tensor's name, dtype and shape is checked against the model the
    manifest's config describes before any is loaded (`BundleError` naming them).
    """
    from ptychopinn.bundle.format import resolve_bundle_path

    manifest, state = read_bundle(path)
    backend = manifest_backend(manifest, path)
    if backend != "pytorch":
        raise BundleError(
            f"{path}: bundle was written by the {backend!r} backend; load it with "
            f"backend='{backend}' (--backend {backend})."
        )
    cfg = manifest_config(manifest, path)
    model, tensors = _checked_model(path, manifest, cfg, state)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # all was checked above; kept so nothing escapes raw
        raise BundleError(f"{path}: weights do not fit the architecture in its config "
                          f"({exc}).") from None
    model.eval()
    return LoadedModel(model=model, config=cfg, manifest=manifest, path=resolve_bundle_path(path))


def _checked_model(path: str | os.PathLike, manifest: dict, cfg: TrainingConfig,
                   state: dict[str, np.ndarray]) -> tuple[torch.nn.Module, dict]:
    """The (unloaded) `PtychoPINN` the manifest describes and the bundle's tensors as torch
    tensors, checked against it (`validate.check_weights`)."""
    from ptychopinn.models.pinn import PtychoPINN

    shape = probe_shape(manifest, path, cfg.model.N)
    try:
        model = PtychoPINN(
            cfg.model,
            torch.zeros(*shape, dtype=torch.complex64),
            probe_trainable=cfg.probe_trainable,
            intensity_scale_trainable=cfg.intensity_scale_trainable,
        )
    except (ValueError, RuntimeError, TypeError) as exc:
        raise BundleError(f"{path}: cannot build the model its manifest's config "
                          f"describes ({exc}).") from exc
    expected = {k: (_dtype(v), tuple(v.shape)) for k, v in model.state_dict().items()}
    # bundles older than the physics prior lack its scale (filled in below)
    check_weights(path, expected, state, architecture_summary(cfg),
                  optional=frozenset({"prior_amplitude_scale"}))
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    if "prior_amplitude_scale" not in tensors:
        # prior_iterations was 0 for them: the value is unused
        tensors["prior_amplitude_scale"] = tensors["log_intensity_scale"].reshape(()).exp()
    return model, tensors


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")
