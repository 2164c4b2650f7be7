"""Shared fixtures: seeded generators, the real-data folder, small simulated scans."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real data folder {SHARED_DATA} is absent (it is only in developer/CI checkouts)"
        )
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch

        torch.manual_seed(0)
    except ModuleNotFoundError:  # pragma: no cover
        pass
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny tensors (more threads only cost, and
    spin on a busy machine); use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_scan():
    """A small noisy simulated scan (N=32, 144 positions) with its true object."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    return simulate_scan(SimulationConfig(N=32, n_positions=144, photons_per_pattern=1e5, seed=3))
