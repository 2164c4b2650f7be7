"""Scans: the validated data model, the NPZ contract and readers of real formats."""

from ptychopinn.data.npz import load_npz, save_npz
from ptychopinn.data.scan import Scan

__all__ = ["Scan", "load_npz", "save_npz"]
