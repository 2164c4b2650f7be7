"""The PyTorch + Lightning backend."""

from __future__ import annotations

from ptychopinn.bundle.pytorch import LoadedModel
from ptychopinn.bundle.pytorch import load_pinn as load_bundle
from ptychopinn.inference.reconstruct import reconstruct_pytorch as reconstruct
from ptychopinn.training.runner import train_pytorch as train

NAME = "pytorch"
__all__ = ["NAME", "LoadedModel", "load_bundle", "reconstruct", "train"]
