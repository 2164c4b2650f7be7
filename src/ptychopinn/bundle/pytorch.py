"""Save and rebuild PyTorch PINN models as bundles."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ptychopinn.bundle.format import manifest_config, read_bundle, save_bundle
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
    """Rebuild a `PtychoPINN` from a bundle; no other input is needed."""
    from ptychopinn.models.pinn import PtychoPINN

    manifest, state = read_bundle(path)
    backend = manifest.get("backend")
    if backend != "pytorch":
        raise BundleError(
            f"{path}: bundle was written by the {backend!r} backend; load it with "
            f"backend='{backend}' (--backend {backend})."
        )
    cfg = manifest_config(manifest, path)
    shape = manifest.get("extra", {}).get("probe_shape")
    if not shape:
        raise BundleError(f"{path}: manifest lacks extra.probe_shape.")
    model = PtychoPINN(
        cfg.model,
        torch.zeros(*shape, dtype=torch.complex64),
        probe_trainable=cfg.probe_trainable,
        intensity_scale_trainable=cfg.intensity_scale_trainable,
    )
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    if "prior_amplitude_scale" not in tensors and "log_intensity_scale" in tensors:
        # bundles older than the physics prior (prior_iterations 0: the value is unused)
        tensors["prior_amplitude_scale"] = tensors["log_intensity_scale"].reshape(()).exp()
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise BundleError(
            f"{path}: weights do not match the architecture in its config "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})."
        )
    model.eval()
    from ptychopinn.bundle.format import resolve_bundle_path

    return LoadedModel(model=model, config=cfg, manifest=manifest, path=resolve_bundle_path(path))
