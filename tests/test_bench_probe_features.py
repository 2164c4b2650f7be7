"""benchmarks/bench_probe_features.py's dose signal: the plain scan prior's misfit over its
photon-noise floor."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from bench_probe_features import misfit_over_noise_floor  # noqa: E402


def _scan(photons: float = 1e6, **kw):
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    return simulate_scan(SimulationConfig(N=32, n_positions=36, seed=0, probe_kind="gaussian",
                                          photons_per_pattern=photons, **kw))


def _ratio(scan, passes: int = 1) -> float:
    return misfit_over_noise_floor(torch.from_numpy(scan.diffraction).float(),
                                   scan.positions_px, torch.from_numpy(scan.probe), passes)


def test_misfit_is_zero_without_noise_and_near_one_at_the_noise_floor() -> None:
    """A flat object is the passes' flat start: noiseless counts leave no misfit, Poisson
    counts leave about the noise floor (measured 1.33 at 1e6 photons, 1.41 at 1e4)."""
    flat = dict(amplitude_range=(1.0, 1.0), phase_range_rad=(0.0, 0.0))
    assert _ratio(_scan(poisson_noise=False, **flat)) < 1e-6
    for photons in (1e6, 1e4):
        assert 0.8 < _ratio(_scan(photons=photons, **flat)) < 2.0


def test_misfit_grows_with_the_dose_and_falls_with_passes() -> None:
    """The textured object under a Gaussian beam: 119 times the floor after one pass at
    1e6 photons, 6.6 at 1e4 (measured), and less after more passes."""
    high, low = _scan(photons=1e6), _scan(photons=1e4)
    assert _ratio(high) > 50 and _ratio(low) < 10
    assert _ratio(high, 2) < _ratio(high, 1)


def test_misfit_refuses_bad_input() -> None:
    scan = _scan()
    amps = torch.from_numpy(scan.diffraction).float()
    probe = torch.from_numpy(scan.probe)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="passes must be an integer >= 1"):
            misfit_over_noise_floor(amps, scan.positions_px, probe, bad)
    with pytest.raises(ValueError, match="no counts"):
        misfit_over_noise_floor(torch.zeros_like(amps), scan.positions_px, probe)
