"""Simulated scans: geometry, exact physics, photon budget, kinds, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ptychopinn.data.npz import load_npz
from ptychopinn.errors import ConfigError, DataError
from ptychopinn.simulation import (
    HELD_OUT_IMAGES,
    TEXTURE_POOL,
    SimulationConfig,
    extract_patches,
    simulate_scan,
    simulate_to_file,
)
from ptychopinn.simulation.probes import fit_probe_to_size

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RUN1084 = DATA / "run1084" / "run1084_recon.npz"

SMALL = dict(N=32, n_positions=36)


def _fft_counts(probe: np.ndarray, patch: np.ndarray) -> np.ndarray:
    f = np.fft.fftshift(np.fft.fft2(probe.astype(np.complex128) * patch, norm="ortho"))
    return np.abs(f) ** 2


def test_defaults_shapes_and_dtypes():
    cfg = SimulationConfig()
    assert cfg.N == 64 and cfg.n_positions == 625 and cfg.object_kind == "textured"
    assert 0.6 < cfg.resolved()["linear_overlap"] < 0.8
    scan = simulate_scan(cfg.model_copy(update={"n_positions": 64}))
    assert scan.diffraction.shape == (64, 64, 64) and scan.diffraction.dtype == np.float32
    assert scan.probe.shape == (1, 64, 64) and scan.probe.dtype == np.complex64
    assert scan.object.dtype == np.complex64
    assert scan.positions_px.shape == (64, 2) and scan.positions_px.dtype == np.float64
    assert scan.amplitude_units == "sqrt_counts"
    np.testing.assert_array_equal(scan.scan_index, 0)
    assert scan.metadata["simulation"]["object_kind"] == "textured"
    # amplitude and phase both vary within their ranges
    amp, ph = np.abs(scan.object), np.angle(scan.object)
    assert amp.min() >= 0.5 - 1e-5 and amp.max() <= 1.0 + 1e-5 and amp.std() > 0.05
    assert ph.min() >= -1.0 - 1e-5 and ph.max() <= 1.0 + 1e-5 and ph.std() > 0.1


def test_patches_inside_object_with_margin():
    cfg = SimulationConfig(**SMALL, jitter_px=2.0, object_margin_px=5)
    scan = simulate_scan(cfg)
    n, (h, w) = cfg.N, scan.object.shape
    lo = scan.positions_px - n / 2
    hi = scan.positions_px + n / 2
    assert lo.min() >= 5 - 1e-9
    assert hi[:, 0].max() <= h - 5 + 1e-9 and hi[:, 1].max() <= w - 5 + 1e-9
    assert hi[:, 0].max() > h - 6 and hi[:, 1].max() > w - 6  # no needless canvas


def test_reproducible_by_seed():
    a = simulate_scan(SimulationConfig(**SMALL, seed=3))
    b = simulate_scan(SimulationConfig(**SMALL, seed=3))
    c = simulate_scan(SimulationConfig(**SMALL, seed=4))
    np.testing.assert_array_equal(a.diffraction, b.diffraction)
    np.testing.assert_array_equal(a.object, b.object)
    np.testing.assert_array_equal(a.positions_px, b.positions_px)
    assert not np.array_equal(a.diffraction, c.diffraction)
    assert a.object.shape != c.object.shape or not np.allclose(a.object, c.object)


def test_different_seeds_give_different_objects():
    objs = [simulate_scan(SimulationConfig(**SMALL, seed=s, jitter_px=0)).object for s in (0, 1)]
    assert objs[0].shape == objs[1].shape
    corr = np.corrcoef(np.abs(objs[0]).ravel(), np.abs(objs[1]).ravel())[0, 1]
    assert abs(corr) < 0.5


def test_photon_budget():
    scan = simulate_scan(SimulationConfig(N=32, n_positions=100, photons_per_pattern=1e5))
    per_pattern = scan.counts.astype(np.float64).sum(axis=(1, 2))
    assert abs(per_pattern.mean() / 1e5 - 1) < 0.02
    np.testing.assert_allclose(scan.counts, np.round(scan.counts), atol=1e-2)  # integer counts


def test_noise_free_counts_are_exact_physics():
    cfg = SimulationConfig(**SMALL, jitter_px=0.0, step_px=4.0, poisson_noise=False,
                           photons_per_pattern=1e7)
    scan = simulate_scan(cfg)
    pos = scan.positions_px
    assert np.all(pos == np.round(pos))  # integer positions
    n = cfg.N
    for i in (0, 7, 35):
        y, x = pos[i].astype(int)
        patch = scan.object[y - n // 2 : y + n // 2, x - n // 2 : x + n // 2]
        expected = _fft_counts(scan.probe[0], patch)
        np.testing.assert_allclose(scan.counts[i], expected, rtol=1e-4, atol=1e-6 * expected.max())
    assert abs(scan.counts.astype(np.float64).sum(axis=(1, 2)).mean() / 1e7 - 1) < 1e-4


def test_probe_shift_simulation_is_the_shifted_probe_exit_wave():
    """subpixel='probe_shift' (the default): whole-pixel positions give the bilinear simulator's counts
    exactly; a fractional one gives |F[P(r - f) O(window)]|^2 with P shifted by a
    Fourier ramp, and that differs from the interpolated object's counts."""
    base = dict(SMALL, photons_per_pattern=1e7, poisson_noise=False)
    whole = dict(base, jitter_px=0.0, step_px=4.0)
    a = simulate_scan(SimulationConfig(**whole, subpixel="bilinear"))
    b = simulate_scan(SimulationConfig(**whole, subpixel="probe_shift"))
    np.testing.assert_allclose(b.counts, a.counts, rtol=1e-4, atol=1e-5 * a.counts.max())
    frac = simulate_scan(SimulationConfig(**base, subpixel="probe_shift", jitter_px=0.7))
    lin = simulate_scan(SimulationConfig(**base, subpixel="bilinear", jitter_px=0.7))
    np.testing.assert_array_equal(frac.positions_px, lin.positions_px)
    n = SMALL["N"]
    q = np.fft.fftfreq(n)
    for i in (0, 9, 30):
        top = frac.positions_px[i] - n / 2
        y0, x0 = np.round(top).astype(int)
        fy, fx = top - np.round(top)
        assert abs(fy) + abs(fx) > 0.05  # really fractional
        ramp = np.exp(-2j * np.pi * (fy * q[:, None] + fx * q[None, :]))
        shifted = np.fft.ifft2(np.fft.fft2(frac.probe[0]) * ramp)
        expected = _fft_counts(shifted, frac.object[y0:y0 + n, x0:x0 + n])
        np.testing.assert_allclose(frac.counts[i], expected, rtol=1e-3,
                                   atol=1e-5 * expected.max())
    assert np.abs(frac.counts - lin.counts).max() > 1e-4 * lin.counts.max()
    assert frac.metadata["simulation"]["subpixel"] == "probe_shift"
    assert SimulationConfig().subpixel == "probe_shift"


def test_subpixel_extraction_linear_ramp():
    yy, xx = np.mgrid[0:40, 0:40].astype(np.float64)
    obj = (3.0 * yy + 1j * 2.0 * xx).astype(np.complex64)
    pos = np.array([[20.0, 20.0], [20.5, 20.0], [20.0, 19.5], [17.25, 22.75]])
    p = extract_patches(obj, pos, 16)
    np.testing.assert_array_equal(p[0], obj[12:28, 12:28])
    np.testing.assert_allclose(p[1].real, 3.0 * (yy[12:28, 12:28] + 0.5), rtol=1e-6)
    np.testing.assert_allclose(p[2].imag, 2.0 * (xx[12:28, 12:28] - 0.5), rtol=1e-6)
    np.testing.assert_allclose(p[3].real, 3.0 * (yy[9:25, 15:31] + 0.25), rtol=1e-6)
    np.testing.assert_allclose(p[3].imag, 2.0 * (xx[9:25, 15:31] - 0.25), rtol=1e-6)
    # a patch flush with the far edge is allowed, one beyond it is not
    np.testing.assert_array_equal(extract_patches(obj, np.array([[32.0, 32.0]]), 16)[0],
                                  obj[24:40, 24:40])
    with pytest.raises(DataError, match="inside the object"):
        extract_patches(obj, np.array([[32.5, 20.0]]), 16)


@pytest.mark.parametrize(
    "kw",
    [
        dict(object_kind="lines"),
        dict(object_kind="grf"),
        dict(object_kind="image", object_image=HELD_OUT_IMAGES[0]),
        dict(object_kind="textured", object_image="camera"),
        dict(probe_kind="gaussian"),
        dict(probe_kind="zoneplate"),
        dict(probe_kind="disk", defocus_fresnel_number=None),
        dict(pattern="fermat"),
        dict(pattern="random", jitter_px=0.0),
        dict(photons_per_pattern=None),
        dict(N=64, n_positions=9, probe_diameter_px=20.0, step_px=6.0),
    ],
)
def test_every_kind_works(kw):
    cfg = SimulationConfig(**{**SMALL, **kw})
    scan = simulate_scan(cfg)
    assert scan.n_patterns == cfg.n_positions and scan.patch_size == cfg.N
    assert np.all(np.isfinite(scan.diffraction)) and scan.diffraction.max() > 0
    if cfg.photons_per_pattern is None:
        assert scan.amplitude_units == "arbitrary"
    if cfg.object_kind != "file":
        amp = np.abs(scan.object)
        assert amp.min() >= cfg.amplitude_range[0] - 1e-5
        assert amp.max() <= cfg.amplitude_range[1] + 1e-5
    # the probe is centred on the patch centre
    inten = np.abs(scan.probe[0]) ** 2
    c = np.arange(cfg.N)
    cy = (inten.sum(1) * c).sum() / inten.sum()
    assert abs(cy - cfg.N // 2) < 1.0


def test_held_out_images_not_in_texture_pool():
    assert not set(HELD_OUT_IMAGES) & set(TEXTURE_POOL)


def test_config_validation():
    with pytest.raises(ValidationError, match="N must be one of"):
        SimulationConfig(N=48)
    with pytest.raises(ValidationError):
        SimulationConfig(unknown=1)
    with pytest.raises(ValidationError, match="object_image"):
        SimulationConfig(object_kind="image")
    with pytest.raises(ValidationError, match="object_image"):
        SimulationConfig(object_kind="image", object_image="no_such_picture")
    with pytest.raises(ValidationError, match="probe_file"):
        SimulationConfig(probe_kind="file")
    with pytest.raises(ValidationError):
        SimulationConfig(photons_per_pattern=0.5)
    with pytest.raises(ValidationError):
        SimulationConfig(amplitude_range=(1.0, 0.5))
    cfg = SimulationConfig()
    with pytest.raises(ValidationError):
        cfg.N = 128  # frozen
    assert SimulationConfig(N=128).effective_probe_diameter_px == pytest.approx(51.2)
    assert SimulationConfig(N=128).effective_step_px == pytest.approx(16)


def test_probe_file_fitting(tmp_path, caplog):
    rng = np.random.default_rng(0)
    small = np.zeros((16, 16), np.complex64)
    small[6:10, 6:10] = 1 + 1j
    np.save(tmp_path / "p.npy", small)
    cfg = SimulationConfig(**SMALL, probe_kind="file", probe_file=str(tmp_path / "p.npy"))
    with caplog.at_level("INFO"):
        scan = simulate_scan(cfg)
    assert "zero-padded" in caplog.text
    assert np.count_nonzero(np.abs(scan.probe[0]) > 0) == 16
    wide = (rng.normal(size=(64, 64)) + 1j).astype(np.complex64)
    fitted = fit_probe_to_size(wide, 32)
    assert fitted.shape == (32, 32)
    np.savez(tmp_path / "bad.npz", other=small)
    bad = SimulationConfig(**SMALL, probe_kind="file", probe_file=str(tmp_path / "bad.npz"))
    with pytest.raises(DataError, match="probeGuess"):
        simulate_scan(bad)


def test_object_file_too_small_is_clear(tmp_path):
    np.save(tmp_path / "o.npy", np.ones((40, 40), np.complex64))
    ok = simulate_scan(SimulationConfig(N=32, n_positions=4, step_px=4.0, object_kind="file",
                                        object_file=str(tmp_path / "o.npy")))
    assert ok.object.shape == (40, 40)
    with pytest.raises(ConfigError, match="object_file"):
        simulate_scan(SimulationConfig(**SMALL, object_kind="file",
                                       object_file=str(tmp_path / "o.npy")))


@pytest.mark.realdata
def test_run1084_probe_and_object_load():
    if not RUN1084.is_file():
        pytest.skip(f"real data not found at {RUN1084} (needs ../shared/data next to the repo)")
    cfg = SimulationConfig(N=64, n_positions=49, probe_kind="file", probe_file=str(RUN1084),
                           object_kind="file", object_file=str(RUN1084))
    scan = simulate_scan(cfg)
    with np.load(RUN1084) as f:
        ref = f["probeGuess"]
    assert scan.object.shape == (227, 226)
    # the stored probe is the file's probe times one real scale factor
    ratio = scan.probe[0][np.abs(ref) > 0.1 * np.abs(ref).max()] / ref[np.abs(ref) > 0.1 * np.abs(
        ref).max()]
    assert np.allclose(ratio, ratio[0], rtol=1e-3) and abs(ratio[0].imag) < 1e-3 * abs(ratio[0])


def test_save_load_round_trip(tmp_path):
    cfg = SimulationConfig(**SMALL, seed=2)
    scan = simulate_to_file(cfg, tmp_path / "sim.npz")
    back = load_npz(tmp_path / "sim.npz")
    np.testing.assert_array_equal(back.diffraction, scan.diffraction)
    np.testing.assert_array_equal(back.positions_px, scan.positions_px)
    np.testing.assert_array_equal(back.probe, scan.probe)
    np.testing.assert_array_equal(back.object, scan.object)
    assert back.amplitude_units == "sqrt_counts"
    assert SimulationConfig(**back.metadata["simulation"]) == cfg


def test_default_size_is_fast():
    import time

    t0 = time.perf_counter()
    simulate_scan(SimulationConfig())
    assert time.perf_counter() - t0 < 5


def test_result_does_not_depend_on_threads(monkeypatch):
    import ptychopinn.simulation.simulate as sim

    cfg = SimulationConfig(N=32, n_positions=2100, object_kind="grf")  # 3 chunks
    assert len(sim._chunks(cfg.n_positions, cfg.N)) == 3
    monkeypatch.setattr(sim, "_n_threads", lambda: 1)
    one = simulate_scan(cfg)
    monkeypatch.setattr(sim, "_n_threads", lambda: 3)
    three = simulate_scan(cfg)
    np.testing.assert_array_equal(one.diffraction, three.diffraction)
