"""benchmarks/bench_siemens_prior.py's split of the network's correction: each patch's
amplitude or phase from the network with the other part from its prior, and the
amplitude-alone / phase-alone images the spokes are read from."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_siemens_prior  # noqa: E402

from ptychopinn.config import ModelConfig  # noqa: E402
from ptychopinn.models.pinn import PtychoPINN  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    probe = torch.polar(torch.rand(1, 32, 32) + 0.5, torch.rand(1, 32, 32))
    m = PtychoPINN(ModelConfig(N=32, gridsize=1), probe).eval()
    with torch.no_grad():  # a network whose correction is not the identity
        for p in m.generator.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_parts_combine_network_and_prior(model):
    torch.manual_seed(1)
    prior = torch.polar(torch.rand(3, 1, 32, 32) + 0.5, 2 * torch.rand(3, 1, 32, 32) - 1)
    amps = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        net = model.predict_patches(amps, 1.0, prior)
        amp_part = bench_siemens_prior.PartVariant(model, "amplitude").predict_patches(
            amps, 1.0, prior)
        phase_part = bench_siemens_prior.PartVariant(model, "phase").predict_patches(
            amps, 1.0, prior)
    # the network changes both parts, so each split differs from both of its sources
    assert not torch.allclose(net.abs(), prior.abs(), atol=1e-3)
    assert not torch.allclose(net.angle(), prior.angle(), atol=1e-3)
    torch.testing.assert_close(amp_part.abs(), net.abs())
    torch.testing.assert_close(torch.angle(amp_part * prior.conj()),
                               torch.zeros_like(prior.real), atol=1e-5, rtol=0)
    torch.testing.assert_close(phase_part.abs(), prior.abs())
    torch.testing.assert_close(torch.angle(phase_part * net.conj()),
                               torch.zeros_like(prior.real), atol=1e-5, rtol=0)


def test_part_variant_refuses_an_unknown_part(model):
    with pytest.raises(ValueError, match="'amplitude' or 'phase'.*'modulus'"):
        bench_siemens_prior.PartVariant(model, "modulus")


def test_amplitude_and_phase_alone():
    rng = np.random.default_rng(0)
    amp = rng.uniform(0.2, 1.0, (8, 9))
    phase = rng.uniform(-0.5, 0.5, (8, 9))
    obj = amp * np.exp(1j * (phase + 2.0))  # a global phase of 2 rad on top
    a = bench_siemens_prior.part_of(obj, "amplitude")
    np.testing.assert_allclose(a.real, amp, rtol=1e-6)
    np.testing.assert_array_equal(a.imag, 0)
    p = bench_siemens_prior.part_of(obj, "phase")
    np.testing.assert_allclose(np.abs(p), 1.0, rtol=1e-6)
    # the global phase (that of the object's mean) is removed, the variation is kept
    assert abs(np.angle(np.mean(amp * p))) < 1e-5
    np.testing.assert_allclose(np.angle(p * np.conj(p[0, 0])),
                               np.angle(np.exp(1j * (phase - phase[0, 0]))), atol=1e-6)


def test_mean_amplitude_is_read_in_the_spokes_crop():
    from ptychopinn.metrics.siemens import scanned_crop

    pos = np.array([[y, x] for y in (40.0, 60.0, 80.0) for x in (40.0, 60.0, 80.0)])
    obj = np.full((128, 128), 50.0 + 0j)  # outside the crop: never read
    crop = scanned_crop(obj.shape, pos, 32)
    obj[crop] = 2.0 * np.exp(1j * np.linspace(0, 3, obj[crop].size)).reshape(obj[crop].shape)
    assert bench_siemens_prior.mean_amplitude(obj, pos, 32) == pytest.approx(2.0)
