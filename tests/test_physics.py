"""Property tests of the physics: FFT convention, geometry adjointness, forward model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ptychopinn.physics import (
    ForwardModel,
    back_propagate,
    diffracted_intensity,
    extract_patches,
    far_field,
    place_patches,
    poisson_nll,
    stitch,
)


def _crandn(*shape, dtype=torch.complex128):
    return torch.randn(*shape, dtype=dtype)


def test_parseval_ortho():
    x = _crandn(3, 37, 31)
    assert torch.allclose((x.abs() ** 2).sum(), (far_field(x).abs() ** 2).sum())


def test_fft_of_constant_is_centred_delta():
    n = 16
    x = torch.full((n, n), 2.0 + 0j, dtype=torch.complex128)
    f = far_field(x)
    assert abs(f[n // 2, n // 2] - 2.0 * n) < 1e-9  # ortho: sum / N
    f[n // 2, n // 2] = 0
    assert f.abs().max() < 1e-9


def test_back_propagate_inverts():
    x = _crandn(2, 24, 24)
    assert torch.allclose(back_propagate(far_field(x)), x)


def test_matches_numpy_convention():
    x = np.random.default_rng(0).standard_normal((32, 32)) + 1j
    ref = np.fft.fftshift(np.fft.fft2(x, norm="ortho"))
    assert np.allclose(far_field(torch.from_numpy(x)).numpy(), ref)


def test_global_phase_invariance_and_nonnegativity():
    probe = _crandn(2, 20, 20)
    patch = _crandn(5, 20, 20)
    i1 = diffracted_intensity(patch, probe)
    i2 = diffracted_intensity(patch * np.exp(1j * 0.7), probe)
    assert torch.allclose(i1, i2)
    assert (i1 >= 0).all()
    # incoherent sum over modes
    assert torch.allclose(
        i1, diffracted_intensity(patch, probe[:1]) + diffracted_intensity(patch, probe[1:])
    )


def test_extract_integer_positions_match_slicing():
    obj = _crandn(41, 37)
    pos = torch.tensor([[10.0, 12.0], [25.0, 20.0]], dtype=torch.float64)
    p = extract_patches(obj, pos, 8)
    assert torch.equal(p[0], obj[6:14, 8:16])
    assert torch.equal(p[1], obj[21:29, 16:24])


def test_extract_half_pixel_is_average():
    obj = torch.arange(20 * 20, dtype=torch.float64).view(20, 20)
    p = extract_patches(obj, torch.tensor([[10.5, 10.0]], dtype=torch.float64), 4)
    assert torch.allclose(p[0], 0.5 * (obj[8:12, 8:12] + obj[9:13, 8:12]))


@pytest.mark.parametrize("n", [7, 12])
def test_extract_place_adjoint(n):
    gen = torch.Generator().manual_seed(1)
    obj = torch.randn(2, 37, 31, dtype=torch.complex128, generator=gen)
    pos = (
        torch.rand(2, 6, 2, dtype=torch.float64, generator=gen)
        * torch.tensor([37.0 - n - 2, 31.0 - n - 2])
        + n / 2
        + 1
    )
    y = torch.randn(2, 6, n, n, dtype=torch.complex128, generator=gen)
    lhs = (extract_patches(obj, pos, n) * y.conj()).sum()
    rhs = (obj * place_patches(y, pos, (37, 31)).conj()).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("n", [7, 12])
def test_whole_pixel_windows_take_the_shortcut_with_the_bilinear_result(n):
    from ptychopinn.physics.geometry import accumulate_patches, window_taps

    gen = torch.Generator().manual_seed(2)
    obj = torch.randn(2, 37, 31, dtype=torch.complex128, generator=gen)
    # whole-pixel windows: position - n/2 an integer; two run off the canvas (clamped)
    corner = torch.randint(-2, 24, (2, 6, 2), generator=gen).to(torch.float64)
    pos = corner + n / 2
    taps = window_taps(pos, n, (37, 31), torch.float64)
    assert taps.weights is None and taps.index.shape == (2, 6, n, n)
    # the same positions wanting a gradient take the bilinear taps (fractions 0)
    bil = pos.clone().requires_grad_(True)
    assert window_taps(bil, n, (37, 31), torch.float64).weights is not None
    assert window_taps(pos + 0.25, n, (37, 31), torch.float64).weights is not None
    assert torch.equal(extract_patches(obj, pos, n), extract_patches(obj, bil, n).detach())
    y = torch.randn(2, 6, n, n, dtype=torch.complex128, generator=gen)
    assert torch.allclose(place_patches(y, pos, (37, 31)),
                          place_patches(y, bil, (37, 31)).detach(), rtol=0, atol=1e-12)
    # and the adjoint identity holds on the shortcut too
    lhs = (extract_patches(obj, pos, n) * y.conj()).sum()
    rhs = (obj * place_patches(y, pos, (37, 31)).conj()).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-10)
    canvas = torch.zeros(37, 31, dtype=torch.complex128)
    accumulate_patches(canvas, y[0], pos[0])
    assert torch.allclose(canvas, place_patches(y[0], bil[0], (37, 31)).detach(), atol=1e-12)


def test_stitch_reproduces_object_where_covered():
    obj = _crandn(40, 44)
    ys, xs = np.meshgrid(np.arange(10, 31, 3.3), np.arange(10, 35, 3.7), indexing="ij")
    pos = torch.from_numpy(np.stack([ys.ravel(), xs.ravel()], 1))
    patches = extract_patches(obj, pos, 12)
    # bilinear interpolation smooths, so compare at integer positions
    posi = torch.round(pos)
    out, w = stitch(extract_patches(obj, posi, 12), posi, (40, 44))
    covered = w > 0
    assert torch.allclose(out[covered], obj[covered])
    assert patches.shape == (pos.shape[0], 12, 12)


def test_gradcheck_extract_and_forward():
    obj = torch.randn(1, 10, 11, dtype=torch.complex128, requires_grad=True)
    pos = torch.tensor([[[5.3, 5.6], [4.9, 6.2]]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda o: extract_patches(o, pos, 4), (obj,))
    probe = torch.randn(1, 4, 4, dtype=torch.complex128)
    patch = torch.randn(2, 4, 4, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: diffracted_intensity(p, probe), (patch,))


def test_group_consistency_keeps_consistent_patches():
    """Patches cut from one object at integer offsets are unchanged by the merge."""
    n = 16
    fm = ForwardModel(torch.ones(n, n, dtype=torch.complex64), object_big=True)
    obj = _crandn(60, 60, dtype=torch.complex64)
    offs = torch.tensor([[[-3.0, -2.0], [3.0, 2.0], [-3.0, 2.0], [3.0, -2.0]]])
    centre = torch.tensor([30.0, 30.0])
    patches = extract_patches(obj, (offs[0] + centre), n)[None]
    merged = fm.group_consistency(patches, offs)
    assert torch.allclose(merged, patches, atol=1e-5)


def test_group_consistency_averages_inconsistent_patches():
    n = 16
    fm = ForwardModel(torch.ones(n, n, dtype=torch.complex64), object_big=True)
    offs = torch.tensor([[[0.0, -2.0], [0.0, 2.0]]])
    patches = torch.stack([torch.ones(n, n), 3 * torch.ones(n, n)]).to(torch.complex64)[None]
    merged = fm.group_consistency(patches, offs)
    # in the overlap both become the mean 2
    assert torch.allclose(merged[0, 0, :, 6:10].real, torch.full((n, 4), 2.0), atol=1e-5)


def test_forward_model_buffers_only():
    fm = ForwardModel(torch.ones(1, 8, 8, dtype=torch.complex64))
    assert len(list(fm.parameters())) == 0
    assert "probe" in fm.state_dict()
    with pytest.raises(ValueError, match="complex"):
        ForwardModel(torch.ones(8, 8))


def test_poisson_nll_minimum_at_truth():
    gen = torch.Generator().manual_seed(0)
    lam = torch.rand(4, 16, 16, generator=gen) * 50 + 1
    k = torch.poisson(lam, generator=gen)
    at_k = poisson_nll(k.clamp_min(1e-6), k)
    assert at_k.abs() < 1e-3  # deviance form is ~0 at a perfect fit
    assert poisson_nll(lam * 1.5, k) > poisson_nll(lam, k) > at_k


def test_intensity_of_known_probe_and_object_sums_to_power():
    probe = torch.ones(1, 8, 8, dtype=torch.complex64) * 2
    patch = torch.full((1, 8, 8), 0.5 + 0j, dtype=torch.complex64)
    inten = diffracted_intensity(patch, probe)
    assert math.isclose(float(inten.sum()), 64 * 1.0, rel_tol=1e-5)


def test_probe_shift_forward_model_is_the_simulators_physics():
    """model.subpixel='probe_shift': the true object's whole-pixel windows, merged as a
    group at whole-pixel offsets and seen through the probe shifted by each pattern's
    remainder, give the simulator's counts exactly (nothing is interpolated)."""
    from ptychopinn.physics.geometry import whole_pixel_windows
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    sc = simulate_scan(SimulationConfig(N=32, n_positions=36, photons_per_pattern=1e6,
                                        poisson_noise=False, jitter_px=0.7, seed=1))
    pos = torch.from_numpy(sc.positions_px)
    centres, frac = whole_pixel_windows(pos, 32)
    assert float(frac.abs().max()) <= 0.5 and float(frac.abs().max()) > 0.2
    assert torch.equal(centres, torch.round(centres - 16) + 16)  # whole-pixel windows
    windows = extract_patches(torch.from_numpy(sc.object), centres, 32).to(torch.complex64)
    fm = ForwardModel(torch.from_numpy(sc.probe), object_big=True)
    group = torch.tensor([[0, 1, 6, 7], [14, 15, 20, 21]])  # raster neighbours
    offs = (centres[group] - centres[group][:, :1]).to(torch.float32)
    counts = fm(windows[group], offs, frac_px=frac[group].to(torch.float32))
    want = torch.from_numpy(sc.counts)[group]
    torch.testing.assert_close(counts, want, rtol=1e-3, atol=1e-4 * float(want.max()))
    bilinear = fm(extract_patches(torch.from_numpy(sc.object), pos, 32).to(torch.complex64)
                  [group], offs)
    assert float((bilinear - want).abs().max()) > 1e-3 * float(want.max())


def test_probe_options_mask_small_probe_and_smoothing():
    """The model's probe options (`physics.probe.prepare_probe`): ``probe_mask`` keeps
    the disk of diameter N, ``probe_big=False`` the disk of diameter N/2, and
    ``smoothing_sigma`` low-passes the probe without changing its mean."""
    from ptychopinn.physics.probe import prepare_probe

    n = 32
    rng = np.random.default_rng(0)
    p = torch.from_numpy((rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
                         .astype(np.complex64))
    same, mask = prepare_probe(p)
    assert same.shape == (1, n, n) and torch.equal(same[0], p) and bool(torch.all(mask == 1))
    c = (n - 1) / 2
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - c, xx - c)
    for kw, radius in (({"probe_mask": True}, n / 2), ({"probe_big": False}, n / 4)):
        out = prepare_probe(p, **kw)[0][0].numpy()
        assert np.all(out[r > radius + 1.5] == 0), kw
        np.testing.assert_array_equal(out[r < radius - 1.5], p.numpy()[r < radius - 1.5])
    smooth = prepare_probe(p, smoothing_sigma=2.0)[0][0]
    f0, f1 = torch.fft.fft2(p), torch.fft.fft2(smooth)
    assert torch.allclose(f1[0, 0], f0[0, 0], rtol=1e-4)  # the mean is kept
    high = f0[n // 4: 3 * n // 4, n // 4: 3 * n // 4].abs().sum()
    assert f1[n // 4: 3 * n // 4, n // 4: 3 * n // 4].abs().sum() < 1e-3 * high
