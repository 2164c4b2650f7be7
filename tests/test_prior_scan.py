"""The scan-wide physics prior (`physics.prior_scan`) and its lookup (`ScanPrior`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ptychopinn.config import TrainingConfig
from ptychopinn.models.pinn import PtychoPINN, normalise_probe
from ptychopinn.models.scan_prior import ScanPrior
from ptychopinn.physics.geometry import extract_patches
from ptychopinn.physics.prior_scan import ScanEstimate, canvas_frame, scan_error_reduction
from ptychopinn.physics.propagation import far_field


@pytest.fixture(scope="module")
def scan64():
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    return simulate_scan(SimulationConfig(n_positions=64, seed=0))


def _inputs(scan):
    return torch.from_numpy(scan.diffraction).float(), torch.from_numpy(scan.probe)


def _residual(est, scan) -> float:
    """Relative modulus misfit of the estimate's patches against the measured amplitudes."""
    amps, probe = _inputs(scan)
    patches = est.patches(scan.positions_px, scan.patch_size)
    field = far_field(patches.unsqueeze(-3) * probe)
    model = (field.real.square() + field.imag.square()).sum(-3).sqrt()
    return float((model - amps).square().sum() / amps.square().sum())


def _lit_corr(est, scan, part) -> float:
    """Correlation with the true object over the well-lit pixels of the scan."""
    truth = torch.from_numpy(scan.object)
    n = scan.patch_size
    probe = torch.from_numpy(scan.probe)
    ill = (probe.abs() ** 2).sum(0)
    mask = ill / ill.max() > 0.3
    a = est.patches(scan.positions_px, n)[:, mask]
    b = extract_patches(truth, torch.from_numpy(scan.positions_px), n).to(torch.complex64)[:, mask]
    if part == "phase":  # the estimate's global phase is fixed by its start, not the truth's
        a = torch.angle(a * torch.exp(-1j * torch.angle((a * b.conj()).sum())))
        b = torch.angle(b)
    else:
        a, b = a.abs(), b.abs()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()))


def test_passes_reduce_the_misfit_and_find_the_object(scan64) -> None:
    amps, probe = _inputs(scan64)
    ests = [scan_error_reduction(amps, scan64.positions_px, probe, k) for k in (0, 1, 3, 6)]
    errs = [_residual(e, scan64) for e in ests]
    assert all(b < a for a, b in zip(errs, errs[1:], strict=False)), errs
    assert errs[-1] < 0.2 * errs[0]
    assert _lit_corr(ests[-1], scan64, "amplitude") > 0.9
    assert _lit_corr(ests[-1], scan64, "phase") > 0.9


def test_flat_start_is_the_measured_brightness() -> None:
    """A uniform object of transmission t: the start is t where lit, and t is a fixed point."""
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(1, 16, 16, dtype=torch.complex64, generator=g)
    t = 0.37 * np.exp(0.0j)
    pos = np.stack(np.meshgrid(np.arange(4) * 5.0 + 20, np.arange(4) * 5.0 + 20,
                               indexing="ij"), -1).reshape(-1, 2)
    amps = far_field(probe * t).abs().expand(len(pos), 16, 16)
    start = scan_error_reduction(amps, pos, probe, 0)
    lit = start.patches(pos, 16)
    assert torch.allclose(lit, torch.full_like(lit, t), atol=1e-4)
    after = scan_error_reduction(amps, pos, probe, 3).patches(pos, 16)
    assert torch.allclose(after, torch.full_like(after, t), atol=1e-3)


def test_probe_scale_and_amplitude_scale_are_interchangeable(scan64) -> None:
    """|F(sP O)| = A  <=>  |F(P O)| = A/s (ScanPrior scales the probe, not the scan)."""
    amps, probe = _inputs(scan64)
    a = scan_error_reduction(amps / 7.0, scan64.positions_px, probe, 2)
    b = scan_error_reduction(amps, scan64.positions_px, probe * 7.0, 2)
    assert torch.allclose(a.canvas, b.canvas, atol=1e-4)


@pytest.mark.parametrize("shift", [(7.0, -3.0), (0.37, -12.81)])
def test_translating_the_scan_translates_the_estimate(scan64, shift) -> None:
    """The estimate does not depend on the frame the positions are given in."""
    amps, probe = _inputs(scan64)
    a = scan_error_reduction(amps, scan64.positions_px, probe, 2)
    b = scan_error_reduction(amps, scan64.positions_px + np.array(shift), probe, 2)
    assert np.allclose(b.origin_px - a.origin_px, shift)
    assert torch.allclose(a.canvas, b.canvas, atol=1e-5)
    pa = a.patches(scan64.positions_px[:5], 64)
    pb = b.patches(scan64.positions_px[:5] + np.array(shift), 64)
    assert torch.allclose(pa, pb, atol=1e-4)


def test_deterministic_and_seeded(scan64) -> None:
    amps, probe = _inputs(scan64)
    a = scan_error_reduction(amps, scan64.positions_px, probe, 2, batch_size=8)
    b = scan_error_reduction(amps, scan64.positions_px, probe, 2, batch_size=8)
    c = scan_error_reduction(amps, scan64.positions_px, probe, 2, batch_size=8, seed=1)
    assert torch.equal(a.canvas, b.canvas)
    assert not torch.equal(a.canvas, c.canvas)  # another mini-batch order


def test_pattern_order_does_not_matter(scan64) -> None:
    amps, probe = _inputs(scan64)
    perm = np.random.default_rng(3).permutation(scan64.n_patterns)
    a = scan_error_reduction(amps, scan64.positions_px, probe, 2)
    b = scan_error_reduction(amps[perm], scan64.positions_px[perm], probe, 2)
    assert torch.allclose(a.canvas, b.canvas, atol=2e-4)  # float summation order only


def test_bad_detector_pixels_are_ignored(scan64) -> None:
    amps, probe = _inputs(scan64)
    valid = torch.ones(64, 64, dtype=torch.bool)
    valid[30:34, 40:44] = False
    hot = amps.clone()
    hot[:, 30:34, 40:44] = 1e3 * amps.max()
    clean = scan_error_reduction(amps, scan64.positions_px, probe, 3)
    masked = scan_error_reduction(hot, scan64.positions_px, probe, 3, valid=valid)
    unmasked = scan_error_reduction(hot, scan64.positions_px, probe, 3)
    d_masked = float((masked.canvas - clean.canvas).abs().mean() / clean.canvas.abs().mean())
    d_unmasked = float((unmasked.canvas - clean.canvas).abs().mean() / clean.canvas.abs().mean())
    assert d_masked < 0.05 < d_unmasked


def test_canvas_frame_holds_every_window() -> None:
    pos = np.array([[40.3, 50.7], [90.0, 33.2]])
    origin, shape = canvas_frame(pos, 32)
    local = pos - origin
    assert np.all(local - 16 >= 0)
    assert np.all(local + 16 < np.array(shape))


def test_rejects_bad_inputs(scan64) -> None:
    amps, probe = _inputs(scan64)
    pos = scan64.positions_px
    with pytest.raises(ValueError, match="iterations"):
        scan_error_reduction(amps, pos, probe, -1)
    with pytest.raises(ValueError, match="positions_px"):
        scan_error_reduction(amps, pos[:3], probe, 1)
    with pytest.raises(ValueError, match="probe"):
        scan_error_reduction(amps, pos, probe[..., :32, :32], 1)
    with pytest.raises(ValueError, match="amplitudes"):
        scan_error_reduction(amps[0], pos, probe, 1)
    with pytest.raises(ValueError, match="alpha"):
        scan_error_reduction(amps, pos, probe, 1, alpha=0)


def test_scan_prior_looks_up_patches_of_the_estimate(scan64) -> None:
    """Training and inference look a pattern's prior up as the estimate's patch at its
    position; the model refuses to guess it from a batch."""
    from ptychopinn.training.data import GroupDataset, prepare

    # the plain estimate at exact positions (the FRC filter and whole-pixel windows of the
    # defaults are tested in test_prior_frc.py and below)
    cfg = TrainingConfig(model={"n_filters_scale": 0.25, "subpixel": "bilinear",
                                "prior_frc_filter": False}, batch_size=4)
    assert cfg.model.prior_com_correction  # the default with the scan prior
    assert cfg.model.prior_scope == "scan"
    data = prepare(scan64, cfg)
    probe_n, factor = normalise_probe(torch.from_numpy(scan64.probe), 4.0)
    model = PtychoPINN(cfg.model, probe_n, log_intensity_scale=-float(np.log(factor)))
    model.train_input_scale.fill_(data.input_scale)
    prior = ScanPrior.for_model(model, data.amplitudes, data.positions_px)
    assert prior is not None and prior.estimate is not None and prior.cache is None
    batch = GroupDataset(data, np.arange(3), False, prior).__getitems__([0, 2])
    idx = data.indices[[0, 2]]
    assert batch["prior"].shape == (2, 4, 64, 64)
    assert cfg.model.prior_amplitude_step == 0.5
    direct = scan_error_reduction(
        data.amplitudes / model.prior_amplitude_scale, data.positions_px, model.physics.probe,
        cfg.model.prior_iterations, amplitude_step=cfg.model.prior_amplitude_step,
        batch_size=cfg.model.prior_batch_size, com_correction=True,
    )
    want = direct.patches(data.positions_px[idx].numpy(), 64)
    # same passes, float32 sums in another order: ~3e-4 apart on this scan
    assert torch.allclose(batch["prior"], want, atol=1e-3 * float(want.abs().max()))
    assert torch.allclose(prior.compute(torch.tensor([5])), prior(torch.tensor([5])))
    with pytest.raises(ValueError, match="prior_scope"):
        model.network_input(data.amplitudes[idx], 1.0)


@pytest.mark.parametrize("step", [1.0, 0.5])
def test_pass_cache_and_scratch_clearing_do_not_change_the_estimate(
    scan64, monkeypatch, step
) -> None:
    """Small scans keep per-pattern terms across passes, update the canvas and clear
    the scratch sums whole; large ones recompute, update and clear only the touched
    pixels: the same estimate, to the bit (whole and damped amplitude steps)."""
    import ptychopinn.physics.prior_scan as ps
    import ptychopinn.physics.prior_update as pu

    amps, probe = _inputs(scan64)
    n = scan64.patch_size
    _, shape = canvas_frame(scan64.positions_px, n)
    kw = {"batch_size": 16, "amplitude_step": step}
    monkeypatch.setattr(ps, "UPDATE_WHOLE_RATIO", shape[0] * shape[1] / (16 * n * n))
    fast = scan_error_reduction(amps, scan64.positions_px, probe, 3, **kw)
    monkeypatch.setattr(ps, "UPDATE_WHOLE_RATIO", 0)
    gathered = scan_error_reduction(amps, scan64.positions_px, probe, 3, **kw)
    monkeypatch.setattr(pu, "PASS_CACHE_LIMIT_BYTES", 0)
    monkeypatch.setattr(ps, "CLEAR_WHOLE_RATIO", 0)
    again = scan_error_reduction(amps, scan64.positions_px, probe, 3, **kw)
    assert torch.equal(fast.canvas, gathered.canvas)
    other = scan_error_reduction(amps, scan64.positions_px, probe, 3, batch_size=8,
                                 amplitude_step=step)
    assert torch.equal(fast.canvas, again.canvas)
    assert not torch.equal(fast.canvas, other.canvas)  # the comparison can fail


@pytest.mark.parametrize("cached", [True, False])
def test_gathering_a_pass_in_chunks_does_not_change_the_estimate(
    scan64, monkeypatch, cached
) -> None:
    """A pass gathers its batches' indices and terms a chunk of batches at a time
    (`PASS_CHUNK_BYTES`): one batch per chunk (a gather per batch), three, or the whole
    pass give the same estimate, to the bit, on half a scan whose batches do not divide it
    (the last of a chunk short), with and without the pass cache, read off the passes'
    centres of mass too."""
    import ptychopinn.physics.prior_scan as ps
    import ptychopinn.physics.prior_update as pu

    amps, probe = _inputs(scan64)
    n = scan64.patch_size
    monkeypatch.setattr(ps, "UPDATE_WHOLE_RATIO", 0)  # the gathered windows' update
    if not cached:
        monkeypatch.setattr(pu, "PASS_CACHE_LIMIT_BYTES", 0)
    half = np.arange(1, 64, 2)  # 32 patterns in batches of 5: the last has 2
    kw = {"batch_size": 5, "amplitude_step": 0.5, "subset": half, "com_correction": True,
          "com_from_passes": True}
    per_pattern = n * n * (8 + (16 if cached else 0))
    canvases = []
    for batches in (1, 3, 100):
        monkeypatch.setattr(ps, "PASS_CHUNK_BYTES", batches * 5 * per_pattern)
        canvases.append(scan_error_reduction(amps, scan64.positions_px, probe, 3, **kw).canvas)
    assert torch.equal(canvases[0], canvases[1]) and torch.equal(canvases[0], canvases[2])
    moved = scan_error_reduction(amps, scan64.positions_px, probe, 3, **{**kw, "seed": 1})
    assert not torch.equal(canvases[0], moved.canvas)  # the comparison can fail


def test_damped_amplitude_step_scales_only_the_part_along_the_object() -> None:
    """A step along O (a change of |O|) is scaled by beta, a step across it (a
    change of arg O) is kept; any step splits into the two; beta 1 is the identity."""
    from ptychopinn.physics.prior_update import damp_amplitude

    g = torch.Generator().manual_seed(3)
    obj = torch.polar(0.2 + torch.rand(500, generator=g), 6 * torch.rand(500, generator=g))
    c = torch.randn(500, generator=g)
    along, across = c * obj, 1j * c * obj
    assert torch.allclose(damp_amplitude(along.clone(), obj, 0.3), 0.3 * along, atol=1e-6)
    assert torch.allclose(damp_amplitude(across.clone(), obj, 0.3), across, atol=1e-6)
    mixed = along + across
    assert torch.allclose(damp_amplitude(mixed.clone(), obj, 0.3), 0.3 * along + across,
                          atol=1e-6)
    assert torch.equal(damp_amplitude(mixed.clone(), obj, 1.0), mixed)
    # an empty pixel (O = 0) takes the step whole instead of dividing by zero
    out = damp_amplitude(torch.tensor([0.5 + 0.5j]), torch.tensor([0j]), 0.3)
    assert torch.equal(out, torch.tensor([0.5 + 0.5j]))


def _amp_error(est, scan) -> float:
    """rms amplitude error against the truth over the well-lit pixels."""
    n = scan.patch_size
    probe = torch.from_numpy(scan.probe)
    ill = (probe.abs() ** 2).sum(0)
    mask = ill / ill.max() > 0.3
    a = est.patches(scan.positions_px, n)[:, mask].abs()
    truth = extract_patches(torch.from_numpy(scan.object), torch.from_numpy(scan.positions_px),
                            n)[:, mask].abs()
    return float((a - truth).square().mean().sqrt())


def test_damped_amplitude_steps_keep_phase_errors_out_of_the_amplitude() -> None:
    """On an object whose phase is strong and amplitude smooth (the default
    simulation's seed 5 pictures), half amplitude steps give a smaller amplitude
    error after a few passes than whole PIE steps, and the same phase."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(n_positions=100, seed=5))
    amps, probe = _inputs(scan)
    whole = scan_error_reduction(amps, scan.positions_px, probe, 4)
    half = scan_error_reduction(amps, scan.positions_px, probe, 4, amplitude_step=0.5)
    e_whole, e_half = _amp_error(whole, scan), _amp_error(half, scan)
    assert e_half < 0.85 * e_whole, (e_half, e_whole)  # measured 0.78
    assert _lit_corr(half, scan, "phase") == pytest.approx(_lit_corr(whole, scan, "phase"),
                                                           abs=0.02)
    with pytest.raises(ValueError, match="amplitude_step"):
        scan_error_reduction(amps, scan.positions_px, probe, 1, amplitude_step=0)
    with pytest.raises(ValueError, match="amplitude_step"):
        scan_error_reduction(amps, scan.positions_px, probe, 1, amplitude_step=1.5)


@pytest.mark.parametrize("modes", [1, 2])
def test_batch_correction_is_the_mode_summed_pie_correction(modes) -> None:
    """The in-place one-mode correction (and the mode loop) equal
    sum_m conj(P_m) (back_propagate(A Psi_m / |Psi|) - psi_m), bad pixels kept."""
    from ptychopinn.physics.com_phase import (
        intensity_centre_gradients,
        moment_gradients,
        moment_weights,
    )
    from ptychopinn.physics.prior_update import object_correction
    from ptychopinn.physics.propagation import back_propagate

    g = torch.Generator().manual_seed(4)
    b, n = 3, 16
    obj = torch.randn(b, n, n, dtype=torch.complex64, generator=g)
    probes = torch.randn(b, modes, n, n, dtype=torch.complex64, generator=g)
    amps = torch.rand(b, n, n, generator=g) * 3
    valid = torch.rand(n, n, generator=g) > 0.1
    psi = obj.unsqueeze(1) * probes
    field = far_field(psi)
    model = (field.abs() ** 2).sum(1, keepdim=True).sqrt()
    target = torch.where(valid, amps.unsqueeze(1) / model, torch.ones_like(model))
    expected = (probes.conj() * (back_propagate(field * target) - psi)).sum(1)
    keep = ~torch.fft.ifftshift(valid, dim=(-2, -1))
    a_u = torch.fft.ifftshift(amps, dim=(-2, -1))
    got, sums = object_correction(obj.clone(), probes, a_u, keep)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert sums is None
    # with the moments it is the same correction and the predicted patterns' centres of
    # mass too (their intensities straight from the FFT, the detector's good pixels)
    moments = moment_weights(n, valid, centred=False, dtype=torch.float32)
    again, sums = object_correction(obj.clone(), probes, a_u, keep, moments)
    assert torch.equal(again, got) and sums.shape == (b, 3)
    inten = (torch.fft.fft2(psi).abs() ** 2).sum(1)
    torch.testing.assert_close(moment_gradients(sums, n),
                               intensity_centre_gradients(inten, moments.double()),
                               rtol=1e-4, atol=1e-5)


def test_phase_momentum_carries_the_phase_on_and_keeps_the_amplitude() -> None:
    """Phase momentum (module docstring): on the seed-5 pictures (strong phase, smooth
    amplitude) 4 passes with momentum 0.7 find the phase better than without and leave
    the amplitude better too; it acts only between passes (one pass is the plain pass),
    momentum 0 is the plain estimate, and values outside [0, 1) are refused by name."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(n_positions=100, seed=5))
    amps, probe = _inputs(scan)
    args = (amps, scan.positions_px, probe)
    plain = scan_error_reduction(*args, 4, amplitude_step=0.5)
    moved = scan_error_reduction(*args, 4, amplitude_step=0.5, phase_momentum=0.7)
    p_plain, p_moved = _lit_corr(plain, scan, "phase"), _lit_corr(moved, scan, "phase")
    assert 1 - p_moved < 0.8 * (1 - p_plain), (p_moved, p_plain)  # measured 0.987, 0.979
    e_moved, e_plain = _amp_error(moved, scan), _amp_error(plain, scan)
    assert e_moved < 0.9 * e_plain, (e_moved, e_plain)  # measured 0.017, 0.022
    r_moved, r_plain = _residual(moved, scan), _residual(plain, scan)
    assert r_moved < r_plain, (r_moved, r_plain)  # a better fit to the data too
    assert torch.equal(scan_error_reduction(*args, 4, amplitude_step=0.5,
                                            phase_momentum=0.0).canvas, plain.canvas)
    one = scan_error_reduction(*args, 1, amplitude_step=0.5)
    assert torch.equal(scan_error_reduction(*args, 1, amplitude_step=0.5,
                                            phase_momentum=0.7).canvas, one.canvas)
    # it turns pixels and nothing else: the amplitude after the first pass is kept whole
    two = scan_error_reduction(*args, 2, amplitude_step=0.5, phase_momentum=0.7)
    assert not torch.equal(two.canvas, scan_error_reduction(*args, 2, amplitude_step=0.5).canvas)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="phase_momentum"):
            scan_error_reduction(*args, 2, phase_momentum=bad)


def test_phase_momentum_turn_is_the_same_in_any_chunking() -> None:
    """`turn_on` (the momentum step after a pass) updates the velocity by each pixel's
    wrapped phase change and turns the pixel by momentum x velocity, whatever the chunk
    size it works in; the amplitude is untouched."""
    from ptychopinn.physics.prior_update import turn_on

    g = torch.Generator().manual_seed(0)
    n = 1000
    obj = torch.polar(torch.rand(n, generator=g) + 0.5, (torch.rand(n, generator=g) - 0.5) * 6)
    before = (torch.rand(n, generator=g) - 0.5) * 6  # phases at the pass's start
    vel = torch.randn(n, generator=g)
    dphi = torch.angle(obj * torch.polar(torch.ones(n), -before))  # wrapped change
    want_v = 0.7 * vel + dphi
    want = obj * torch.polar(torch.ones(n), 0.7 * want_v)
    for chunk in (7, 1 << 20):
        o, v = obj.clone(), vel.clone()
        turn_on(o, before, v, 0.7, chunk=chunk)
        torch.testing.assert_close(v, want_v, atol=2e-5, rtol=0)
        torch.testing.assert_close(o, want, atol=2e-5, rtol=0)
        torch.testing.assert_close(o.abs(), obj.abs())


def test_a_continuation_from_a_first_pass_is_the_whole_run(scan64) -> None:
    """k passes, then n - k from their canvas with ``first_pass=k``, give the n-pass
    estimate bit for bit (the batch orders of the earlier passes are skipped); with the
    phase momentum, `momentum_turn` after the first pass and its velocity carried on give
    the run that had the momentum throughout (`physics.prior_frc` shares the halves'
    first pass this way). Bad continuations are refused by name."""
    from ptychopinn.physics.prior_update import momentum_turn

    amps, probe = _inputs(scan64)
    args = (amps, scan64.positions_px, probe)
    flat = scan_error_reduction(*args, 0)
    frame = (flat.origin_px, tuple(flat.canvas.shape))
    kw = dict(amplitude_step=0.5, frame=frame, seed=3)
    for k in (1, 2):
        first = scan_error_reduction(*args, k, **kw)
        rest = scan_error_reduction(*args, 4 - k, start=first.canvas, first_pass=k, **kw)
        assert torch.equal(rest.canvas, scan_error_reduction(*args, 4, **kw).canvas)
    # without skipping the first pass's order the continuation is another estimate
    first = scan_error_reduction(*args, 1, **kw)
    assert not torch.equal(scan_error_reduction(*args, 3, start=first.canvas, **kw).canvas,
                           scan_error_reduction(*args, 4, **kw).canvas)
    moved = scan_error_reduction(*args, 4, phase_momentum=0.7, **kw)
    turned, velocity = momentum_turn(first.canvas, flat.canvas, 0.7)
    assert velocity.shape == flat.canvas.shape and float(velocity.abs().max()) > 0
    go_on = scan_error_reduction(*args, 3, start=turned, first_pass=1, phase_momentum=0.7,
                                 phase_velocity=velocity, **kw)
    assert torch.equal(go_on.canvas, moved.canvas)
    # the velocity matters: restarting it from zero is another estimate
    assert not torch.equal(scan_error_reduction(*args, 3, start=turned, first_pass=1,
                                                phase_momentum=0.7, **kw).canvas, moved.canvas)
    still, zero = momentum_turn(first.canvas, flat.canvas, 0.0)
    assert torch.equal(still, first.canvas) and float(zero.abs().max()) == 0.0
    for bad, match in ((dict(first_pass=-1), "first_pass must be an integer >= 0"),
                       (dict(first_pass=True), "first_pass must be an integer >= 0"),
                       (dict(phase_velocity=velocity), "phase_velocity needs a phase_momentum"),
                       (dict(phase_velocity=velocity[1:], phase_momentum=0.5),
                        "phase_velocity must have the frame's shape")):
        with pytest.raises(ValueError, match=match):
            scan_error_reduction(*args, 1, **{**kw, **bad})
    with pytest.raises(ValueError, match="phase_velocity needs the frame"):
        scan_error_reduction(*args, 1, phase_momentum=0.5, phase_velocity=velocity)
    with pytest.raises(ValueError, match="momentum must be in"):
        momentum_turn(first.canvas, flat.canvas, 1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        momentum_turn(first.canvas, flat.canvas[1:], 0.5)


def test_pass_misfit_is_the_relative_modulus_misfit_and_falls_on_held_out_patterns(
        scan64) -> None:
    """`pass_misfit`: the passes' relative modulus misfit (the patches' sub-pixel model
    aside, `_residual`'s), the same with the pass terms given; it falls with passes on the
    patterns an estimate fitted and on those it did not (a half's estimate against the other
    half's patterns, higher there); masked detector pixels do not count; bad rows are
    refused by name."""
    from ptychopinn.physics.prior_frc import half_split
    from ptychopinn.physics.prior_scan import pass_misfit
    from ptychopinn.physics.prior_update import pass_terms

    amps, probe = _inputs(scan64)
    pos = scan64.positions_px
    every = np.arange(len(pos))
    est = scan_error_reduction(amps, pos, probe, 6)
    m = pass_misfit(amps, pos, probe, est, every)
    # on whole-pixel windows the two sub-pixel models are the same: `_residual`'s exactly
    whole = ScanEstimate(est.canvas, np.round(est.origin_px), est.illumination)
    on_grid = replace(scan64, positions_px=np.round(pos))
    assert pass_misfit(amps, on_grid.positions_px, probe, whole, every) == pytest.approx(
        _residual(whole, on_grid), rel=1e-4)
    terms = pass_terms(amps, pos, probe, (est.origin_px, tuple(est.canvas.shape)))
    assert pass_misfit(amps, pos, probe, est, every, terms=terms) == pytest.approx(m, rel=1e-5)

    own, other = half_split(len(pos))
    origin, shape = canvas_frame(np.asarray(pos), 64)
    halves = [scan_error_reduction(amps, pos, probe, k, frame=(origin, shape), subset=own)
              for k in (1, 3, 6)]
    fitted = [pass_misfit(amps, pos, probe, h, own) for h in halves]
    held_out = [pass_misfit(amps, pos, probe, h, other) for h in halves]
    assert fitted[0] > fitted[1] > fitted[2] and held_out[0] > held_out[1] > held_out[2]
    assert all(h > f for h, f in zip(held_out, fitted, strict=True))

    valid = torch.ones(64, 64, dtype=torch.bool)
    valid[30:34, 40:44] = False
    hot = amps.clone()
    hot[:, 30:34, 40:44] = 1e3 * amps.max()
    assert pass_misfit(hot, pos, probe, est, every, valid=valid) == pytest.approx(
        pass_misfit(amps, pos, probe, est, every, valid=valid), rel=1e-5)
    assert pass_misfit(hot, pos, probe, est, every) > 100 * m

    with pytest.raises(ValueError, match="at least one pattern"):
        pass_misfit(amps, pos, probe, est, np.array([], dtype=int))
    with pytest.raises(ValueError, match="rows must index the 64 patterns"):
        pass_misfit(amps, pos, probe, est, np.array([0, 64]))
    small = ScanEstimate(est.canvas[:70, :70].contiguous(), est.origin_px)
    with pytest.raises(ValueError, match=r"canvas \(70, 70\) does not hold every 64x64"):
        pass_misfit(amps, pos, probe, small, every)
