"""Inference: batched prediction and stitching into the full object."""

from ptychopinn.inference.reconstruct import Reconstruction, write_outputs

__all__ = ["Reconstruction", "write_outputs"]
