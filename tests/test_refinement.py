"""Tests of the physics refinement (`ptychopinn.refinement`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.errors import ConfigError, DataError
from ptychopinn.metrics import evaluate
from ptychopinn.refinement import RefineResult, refine, refine_reconstruction
from ptychopinn.refinement.schedule import PlateauSchedule
from ptychopinn.refinement.steps import batch_objective
from ptychopinn.simulation import SimulationConfig, simulate_scan

N = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scan():
    return simulate_scan(SimulationConfig(N=N, n_positions=144, photons_per_pattern=1e5, seed=3))


@pytest.fixture(scope="module")
def tiny_scan():
    """49 positions, noise-free counts on the sqrt_counts scale."""
    return simulate_scan(
        SimulationConfig(N=N, n_positions=49, photons_per_pattern=1e6, poisson_noise=False, seed=5)
    )


def _ssim(obj: np.ndarray, scan) -> tuple[float, float]:
    m = evaluate(obj, scan.object, positions_px=scan.positions_px, patch_size=N)
    return m["amp_ssim"], m["phase_ssim"]


def test_flat_start_loss_decreases_and_ssim_improves(scan):
    flat = np.ones_like(scan.object)
    amp0, _ = _ssim(flat * np.exp(0.01j * np.arange(flat.shape[1]))[None], scan)
    res = refine(scan, None, epochs=10, batch_size=32, progress=False)
    assert isinstance(res, RefineResult)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == 10
    assert losses[-1] < 0.3 * losses[0]
    rises = sum(b > a * 1.01 for a, b in zip(losses[:-1], losses[1:], strict=True))
    assert rises <= 1  # monotonic-ish
    amp, phase = _ssim(res.object, scan)
    assert amp0 < 0.2
    assert amp > 0.88 and phase > 0.85
    assert res.object.dtype == np.complex64 and res.object.shape == scan.object.shape
    assert res.history[-1]["seconds"] <= res.seconds + 1e-9
    np.testing.assert_allclose(res.positions_px, scan.positions_px, atol=1e-4)


def test_true_object_stays_and_scale_is_one(scan):
    res = refine(scan, scan.object, epochs=3, batch_size=32, progress=False)
    assert res.intensity_scale == pytest.approx(1.0, rel=0.01)
    amp, phase = _ssim(res.object, scan)
    assert amp > 0.97 and phase > 0.98


def test_arbitrary_scale_and_phase_of_a_network_guess_are_handled(scan):
    guess = scan.object * 3.0 * np.exp(0.7j)
    res = refine(scan, guess, epochs=2, batch_size=32, progress=False)
    assert res.intensity_scale == pytest.approx(1 / 9.0, rel=0.01)
    ratio = np.median(np.abs(res.object) / np.abs(scan.object))
    assert ratio == pytest.approx(1.0, rel=0.03)
    assert _ssim(res.object, scan)[0] > 0.97


def test_explicit_intensity_scale_is_used(scan):
    res = refine(scan, scan.object * 2.0, epochs=0, intensity_scale=0.25, progress=False)
    np.testing.assert_allclose(np.abs(res.object), np.abs(scan.object), rtol=1e-5, atol=1e-6)
    assert res.history == []


def test_seeded_runs_are_identical_and_seeds_differ(tiny_scan):
    a = refine(tiny_scan, None, epochs=2, batch_size=8, seed=1, progress=False)
    b = refine(tiny_scan, None, epochs=2, batch_size=8, seed=1, progress=False)
    c = refine(tiny_scan, None, epochs=2, batch_size=8, seed=2, progress=False)
    np.testing.assert_array_equal(a.object, b.object)
    assert not np.array_equal(a.object, c.object)


@pytest.mark.parametrize("subpixel", ["bilinear", "probe_shift"])
def test_position_gradient_matches_central_differences(subpixel):
    rng = np.random.default_rng(0)
    n, h = 16, 40
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(rng.standard_normal((h, h)), 3) + 1j * gaussian_filter(
        rng.standard_normal((h, h)), 3
    )
    obj = torch.tensor(1.0 + 3.0 * smooth, dtype=torch.complex128)
    yy, xx = np.mgrid[:n, :n] - n / 2
    probe = torch.tensor(np.exp(-(yy**2 + xx**2) / 20.0 + 0.05j * xx)[None] * 5.0)
    pos0 = np.array([[15.3, 17.6], [20.45, 19.2], [24.7, 22.35]])
    counts = torch.tensor(rng.poisson(30.0, (3, n, n)), dtype=torch.float64)
    for fit in ("poisson", "amplitude"):
        pos = torch.tensor(pos0, requires_grad=True)
        loss, _, _ = batch_objective(obj, probe, pos, counts, fit=fit, subpixel=subpixel)
        loss.backward()
        eps = 1e-5
        fd = np.zeros_like(pos0)
        for i in range(3):
            for k in range(2):
                for sgn in (1, -1):
                    p = pos0.copy()
                    p[i, k] += sgn * eps
                    val, _, _ = batch_objective(obj, probe, torch.tensor(p), counts, fit=fit,
                                                subpixel=subpixel)
                    fd[i, k] += sgn * float(val) / (2 * eps)
        np.testing.assert_allclose(pos.grad.numpy(), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
        assert np.abs(fd).min() > 0  # a real signal, not zeros on both sides


@pytest.mark.parametrize("method,lr", [("adam", 0.3), ("gauss_newton", 2.0)])
def test_position_refinement_recovers_known_errors(tiny_scan, method, lr):
    truth = tiny_scan.positions_px
    start = truth.copy()
    moved = [10, 24, 31]
    start[moved] += np.array([[1.5, -1.0], [-1.2, 1.6], [0.8, 1.4]])
    res = refine(
        tiny_scan, tiny_scan.object, positions_px=start, epochs=15, batch_size=8,
        refine_positions=True, position_method=method, position_learning_rate=lr,
        progress=False,
    )
    err0 = np.linalg.norm(start - truth, axis=1)
    d = res.positions_px - truth
    d -= d.mean(0)  # a common shift is not observable
    err = np.linalg.norm(d, axis=1)
    assert np.all(err[moved] < 0.15 * err0[moved]), (err0[moved], err[moved])
    others = np.delete(err, moved)
    assert np.median(others) < 0.15 and others.max() < 0.4
    assert res.history[-1]["position_rms_px"] > 0.3


def _linear_fit(base: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The 2 x 2 map that best explains ``d`` (mean removed) from the centred ``base``."""
    x = base - base.mean(0)
    return np.linalg.lstsq(x, d - d.mean(0), rcond=None)[0]


def test_position_corrections_lose_their_global_linear_part():
    """A global scale / rotation / shear of the corrections is removed after each
    epoch (it drifts with the probe), the local corrections and nothing else stay;
    ``keep_linear`` keeps it."""
    from ptychopinn.refinement.positions import PositionCorrector

    yy, xx = np.mgrid[0:10, 0:12]
    base = np.c_[yy.ravel() * 5.0 + 40, xx.ravel() * 5.5 + 40]
    rng = np.random.default_rng(0)
    local = rng.normal(0, 0.3, base.shape)
    linear = (base - base.mean(0)) @ np.array([[0.02, 0.01], [-0.01, -0.015]])
    x = base - base.mean(0)
    lc = local - local.mean(0)
    expected = lc - x @ np.linalg.lstsq(x, lc, rcond=None)[0]
    for keep in (False, True):
        c = PositionCorrector(base, (200, 200), 32, enabled=True, method="gauss_newton",
                              start_epoch=0, keep_linear=keep, dtype=torch.float64)
        c.delta = torch.tensor(local + linear + [0.7, -0.4], dtype=torch.float64)
        c.end_epoch(0)
        got = c.positions() - base
        if keep:
            np.testing.assert_allclose(got, lc + linear, atol=1e-9)
        else:
            np.testing.assert_allclose(got, expected, atol=1e-9)
            np.testing.assert_allclose(_linear_fit(base, got), 0, atol=1e-9)
            assert np.abs(got).max() > 0.5  # the local corrections survive


def test_joint_probe_and_position_refinement_keeps_the_grid_scale(scan):
    """Refining probe and positions together from a flat object: with the linear
    part removed the corrected grid has the given scale; kept, it drifts."""
    kw = dict(epochs=10, batch_size=32, refine_probe=True, refine_positions=True,
              progress=False)
    fixed = refine(scan, None, **kw)
    d = fixed.positions_px - scan.positions_px
    np.testing.assert_allclose(_linear_fit(scan.positions_px, d), 0, atol=1e-4)
    assert np.sqrt(((d - d.mean(0)) ** 2).sum(1).mean()) > 0.01  # positions did move
    free = refine(scan, None, position_keep_linear=True, **kw)
    d = free.positions_px - scan.positions_px
    assert np.abs(_linear_fit(scan.positions_px, d)).max() > 1e-3


@pytest.mark.parametrize("preconditioner", ["batch", "scan"])
def test_probe_refinement_reduces_loss_with_a_perturbed_probe(scan, preconditioner):
    """With 'scan' the whole scan's illumination follows the refined probe each epoch."""
    yy, xx = np.mgrid[:N, :N] - N / 2
    bad = (scan.probe * np.exp(0.01j * (yy**2 + xx**2))).astype(np.complex64)
    kw = dict(epochs=12, batch_size=32, probe=bad, progress=False,
              preconditioner=preconditioner)
    fixed = refine(scan, None, **kw)
    free = refine(scan, None, refine_probe=True, **kw)
    assert free.history[-1]["loss"] < 0.7 * fixed.history[-1]["loss"]
    assert _ssim(free.object, scan)[0] > _ssim(fixed.object, scan)[0] + 0.05
    np.testing.assert_array_equal(fixed.probe, bad)

    def rel_err(p):
        p = p[0] * np.exp(-1j * np.angle(np.vdot(scan.probe[0], p[0])))
        return np.linalg.norm(p - scan.probe[0]) / np.linalg.norm(scan.probe[0])

    assert rel_err(free.probe) < 0.7 * rel_err(bad)


def test_bad_pixels_are_masked(tiny_scan):
    mask = np.zeros((N, N), bool)
    mask[3:6, 20:23] = True
    d = tiny_scan.diffraction.copy()
    d[:, mask] = 1e4  # garbage on the bad pixels
    broken = tiny_scan.replace(diffraction=d, bad_pixel_mask=mask)
    res = refine(broken, tiny_scan.object, epochs=3, batch_size=8, progress=False)
    assert res.intensity_scale == pytest.approx(1.0, rel=1e-3)
    assert _ssim(res.object, tiny_scan)[0] > 0.97


def test_adam_method_and_callback_stop(tiny_scan):
    seen = []

    def cb(epoch, record, obj):
        seen.append((epoch, record["loss"], obj.shape))
        return epoch >= 3

    res = refine(tiny_scan, None, epochs=10, batch_size=8, method="adam", learning_rate=0.05,
                 progress=False, callback=cb)
    assert [s[0] for s in seen] == [1, 2, 3] and len(res.history) == 3
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert seen[0][2] == tiny_scan.object.shape


def test_progress_bar_runs(tiny_scan, capsys):
    refine(tiny_scan, None, epochs=1, batch_size=16, progress=True)


def test_bad_inputs_raise_clear_errors(tiny_scan):
    obj = tiny_scan.object
    with pytest.raises(DataError, match="inside the object"):
        refine(tiny_scan, obj[:40, :], epochs=1, progress=False)
    with pytest.raises(DataError, match="N=32"):
        refine(tiny_scan, obj, probe=np.ones((16, 16), np.complex64), epochs=1, progress=False)
    with pytest.raises(DataError, match="positions_px"):
        refine(tiny_scan, obj, positions_px=tiny_scan.positions_px[:5], epochs=1, progress=False)
    with pytest.raises(DataError, match="2-D"):
        refine(tiny_scan, obj[None], epochs=1, progress=False)
    with pytest.raises(DataError, match="complex"):
        refine(tiny_scan, obj, probe=np.abs(tiny_scan.probe), epochs=1, progress=False)
    with pytest.raises(ConfigError, match="epochs"):
        refine(tiny_scan, obj, epochs=-1, progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        refine(tiny_scan, obj, batch_size=0, progress=False)
    with pytest.raises(ConfigError, match="learning_rate"):
        refine(tiny_scan, obj, learning_rate=0.0, progress=False)
    with pytest.raises(ConfigError, match="intensity_scale"):
        refine(tiny_scan, obj, intensity_scale=-1.0, progress=False)


def test_refine_reconstruction_stores_results(tiny_scan):
    from ptychopinn.config.schema import ExecutionConfig, InferenceConfig
    from ptychopinn.inference.reconstruct import Reconstruction

    recon = Reconstruction(
        object=(tiny_scan.object * 2.5 * np.exp(1j)).astype(np.complex64),
        positions_px=tiny_scan.positions_px.copy(),
        weight=np.ones(tiny_scan.object.shape, np.float32),
        backend="pytorch",
    )
    cfg = InferenceConfig(
        refine_epochs=2, refine_learning_rate=1.0,
        execution=ExecutionConfig(accelerator="cpu", progress_bar=False),
    )
    out = refine_reconstruction(recon, tiny_scan, None, cfg)
    assert out is recon
    assert recon.refined_object is not None and recon.refined_object.dtype == np.complex64
    assert len(recon.refinement_history) == 2 and recon.timings_s["refine"] > 0
    assert _ssim(recon.refined_object, tiny_scan)[0] > 0.97
    np.testing.assert_array_equal(recon.object, (tiny_scan.object * 2.5 * np.exp(1j)).astype(
        np.complex64))


def test_plateau_schedule_halves_on_stall_only():
    s = PlateauSchedule(tolerance=0.01, patience=2)
    assert [s.update(v) for v in (10.0, 9.0, 8.0)] == [1.0, 1.0, 1.0]
    assert s.update(7.99) == 1.0
    assert s.update(7.98) == 0.5
    assert PlateauSchedule(enabled=False).update(1.0) == 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(tiny_scan):
    a = refine(tiny_scan, None, epochs=2, batch_size=8, progress=False)
    b = refine(tiny_scan, None, epochs=2, batch_size=8, progress=False, device="cuda")
    np.testing.assert_allclose(a.object, b.object, atol=2e-3)


def test_flat_start_on_a_shifted_scan_reports_its_frame(tiny_scan):
    shifted = tiny_scan.replace(object=None, positions_px=tiny_scan.positions_px + [100.0, -40.0])
    res = refine(shifted, None, epochs=1, batch_size=16, progress=False)
    np.testing.assert_allclose(res.positions_px + res.frame_offset_px, shifted.positions_px,
                               atol=1e-4)
    assert res.positions_px.min() >= N / 2


def test_momentum_speeds_convergence_and_zero_is_plain_pie(scan) -> None:
    s = scan
    kw = dict(epochs=10, progress=False, adaptive_step=False)
    plain = refine(s, None, **kw)
    zero = refine(s, None, momentum=0.0, **kw)
    fast = refine(s, None, momentum=0.5, **kw)
    assert np.array_equal(plain.object, zero.object)
    # epoch 4 and the end: lower data misfit with momentum
    assert fast.history[3]["loss"] < 0.8 * plain.history[3]["loss"]
    assert fast.history[-1]["loss"] < plain.history[-1]["loss"]
    with pytest.raises(ConfigError, match="momentum"):
        refine(s, None, epochs=1, progress=False, momentum=1.0)


def test_phase_only_momentum_moves_the_phase_and_keeps_the_epochs_amplitude(scan) -> None:
    """momentum_amplitude=False: after the first epoch the amplitude is plain PIE's (the
    momentum step, O += b (O - O_start), moved only the phase); True moves both."""
    kw = dict(epochs=2, progress=False, adaptive_step=False)
    snaps: dict[str, list] = {"plain": [], "phase": [], "both": []}

    def keep(name):
        return lambda epoch, record, obj: snaps[name].append(obj.copy())

    refine(scan, None, callback=keep("plain"), **kw)
    refine(scan, None, momentum=0.5, momentum_amplitude=False, callback=keep("phase"), **kw)
    refine(scan, None, momentum=0.5, callback=keep("both"), **kw)
    plain, phase, both = (snaps[k][0] for k in ("plain", "phase", "both"))
    np.testing.assert_allclose(np.abs(phase), np.abs(plain), rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.angle(phase), np.angle(plain), atol=1e-3)
    assert not np.allclose(np.abs(both), np.abs(plain), rtol=1e-3, atol=1e-5)


def test_expected_deviance_is_the_poisson_mean() -> None:
    from scipy.stats import poisson

    from ptychopinn.refinement.steps import expected_deviance

    lam = np.array([1e-6, 3e-3, 0.2, 1.0, 7.5, 60.0, 199.0, 250.0, 1e4])
    got = expected_deviance(torch.from_numpy(lam)).numpy()
    for lm, g in zip(lam, got, strict=True):
        k = np.arange(int(lm + 20 * np.sqrt(lm) + 40))
        dev = lm - k * np.log(lm) - k + k * np.log(np.maximum(k, 1))
        want = float((poisson.pmf(k, lm) * dev).sum())
        assert g == pytest.approx(want, rel=0.02, abs=1e-6), lm
    assert got[-1] == pytest.approx(0.5, abs=1e-3)


def test_noise_floor_is_the_nll_of_the_truth(scan) -> None:
    """At the true object the measured NLL equals the floor (1e5 photons, noisy)."""
    res = refine(scan, scan.object, positions_px=scan.positions_px, epochs=1,
                 learning_rate=1e-9, noise_floor=True, progress=False)
    rec = res.history[0]
    assert rec["loss"] == pytest.approx(rec["noise_floor"], rel=0.03)


def test_phase_only_epochs_hold_the_start_amplitude(scan) -> None:
    rng = np.random.default_rng(0)
    start = scan.object * np.exp(1j * 0.5 * rng.standard_normal(scan.object.shape))
    res = refine(scan, start, positions_px=scan.positions_px, epochs=4, phase_only_epochs=4,
                 progress=False)
    scale = np.sqrt(res.intensity_scale)
    np.testing.assert_allclose(np.abs(res.object), np.abs(start) * scale, rtol=1e-4, atol=1e-5)
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    _, phase = _ssim(res.object, scan)
    _, phase0 = _ssim(start, scan)
    assert phase > phase0 + 0.1
    free = refine(scan, start, positions_px=scan.positions_px, epochs=4, progress=False)
    assert not np.allclose(np.abs(free.object), np.abs(start) * scale, rtol=1e-3)


def test_the_step_schedule_restarts_when_the_amplitude_is_released(scan) -> None:
    """The plateau schedule cuts the step while the phase-only epochs stall; at the first
    epoch that refines the amplitude it starts again from the full step (by default), or
    carries its cut on (``restart_at_release=False``, the behaviour before)."""
    start = scan.object  # the phase at the truth: its loss stalls from the first epoch
    kw = dict(positions_px=scan.positions_px, epochs=8, phase_only_epochs=6, progress=False)
    on = refine(scan, start, **kw)
    off = refine(scan, start, restart_at_release=False, **kw)
    steps_on = [h["step"] for h in on.history]
    steps_off = [h["step"] for h in off.history]
    assert steps_on[:6] == steps_off[:6] and steps_on[5] < 1.0  # cut in the phase-only ones
    assert steps_on[6] == 1.0 and steps_off[6] <= steps_off[5] < 1.0
    # no phase-only epochs: nothing to restart, the same run either way
    plain = dict(positions_px=scan.positions_px, epochs=3, progress=False)
    np.testing.assert_array_equal(refine(scan, start, **plain).object,
                                  refine(scan, start, restart_at_release=False, **plain).object)


def test_noise_floor_holds_the_amplitude_once_reached() -> None:
    """Started at the truth (1e6 photons), the fit is at the noise floor after the
    first epoch: from then on the amplitude is held and only the phase moves."""
    # the bilinear model: at step 1 the probe-shift model's first epoch at the truth
    # overshoots (its loss rises above the truth's, then falls once the step halves)
    sc = simulate_scan(SimulationConfig(N=N, n_positions=144, photons_per_pattern=1e6, seed=4,
                                        subpixel="bilinear"))
    snaps: list[np.ndarray] = []

    def keep(epoch, record, obj):
        snaps.append(obj.copy())

    kw = dict(positions_px=sc.positions_px, epochs=4, progress=False, subpixel="bilinear")
    held = refine(sc, sc.object, noise_floor=True, callback=keep, **kw)
    assert [h["amplitude_held"] for h in held.history] == [True] * 4
    assert held.history[0]["loss"] <= held.history[0]["noise_floor"]
    np.testing.assert_allclose(np.abs(snaps[-1]), np.abs(snaps[0]), rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.angle(snaps[-1]), np.angle(snaps[0]), atol=1e-6)
    snaps.clear()
    refine(sc, sc.object, callback=keep, **kw)
    assert not np.allclose(np.abs(snaps[-1]), np.abs(snaps[0]), rtol=1e-4, atol=1e-6)


def test_phase_only_and_floor_after_epochs_are_checked(scan) -> None:
    with pytest.raises(ConfigError, match="phase_only_epochs"):
        refine(scan, None, epochs=1, phase_only_epochs=-1, progress=False)
    with pytest.raises(ConfigError, match="'floor_after_epochs' must be an integer >= 0; "
                                          "found 1.5"):
        refine(scan, None, epochs=1, floor_after_epochs=1.5, progress=False)
    for bad in (None, "ten", True):
        with pytest.raises(ConfigError, match="'floor_after_epochs' must be an integer"):
            refine(scan, None, epochs=1, floor_after_epochs=bad, progress=False)


def test_inference_refinement_options_follow_the_config() -> None:
    from ptychopinn.config import InferenceConfig
    from ptychopinn.refinement.reconstruction import refine_options

    opts = refine_options(InferenceConfig(refine_epochs=40))
    assert opts["phase_only_epochs"] == 20 and opts["noise_floor"] and opts["momentum"] == 0.8
    assert opts["momentum_amplitude"] is False  # infer's momentum moves the phase only
    assert refine_options(InferenceConfig(refine_epochs=4, refine_momentum_amplitude=True)
                          )["momentum_amplitude"] is True
    assert opts["subpixel"] == "probe_shift"
    assert refine_options(InferenceConfig(refine_epochs=10))["phase_only_epochs"] == 5
    off = refine_options(InferenceConfig(refine_epochs=10, refine_phase_first=0,
                                         refine_noise_floor=False, refine_momentum=0.0))
    assert off["phase_only_epochs"] == 0 and not off["noise_floor"] and off["momentum"] == 0.0
    assert opts["floor_after_epochs"] == 0
    assert refine_options(InferenceConfig(refine_floor_after=7))["floor_after_epochs"] == 7
    assert opts["preconditioner"] == "scan"  # infer's; refine()'s own default is 'batch'
    assert opts["restart_at_release"] is True
    assert refine_options(InferenceConfig(refine_release_restart=False)
                          )["restart_at_release"] is False


def test_floor_reached_in_phase_only_epochs_keeps_the_start_amplitude() -> None:
    """At the truth the fit is at the floor during the phase-only epochs: the start's
    amplitude is then never released (without the floor it is, after them)."""
    sc = simulate_scan(SimulationConfig(N=N, n_positions=144, photons_per_pattern=1e6, seed=4,
                                        subpixel="bilinear"))
    kw = dict(positions_px=sc.positions_px, epochs=4, phase_only_epochs=2, progress=False,
              subpixel="bilinear")
    held = refine(sc, sc.object, noise_floor=True, **kw)
    scale = np.sqrt(held.intensity_scale)
    assert held.history[0]["amplitude_held"]
    np.testing.assert_allclose(np.abs(held.object), np.abs(sc.object) * scale, rtol=1e-4,
                               atol=1e-5)
    free = refine(sc, sc.object, **kw)
    assert not np.allclose(np.abs(free.object), np.abs(sc.object) * scale, rtol=1e-4, atol=1e-5)
    # nothing released, nothing restarted: the same run as with the schedule carried on
    carried = refine(sc, sc.object, noise_floor=True, restart_at_release=False, **kw)
    np.testing.assert_array_equal(held.object, carried.object)
    assert [h["step"] for h in held.history] == [h["step"] for h in carried.history]
    assert [h["step"] for h in free.history][-1] > [h["step"] for h in held.history][-1]


def test_floor_after_gives_the_amplitude_its_own_epochs() -> None:
    """With floor_after_epochs the floor cannot hold the amplitude in the phase-only
    epochs, nor before the amplitude has been refined that many epochs: at the truth (at
    the floor from the start) it is held from the first epoch after them, at that epoch's
    amplitude, not the start's."""
    sc = simulate_scan(SimulationConfig(N=N, n_positions=144, photons_per_pattern=1e6, seed=4,
                                        subpixel="bilinear"))
    snaps: list[np.ndarray] = []
    kw = dict(positions_px=sc.positions_px, epochs=5, phase_only_epochs=2, progress=False,
              subpixel="bilinear", noise_floor=True)
    res = refine(sc, sc.object, floor_after_epochs=2,
                 callback=lambda e, r, o: snaps.append(o.copy()), **kw)
    assert [h["amplitude_held"] for h in res.history] == [False, False, False, True, True]
    np.testing.assert_allclose(np.abs(snaps[-1]), np.abs(snaps[3]), rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.abs(snaps[3]), np.abs(snaps[1]), rtol=1e-4, atol=1e-6)
    at_once = refine(sc, sc.object, **kw)  # 0: checked from the first epoch
    assert at_once.history[0]["amplitude_held"]


def test_probe_shift_subpixel_model() -> None:
    """On integer positions the probe-shift model is the bilinear one (the shift is
    zero); on fractional positions both fit the data; bad values are refused."""
    from ptychopinn.refinement.steps import batch_objective

    sc = simulate_scan(SimulationConfig(N=N, n_positions=64, photons_per_pattern=1e6, seed=2))
    obj = torch.from_numpy(sc.object.astype(np.complex64))
    probe = torch.from_numpy(sc.probe)
    counts = torch.from_numpy(sc.diffraction).square()
    whole = torch.from_numpy(np.round(sc.positions_px))
    _, lam_b, _ = batch_objective(obj, probe, whole, counts, subpixel="bilinear")
    _, lam_s, _ = batch_objective(obj, probe, whole, counts, subpixel="probe_shift")
    torch.testing.assert_close(lam_s, lam_b, rtol=1e-4, atol=1e-3 * float(lam_b.max()))
    frac = torch.from_numpy(sc.positions_px)
    _, lam_f, _ = batch_objective(obj, probe, frac, counts, subpixel="probe_shift")
    assert not torch.allclose(lam_f, lam_s, rtol=1e-3)  # the shift is applied
    res = refine(sc, None, epochs=6, subpixel="probe_shift", progress=False)
    assert res.history[-1]["loss"] < 0.3 * res.history[0]["loss"]
    amp, phase = _ssim(res.object, sc)
    assert amp > 0.8 and phase > 0.8
    with pytest.raises(ConfigError, match="subpixel"):
        refine(sc, None, epochs=1, subpixel="fourier", progress=False)


def test_probe_shift_refinement_keeps_the_truth_of_a_probe_shift_scan() -> None:
    """Each sub-pixel model keeps the true object of a noise-free scan simulated with
    the same model (the other model moves it: the two differ by the interpolation's
    smoothing)."""
    kw = dict(N=N, n_positions=64, photons_per_pattern=1e6, poisson_noise=False, seed=6)
    for model in ("probe_shift", "bilinear"):
        sc = simulate_scan(SimulationConfig(subpixel=model, **kw))
        same = refine(sc, sc.object, positions_px=sc.positions_px, epochs=3, subpixel=model,
                      progress=False)
        assert min(_ssim(same.object, sc)) > 0.99, model
    other = refine(sc, sc.object, positions_px=sc.positions_px, epochs=3,
                   subpixel="probe_shift", progress=False)  # sc: the bilinear scan
    assert min(_ssim(other.object, sc)) < 0.99


def test_low_dose_1e3_photons_refines_towards_the_truths_likelihood() -> None:
    """1e3 photons per pattern (about one photon per detector pixel at N=32): the
    Poisson ML intensity scale at the truth is 1, and from a flat start 15 epochs
    bring the Poisson NLL within 20% of the truth's and both SSIMs well above the
    first epoch's, with every recorded number finite."""
    sc = simulate_scan(SimulationConfig(N=N, n_positions=144, photons_per_pattern=1e3, seed=3))
    assert float(np.mean(sc.diffraction.astype(np.float64) ** 2)) < 1.5  # counts per pixel
    at_truth = refine(sc, sc.object, positions_px=sc.positions_px, epochs=1,
                      learning_rate=1e-9, adaptive_step=False, progress=False)
    assert at_truth.intensity_scale == pytest.approx(1.0, rel=0.01)
    truth_nll = at_truth.history[0]["loss"]
    first = refine(sc, None, epochs=1, batch_size=32, progress=False)
    res = refine(sc, None, epochs=15, batch_size=32, progress=False, noise_floor=True)
    losses = [h["loss"] for h in res.history]
    assert np.all(np.isfinite(losses)) and np.isfinite(res.object).all()
    assert all(np.isfinite(h["noise_floor"]) and h["noise_floor"] > 0 for h in res.history)
    assert losses[-1] < 0.7 * losses[0] and losses[-1] < 1.2 * truth_nll
    amp1, phase1 = _ssim(first.object, sc)
    amp, phase = _ssim(res.object, sc)
    assert amp > amp1 + 0.08 and phase > phase1 + 0.2
    assert amp > 0.55 and phase > 0.65


def test_noise_floor_is_re_estimated_every_fourth_epoch_keeping_the_lowest(
        scan, monkeypatch) -> None:
    """The floor estimate (a fifth of an epoch's cost) is refreshed at epochs 1, 5, 9, ...
    and the lowest so far is kept: here the estimate is made to fall at epoch 5 (taken)
    and to rise at epoch 9 (ignored: an estimate from a wrong object is too high)."""
    from ptychopinn.refinement import steps

    real = steps.noise_floor_sums
    batches = -(-scan.n_patterns // 32)
    calls = {"n": 0}

    def scaled(lam, counts, valid):
        estimate = calls["n"] // batches  # 0, 1, 2: at epochs 1, 5 and 9
        calls["n"] += 1
        e, k = real(lam, counts, valid)
        return e * (1.0, 0.1, 10.0)[estimate], k

    monkeypatch.setattr(steps, "noise_floor_sums", scaled)
    res = refine(scan, None, epochs=9, batch_size=32, progress=False, noise_floor=True)
    assert calls["n"] == 3 * batches  # estimated at epochs 1, 5 and 9 only
    floors = [h["noise_floor"] for h in res.history]
    assert floors[0] == floors[1] == floors[2] == floors[3]
    assert floors[4] == floors[5] == floors[6] == floors[7]
    assert floors[4] < floors[0]
    assert floors[8] == floors[4]
    raw = [h.get("noise_floor_estimate") for h in res.history]
    assert [i for i, r in enumerate(raw) if r is not None] == [0, 4, 8]
    assert raw[0] == floors[0] and raw[4] == floors[4] and raw[8] > 50 * floors[8]
    monkeypatch.undo()
    unscaled = refine(scan, None, epochs=9, batch_size=32, progress=False, noise_floor=True)
    uf = [h["noise_floor"] for h in unscaled.history]
    assert all(b <= a for a, b in zip(uf, uf[1:], strict=False))  # never rises


def test_noise_floor_margin_is_three_sigma_of_the_epoch_loss() -> None:
    """At the truth, the recorded floor exceeds the mean loss over noise realisations by
    about 3 standard deviations of the *epoch's* loss (as measured across those
    realisations), not of each batch's: a margin sqrt(batches) wider held the
    amplitude too early on a random-pattern scan (docs/benchmarks.md)."""
    from ptychopinn.simulation.simulate import forward_counts

    sc = simulate_scan(SimulationConfig(N=N, n_positions=144, photons_per_pattern=1e5, seed=4,
                                        subpixel="bilinear"))
    lam = np.empty(sc.diffraction.shape, np.float32)
    forward_counts(sc.object, sc.probe if sc.probe.ndim == 2 else sc.probe[0], sc.positions_px,
                   lam, subpixel="bilinear")
    rng = np.random.default_rng(0)
    losses, floors = [], []
    for _ in range(12):
        noisy = sc.replace(diffraction=np.sqrt(rng.poisson(lam)).astype(np.float32))
        r = refine(noisy, sc.object, positions_px=sc.positions_px, epochs=1, batch_size=16,
                   learning_rate=1e-9, adaptive_step=False, noise_floor=True, progress=False,
                   intensity_scale=1.0, subpixel="bilinear")
        losses.append(r.history[0]["loss"])
        floors.append(r.history[0]["noise_floor"])
    margin = np.mean(floors) - np.mean(losses)
    sigma = np.std(losses, ddof=1)
    assert 1.5 * sigma < margin < 6.0 * sigma, (margin, sigma)


def test_scan_illumination_is_every_positions_illumination_in_chunks(tiny_scan) -> None:
    from ptychopinn.refinement import steps

    probe = torch.from_numpy(tiny_scan.probe).reshape(-1, N, N)  # (modes, N, N)
    pos = torch.from_numpy(tiny_scan.positions_px).float()
    shape = tiny_scan.object.shape
    whole = steps.object_illumination(probe, pos, shape)
    chunked = steps.scan_illumination(probe, pos, shape, chunk=7)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-4)
    # every position inside the object: the canvas holds each position's whole intensity
    per_position = float((probe.abs() ** 2).sum())
    assert float(chunked.sum()) == pytest.approx(pos.shape[0] * per_position, rel=1e-4)


def test_scan_preconditioner_is_the_batch_one_for_one_whole_scan_batch(
        tiny_scan, monkeypatch) -> None:
    """With every position in one batch the scan's illumination times the batch's share
    (1) is the batch's own: with the step's length fixed at 1 the same steps. The scan's
    steps have their least-squares length (one per batch); with smaller batches the two
    preconditioners differ."""
    from ptychopinn.refinement import steps

    n = tiny_scan.n_patterns
    kw = dict(epochs=2, progress=False, adaptive_step=False)
    lengths = []
    real_step = steps.least_squares_step

    def spy(grad, denom, weight):
        lengths.append(real_step(grad, denom, weight))
        return lengths[-1]

    monkeypatch.setattr(steps, "least_squares_step", lambda *a: 1.0)
    a = refine(tiny_scan, None, batch_size=n, preconditioner="batch", **kw)
    b = refine(tiny_scan, None, batch_size=n, preconditioner="scan", **kw)
    np.testing.assert_allclose(b.object, a.object, rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(steps, "least_squares_step", spy)
    c = refine(tiny_scan, None, batch_size=8, preconditioner="batch", **kw)
    assert lengths == []
    d = refine(tiny_scan, None, batch_size=8, preconditioner="scan", **kw)
    assert len(lengths) == 2 * int(np.ceil(n / 8)) and all(0 < v < 2 for v in lengths)
    assert np.abs(d.object - c.object).max() > 1e-3


def test_least_squares_step_is_one_for_pie_and_shorter_for_less_illumination() -> None:
    from ptychopinn.refinement.steps import least_squares_step

    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(20, 20, dtype=torch.complex64, generator=gen)
    own = torch.rand(20, 20, generator=gen) + 0.1
    assert least_squares_step(grad, own, own) == pytest.approx(1.0, rel=1e-5)
    assert least_squares_step(grad, 2.0 * own, own) == pytest.approx(2.0, rel=1e-5)
    # divided by half the batch's own illumination the step is twice too long: halved
    assert least_squares_step(grad, 0.5 * own, own) == pytest.approx(0.5, rel=1e-5)
    # the exact minimiser of sum |G - a W D|^2 / W along D = G / denom (G = grad / 2)
    denom = torch.rand(20, 20, generator=gen) + 0.1
    d = grad / (2 * denom)
    a = least_squares_step(grad, denom, own)
    res = [float(((grad / 2 - t * own * d).abs().square() / own).sum()) for t in
           (a * 0.9, a, a * 1.1)]
    assert res[1] < res[0] and res[1] < res[2]
    assert least_squares_step(torch.zeros(3, 3, dtype=torch.complex64), own[:3, :3],
                              own[:3, :3]) == 1.0


def test_scan_preconditioner_refines_from_flat(scan) -> None:
    res = refine(scan, None, epochs=10, batch_size=32, preconditioner="scan", progress=False)
    losses = [h["loss"] for h in res.history]
    assert losses[-1] < 0.3 * losses[0]
    amp, phase = _ssim(res.object, scan)
    assert amp > 0.88 and phase > 0.85


def test_preconditioner_option_is_checked_and_follows_the_config(tiny_scan) -> None:
    from ptychopinn.config import InferenceConfig
    from ptychopinn.refinement.reconstruction import refine_options

    with pytest.raises(ConfigError, match="'preconditioner' must be 'batch' or 'scan'; "
                                          "found 'global'"):
        refine(tiny_scan, None, epochs=1, preconditioner="global", progress=False)
    assert refine_options(InferenceConfig(refine_preconditioner="scan"))["preconditioner"] == "scan"
    with pytest.raises(ValueError, match="refine_preconditioner"):
        InferenceConfig(refine_preconditioner="global")


def test_scan_illumination_is_recomputed_only_when_probe_or_positions_move(
        tiny_scan, monkeypatch) -> None:
    from ptychopinn.refinement import steps

    calls = []
    real = steps.scan_illumination

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(steps, "scan_illumination", spy)
    kw = dict(epochs=3, batch_size=16, progress=False, preconditioner="scan")
    refine(tiny_scan, None, **kw)
    assert len(calls) == 1  # fixed probe and positions: once
    calls.clear()
    refine(tiny_scan, None, refine_probe=True, **kw)
    assert len(calls) == 3
    calls.clear()
    refine(tiny_scan, None, refine_positions=True, **kw)
    assert len(calls) == 3
    calls.clear()
    refine(tiny_scan, None, **(kw | {"preconditioner": "batch"}))
    assert calls == []
