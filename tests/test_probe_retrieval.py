"""Probe retrieval before training (`refinement.retrieve_probe`, `probe_refine_epochs`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptychopinn.config import TrainingConfig
from ptychopinn.errors import ConfigError
from ptychopinn.refinement import retrieve_probe


def _probe_error(probe: np.ndarray, truth: np.ndarray) -> float:
    """Relative error after the best complex scale (probe and object share one)."""
    p, t = probe.reshape(-1), truth.reshape(-1)
    c = np.vdot(p, t) / np.vdot(p, p)
    return float(np.linalg.norm(c * p - t) / np.linalg.norm(t))


def _rough_guess(truth: np.ndarray) -> np.ndarray:
    """A blurred, phase-less version of the true probe (a poor model of the focus)."""
    amp = gaussian_filter(np.abs(truth[0]), 2.0)
    return (amp * np.exp(0j)).astype(np.complex64)[None]


def test_retrieval_moves_a_rough_probe_towards_the_truth(small_scan) -> None:
    guess = _rough_guess(small_scan.probe)
    scan = small_scan.replace(probe=guess)
    out = retrieve_probe(scan, 12)
    assert out.probe.shape == small_scan.probe.shape and out.probe.dtype == np.complex64
    before = _probe_error(guess, small_scan.probe)
    after = _probe_error(out.probe, small_scan.probe)
    assert after < 0.6 * before, (before, after)
    assert np.array_equal(out.diffraction, scan.diffraction)  # only the probe changes


def test_retrieval_rejects_too_few_epochs(small_scan) -> None:
    with pytest.raises(ConfigError, match="probe_refine_epochs"):
        retrieve_probe(small_scan, 2)
    with pytest.raises(ValueError, match="probe_refine_epochs"):
        TrainingConfig(probe_refine_epochs=1)
    assert TrainingConfig(probe_refine_epochs=0).probe_refine_epochs == 0


def test_training_uses_the_retrieved_probe(tmp_path, small_scan) -> None:
    from ptychopinn import api
    from ptychopinn.bundle.pytorch import load_pinn

    guess = _rough_guess(small_scan.probe)
    scan = small_scan.replace(probe=guess)
    cfg = TrainingConfig(
        output_dir=str(tmp_path / "run"), model={"N": 32, "n_filters_scale": 0.25}, nepochs=1,
        probe_refine_epochs=8, save_reconstruction=False,
        execution={"accelerator": "cpu", "logger": "none", "progress_bar": False},
    )
    api.train(cfg, scan)
    model_probe = load_pinn(tmp_path / "run").model.physics.probe.numpy()
    assert _probe_error(model_probe, small_scan.probe) < 0.6 * _probe_error(guess, small_scan.probe)


def test_cli_flag_sets_probe_refine_epochs() -> None:
    from ptychopinn.cli.commands import train_config_from_args
    from ptychopinn.cli.main import build_parser

    args = build_parser().parse_args(
        ["train", "--data", "s.npz", "--output-dir", "o", "--probe-refine-epochs", "15"]
    )
    assert train_config_from_args(args).probe_refine_epochs == 15
