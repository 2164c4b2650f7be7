"""Probe-specific pretraining: simulated objects through the user's probe.

`pretrain` trains a model once, offline, on a diverse synthetic scan built
for one probe and scan geometry (`build_pretraining_scan`), so unseen scans
reconstruct by plain inference or after a short fine-tuning
(``ptychopinn train --init RUN``). `evaluate_generalisation` scores a
pretrained run on held-out objects.
"""

from ptychopinn.pretraining.dataset import (
    PretrainConfig,
    build_pretraining_scan,
    mean_neighbor_distance,
)
from ptychopinn.pretraining.evaluate import evaluate_generalisation, simulate_heldout_scan
from ptychopinn.pretraining.pretrain import load_probe, pretrain, read_recipe, resolve_source

__all__ = [
    "PretrainConfig",
    "build_pretraining_scan",
    "evaluate_generalisation",
    "load_probe",
    "mean_neighbor_distance",
    "pretrain",
    "read_recipe",
    "resolve_source",
    "simulate_heldout_scan",
]
