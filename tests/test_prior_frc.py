"""The half-scan FRC filter of the scan prior's amplitude (physics.prior_frc)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.physics import prior_update
from ptychopinn.physics.prior_frc import (
    EXTRA_PASS_AGREEMENT,
    FRC_RINGS,
    agreement,
    filter_amplitude,
    frc_filtered_estimate,
    full_data_weight,
    half_ring_index,
    half_split,
    ring_frc,
    ring_index,
)
from ptychopinn.physics.prior_scan import ScanEstimate, scan_error_reduction
from ptychopinn.physics.prior_update import pass_terms


def test_half_split_is_a_seeded_partition():
    a, b = half_split(11, seed=3)
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(11))
    assert len(np.intersect1d(a, b)) == 0 and abs(len(a) - len(b)) <= 1
    assert np.all(np.diff(a) > 0) and np.all(np.diff(b) > 0)
    a2, b2 = half_split(11, seed=3)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert not np.array_equal(a, half_split(11, seed=4)[0])
    with pytest.raises(ValueError, match="at least 2"):
        half_split(1)


def test_ring_index_runs_from_zero_to_nyquist_and_corners():
    r = ring_index((64, 64), 24)
    assert r[0, 0] == 0
    assert r[0, 32] == 24 and r[32, 0] == 24  # the Nyquist frequency itself is the last ring
    assert r[32, 32] == 24  # a corner, beyond it
    assert r[0, 1] == 0 and r[0, 16] == 12


@pytest.mark.parametrize("shape", [(32, 48), (33, 47)])
def test_half_spectrum_ring_sums_are_the_whole_spectrums(shape):
    """ring_frc works on rfft2 half spectra: weighted by the column multiplicity, ring
    sums of a real image's spectral terms equal the whole FFT's (even and odd widths)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    full = ring_index(shape)
    rings, mult = half_ring_index(shape)
    assert rings.shape == (shape[0], shape[1] // 2 + 1)
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    ha, hb = np.fft.rfft2(a), np.fft.rfft2(b)
    want = np.bincount(full.ravel(), (fa * fb.conj()).real.ravel(), FRC_RINGS + 1)
    got = np.bincount(rings.ravel(), ((ha * hb.conj()).real * mult).ravel(), FRC_RINGS + 1)
    assert np.allclose(got, want)
    # and the FRC itself matches a double-precision whole-spectrum FRC
    win = np.ones(shape)
    a0, b0 = a - a.mean(), b - b.mean()
    fa0, fb0 = np.fft.fft2(a0), np.fft.fft2(b0)
    ref = (np.bincount(full.ravel(), (fa0 * fb0.conj()).real.ravel(), FRC_RINGS + 1)
           / np.sqrt(np.bincount(full.ravel(), np.abs(fa0).ravel() ** 2, FRC_RINGS + 1)
                     * np.bincount(full.ravel(), np.abs(fb0).ravel() ** 2, FRC_RINGS + 1)))
    assert np.allclose(ring_frc(a, b, win)[1:], ref[1:], atol=1e-5)


def test_ring_frc_of_equal_opposite_and_independent_images():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(128, 128))
    win = np.ones_like(a)
    assert np.allclose(ring_frc(a, a, win), 1.0)
    assert np.allclose(ring_frc(a, -a, win), -1.0)
    b = rng.normal(size=(128, 128))
    # the rings near zero frequency hold few pixels: their FRC of noise is noisy itself
    assert np.abs(ring_frc(a, b, win)[3:]).max() < 0.2
    # a shared smooth signal plus independent fine noise: high at low, low at high frequency
    from scipy.ndimage import gaussian_filter

    s = gaussian_filter(rng.normal(size=(128, 128)), 4) * 20
    f = ring_frc(s + 0.3 * a, s + 0.3 * b, win)
    assert f[1] > 0.9 and f[FRC_RINGS - 1] < 0.3 and f[4] > f[12] > f[FRC_RINGS - 1]
    with pytest.raises(ValueError, match="shapes differ"):
        ring_frc(a, b[:-1], win)
    with pytest.raises(ValueError, match="empty"):
        ring_frc(a, b, np.zeros_like(a))


def test_full_data_weight():
    w = full_data_weight(np.array([-0.5, 0.0, 1 / 3, 1.0, 1.5]))
    assert np.allclose(w, [0.0, 0.0, 0.5, 1.0, 1.0])
    grid = np.linspace(0, 1, 11)
    assert np.all(np.diff(full_data_weight(grid)) > 0) and np.all(full_data_weight(grid) >= grid)


def _scan(seed: int):
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    return simulate_scan(SimulationConfig(seed=seed))


def test_a_given_frame_reproduces_the_own_frame_and_refuses_a_small_one():
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=36, photons_per_pattern=1e5, seed=2))
    args = (torch.from_numpy(scan.diffraction), scan.positions_px, torch.from_numpy(scan.probe), 2)
    own = scan_error_reduction(*args, amplitude_step=0.5)
    same = scan_error_reduction(*args, amplitude_step=0.5,
                                frame=(own.origin_px, tuple(own.canvas.shape)))
    assert torch.equal(own.canvas, same.canvas)
    # the probe intensity over every window comes with the estimate (the filter's region)
    assert own.illumination.shape == own.canvas.shape and float(own.illumination.min()) >= 0
    assert torch.equal(own.illumination, same.illumination)
    with pytest.raises(ValueError, match="does not hold every 32x32 window"):
        scan_error_reduction(*args, frame=(own.origin_px + 10, tuple(own.canvas.shape)))
    # a start equal to the flat start changes nothing; a start needs a frame of its shape
    frame = (own.origin_px, tuple(own.canvas.shape))
    flat = scan_error_reduction(*args[:3], 0, amplitude_step=0.5).canvas
    started = scan_error_reduction(*args, amplitude_step=0.5, frame=frame, start=flat)
    assert torch.equal(started.canvas, own.canvas)
    assert torch.equal(started.illumination, own.illumination)  # read without the flat start
    other = scan_error_reduction(*args, amplitude_step=0.5, frame=frame, start=own.canvas)
    assert not torch.equal(other.canvas, own.canvas)
    assert torch.equal(flat, scan_error_reduction(*args[:3], 0).canvas)  # the start is not written
    with pytest.raises(ValueError, match="start needs a frame"):
        scan_error_reduction(*args, start=flat)
    # a subset is the same estimate as the subset's patterns given alone (not copied whole)
    rows = np.sort(np.random.default_rng(0).permutation(scan.n_patterns)[:20])
    alone = scan_error_reduction(args[0][torch.from_numpy(rows)], scan.positions_px[rows],
                                 *args[2:], amplitude_step=0.5, frame=frame)
    sub = scan_error_reduction(*args, amplitude_step=0.5, frame=frame, subset=rows)
    assert torch.equal(alone.canvas, sub.canvas)
    assert torch.equal(alone.illumination, sub.illumination)
    for bad in (np.array([0, scan.n_patterns]), np.array([[0, 1]]), np.array([0.5])):
        with pytest.raises(ValueError, match="subset must be 1-D indices"):
            scan_error_reduction(*args, subset=bad)
    with pytest.raises(ValueError, match="start needs a frame"):
        scan_error_reduction(*args, frame=frame, start=flat[1:])


def _amp_ssim(est: ScanEstimate, scan, key: str = "amp_ssim") -> float:
    """Amplitude SSIM of a whole-pixel estimate against the truth in the scanned region
    (the canvas pasted into the object's frame, ones elsewhere)."""
    from ptychopinn.metrics import evaluate

    out = np.ones(scan.object.shape, np.complex64)
    o = np.round(est.origin_px).astype(int)
    c = est.canvas.numpy()
    y0, x0 = max(o[0], 0), max(o[1], 0)
    y1, x1 = min(o[0] + c.shape[0], out.shape[0]), min(o[1] + c.shape[1], out.shape[1])
    out[y0:y1, x0:x1] = c[y0 - o[0]:y1 - o[0], x0 - o[1]:x1 - o[1]]
    m = evaluate(out, scan.object, positions_px=scan.positions_px, patch_size=scan.patch_size)
    return float(m[key])


def test_shared_terms_and_illumination_give_the_same_estimate(monkeypatch):
    """What `frc_filtered_estimate` computes once for all its estimates (every pattern's
    shifted probes and FFT-ordered amplitudes, each half's flat start and illumination)
    gives each estimate bit for bit as computed alone: on a subset, with fractional
    positions, two probe modes and a continuation; and the filtered estimate is the same
    whether the terms fit in memory or not."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=49, photons_per_pattern=1e5,
                                          seed=4))
    assert np.any(scan.positions_px % 1 != 0)  # the probes are shifted per pattern
    probe = torch.from_numpy(scan.probe).reshape(-1, 32, 32)[:1]
    probe = torch.cat([probe, 0.3 * probe.roll(3, -1)])  # two modes
    args = (torch.from_numpy(scan.diffraction), scan.positions_px, probe)
    frame = (scan_error_reduction(*args, 0).origin_px,
             tuple(scan_error_reduction(*args, 0).canvas.shape))
    terms = pass_terms(*args, frame)
    assert terms is not None and tuple(terms[0].shape) == (49, 2, 32, 32)
    rows = np.sort(np.random.default_rng(1).permutation(49)[:24])
    kw = dict(frame=frame, subset=rows, amplitude_step=0.5, phase_momentum=0.5)
    alone = scan_error_reduction(*args, 3, **kw)
    flat = scan_error_reduction(*args, 0, **kw)
    shared = scan_error_reduction(*args, 3, start=flat.canvas, illumination=flat.illumination,
                                  terms=terms, **kw)
    assert torch.equal(shared.canvas, alone.canvas)
    assert torch.equal(shared.illumination, alone.illumination)
    on = scan_error_reduction(*args, 2, start=alone.canvas, **kw)
    assert torch.equal(scan_error_reduction(*args, 2, start=alone.canvas, terms=terms,
                                            illumination=alone.illumination, **kw).canvas,
                       on.canvas)
    # the filtered estimate with and without the shared terms (too large for the limit)
    est, frc = frc_filtered_estimate(*args, 3, extra_iterations=1, phase_momentum=0.5,
                                     amplitude_step=0.5)
    monkeypatch.setattr(prior_update, "PASS_CACHE_LIMIT_BYTES", 0)
    assert pass_terms(*args, frame) is None
    est0, frc0 = frc_filtered_estimate(*args, 3, extra_iterations=1, phase_momentum=0.5,
                                       amplitude_step=0.5)
    assert torch.equal(est.canvas, est0.canvas) and np.array_equal(frc, frc0)
    # the whole scan's illumination is its halves'
    assert torch.allclose(est.illumination, scan_error_reduction(*args, 0).illumination,
                          rtol=1e-5, atol=1e-6)
    # refused by name: without the frame they belong to, or of the wrong patterns
    with pytest.raises(ValueError, match="terms needs the frame"):
        scan_error_reduction(*args, 1, terms=terms)
    with pytest.raises(ValueError, match="illumination needs the frame"):
        scan_error_reduction(*args, 1, illumination=flat.illumination)
    with pytest.raises(ValueError, match="terms must be pass_terms of all 49 patterns"):
        scan_error_reduction(*args, 1, frame=frame, terms=tuple(t[:24] for t in terms))
    with pytest.raises(ValueError, match="illumination must have the frame's shape"):
        scan_error_reduction(*args, 1, frame=frame, illumination=flat.illumination[1:])
    with pytest.raises(ValueError, match="chooses the frame, start, subsets, illumination"):
        frc_filtered_estimate(*args, 2, terms=terms)



@pytest.mark.parametrize("seed, least_gain", [(5, 0.08), (0, -0.01)])
def test_the_filter_cleans_smooth_amplitude_and_keeps_texture(seed, least_gain):
    """Seed 5 (smooth amplitude, strong phase): the 4-pass prior's fine amplitude error is
    mostly unconverged and the halves disagree on it, so the filtered estimate is much
    better (amplitude SSIM measured 0.755 -> 0.888); seed 0 (textured amplitude): the
    halves agree, the amplitude stays as good (0.949 -> 0.951). The phase is no worse."""
    scan = _scan(seed)
    args = (torch.from_numpy(scan.diffraction), scan.positions_px, torch.from_numpy(scan.probe), 4)
    plain = scan_error_reduction(*args, amplitude_step=0.5, integer_grid=True)
    filtered, frc = frc_filtered_estimate(*args, amplitude_step=0.5, integer_grid=True)
    assert frc.shape == (FRC_RINGS + 1,) and frc[0] > 0.9
    assert filtered.canvas.shape == plain.canvas.shape
    assert np.array_equal(filtered.origin_px, plain.origin_px)
    gain = _amp_ssim(filtered, scan) - _amp_ssim(plain, scan)
    assert gain >= least_gain, gain
    assert _amp_ssim(filtered, scan, "phase_ssim") >= _amp_ssim(plain, scan, "phase_ssim") - 0.01
    if seed == 5:  # the halves disagree near the sampling limit
        assert frc[FRC_RINGS - 4] < 0.5


def test_the_filtered_estimate_does_not_depend_on_the_listing_order():
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=49, photons_per_pattern=1e5, seed=2))
    a, pos, probe = (torch.from_numpy(scan.diffraction), np.asarray(scan.positions_px),
                     torch.from_numpy(scan.probe))
    perm = np.random.default_rng(1).permutation(len(pos))
    one, f1 = frc_filtered_estimate(a, pos, probe, 2, amplitude_step=0.5)
    two, f2 = frc_filtered_estimate(a[torch.from_numpy(perm)], pos[perm], probe, 2,
                                    amplitude_step=0.5)
    assert np.allclose(f1, f2, atol=1e-4)  # float32 sums in another order
    assert torch.allclose(one.canvas, two.canvas, atol=1e-5)
    other, _ = frc_filtered_estimate(a, pos, probe, 2, amplitude_step=0.5, split_seed=1)
    assert not torch.allclose(one.canvas, other.canvas, atol=1e-5)


def test_filter_amplitude_keeps_the_phase_and_only_smooths_where_the_halves_disagree():
    scan = _scan(5)
    a, pos, probe = (torch.from_numpy(scan.diffraction), np.asarray(scan.positions_px),
                     torch.from_numpy(scan.probe))
    plain = scan_error_reduction(a, pos, probe, 4, amplitude_step=0.5, integer_grid=True)
    frame = (plain.origin_px, tuple(plain.canvas.shape))
    halves = [scan_error_reduction(a[torch.from_numpy(r)], pos[r], probe, 4, amplitude_step=0.5,
                                   frame=frame) for r in half_split(len(pos))]
    out, frc = filter_amplitude(plain, halves)
    lit = plain.canvas.abs() > 0
    assert torch.allclose(torch.angle(out.canvas)[lit], torch.angle(plain.canvas)[lit], atol=1e-6)
    assert _amp_ssim(out, scan) - _amp_ssim(plain, scan) >= 0.08
    # halves that agree exactly (FRC 1 on every ring) leave the amplitude as it was
    same, ones = filter_amplitude(plain, [plain, plain])
    assert np.allclose(ones[:FRC_RINGS], 1.0)
    assert torch.allclose(same.canvas.abs(), plain.canvas.abs(), atol=1e-4)
    with pytest.raises(ValueError, match="two halves"):
        filter_amplitude(plain, [halves[0]])


def test_the_filter_keeps_a_scan_too_small_to_split():
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=1, photons_per_pattern=1e5, seed=2))
    args = (torch.from_numpy(scan.diffraction), scan.positions_px, torch.from_numpy(scan.probe), 2)
    est, frc = frc_filtered_estimate(*args)
    assert torch.equal(est.canvas, scan_error_reduction(*args).canvas)
    assert np.all(frc == 1)


def test_scan_prior_and_config_take_the_filter():
    from ptychopinn.config import TrainingConfig
    from ptychopinn.models.scan_prior import ScanPrior
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    # on by default with a scan prior (and the probe-shift model of fractional positions),
    # off without one; an explicit choice is kept
    model = TrainingConfig().model
    assert model.prior_frc_filter is True and model.subpixel == "probe_shift"
    for other in ({"prior_scope": "neighbourhood"}, {"architecture": "cnn"},
                  {"prior_iterations": 0}):
        model = TrainingConfig.model_validate({"model": other}).model
        assert model.prior_frc_filter is False and model.subpixel == "bilinear", other
    model = TrainingConfig.model_validate(
        {"model": {"prior_frc_filter": False, "subpixel": "bilinear"}}).model
    assert model.prior_frc_filter is False and model.subpixel == "bilinear"
    with pytest.raises(ValueError, match="prior_frc_filter needs prior_scope 'scan'"):
        TrainingConfig.model_validate(
            {"model": {"prior_frc_filter": True, "prior_scope": "neighbourhood"}})
    scan = simulate_scan(SimulationConfig(N=32, n_positions=49, photons_per_pattern=1e5, seed=2))
    amps, probe = torch.from_numpy(scan.diffraction), torch.from_numpy(scan.probe)
    kw = dict(scope="scan", amplitude_step=0.5)
    off = ScanPrior(amps, scan.positions_px, probe, 1.0, 4, 4, **kw)
    on = ScanPrior(amps, scan.positions_px, probe, 1.0, 4, 4, frc_filter=True, **kw)
    on_cc = ScanPrior(amps, scan.positions_px, probe, 1.0, 4, 4, frc_filter=True,
                      com_correction=True, **kw)
    ids = torch.arange(scan.n_patterns)
    a, b = off(ids), on(ids)
    assert a.shape == b.shape and not torch.allclose(a.abs(), b.abs())
    with pytest.raises(ValueError, match="frc_filter needs scope 'scan'"):
        ScanPrior(amps, scan.positions_px, probe, 1.0, 4, 4, scope="neighbourhood",
                  frc_filter=True)
    cfg = TrainingConfig.model_validate(
        {"model": {"N": 32, "prior_frc_filter": True, "subpixel": "bilinear",
                   "prior_batch_size": 64}})  # the constructor's default
    via_cfg = ScanPrior.for_config(cfg.model, amps, scan.positions_px, probe,
                                   prior_amplitude_scale=1.0, train_input_scale=0.0)
    assert cfg.model.prior_com_correction  # on with the scan prior, as the filter
    assert torch.equal(via_cfg(ids), on_cc(ids))
    assert not torch.equal(via_cfg(ids), b)


def test_agreement_is_the_mean_full_data_weight_inside_nyquist():
    assert agreement(np.ones(FRC_RINGS + 1)) == pytest.approx(1.0)
    assert agreement(np.zeros(FRC_RINGS + 1)) == 0.0
    # zero frequency and the corners beyond Nyquist do not count; negative FRC counts 0
    frc = np.full(FRC_RINGS + 1, -0.3)
    frc[0] = frc[FRC_RINGS] = 1.0
    assert agreement(frc) == 0.0
    frc[1:FRC_RINGS] = 1.0 / 3.0  # 2F / (1 + F) = 0.5
    assert agreement(frc) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def seed7_cases():
    """``(scan, args, the halves agree, 4-pass filtered estimate, its halves' FRC)`` of
    the default simulation with seed 7 at 1e6 photons (the halves agree) and at 1e3
    (they do not)."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    cases = []
    for photons, agree in ((None, True), (1e3, False)):
        kw = {} if photons is None else {"photons_per_pattern": photons}
        scan = simulate_scan(SimulationConfig(seed=7, **kw))
        args = (torch.from_numpy(scan.diffraction), scan.positions_px,
                torch.from_numpy(scan.probe), 4)
        base, frc = frc_filtered_estimate(*args, amplitude_step=0.5, integer_grid=True)
        cases.append((scan, args, agree, base, frc))
    return cases


def test_extra_passes_run_only_where_the_halves_agree(seed7_cases):
    """Seed 7 at 1e6 photons: the halves agree (0.73 measured), the estimate is limited
    by its passes, and 2 extra passes raise its amplitude SSIM (0.909 -> 0.924 measured);
    at 1e3 photons they disagree and the estimate is bit for bit the plain one."""
    for scan, args, agree, base, frc in seed7_cases:
        more, _ = frc_filtered_estimate(*args, amplitude_step=0.5, integer_grid=True,
                                        extra_iterations=2)
        assert base.passes == 4
        assert (agreement(frc) >= EXTRA_PASS_AGREEMENT) is agree, agreement(frc)
        # the agreement that decided is recorded, the first halves' (not the continued)
        assert base.agreement == more.agreement == pytest.approx(agreement(frc))
        if agree:
            assert more.passes == 6
            gain = _amp_ssim(more, scan) - _amp_ssim(base, scan)
            assert gain > 0.005, gain
        else:
            assert more.passes == 4
            assert torch.equal(more.canvas, base.canvas)
    with pytest.raises(ValueError, match="extra_iterations must be >= 0"):
        frc_filtered_estimate(*args, extra_iterations=-1)


def test_no_agreement_and_no_extra_passes_where_the_halves_do_not_overlap():
    """Two patterns far apart: each half lights its own region, no FRC can be read, so
    there is no agreement to report (not a perfect 1) and no extra pass runs."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=16, seed=2))
    pos = np.array([[100.0, 100.0], [100.0, 300.0]])  # 32x32 windows 200 px apart
    args = (torch.from_numpy(scan.diffraction[:2]), pos, torch.from_numpy(scan.probe), 2)
    base, frc = frc_filtered_estimate(*args)
    more, _ = frc_filtered_estimate(*args, extra_iterations=2)
    np.testing.assert_array_equal(frc, np.ones_like(frc))
    assert base.agreement is None and more.agreement is None
    assert more.passes == base.passes == 2
    assert torch.equal(more.canvas, base.canvas)


def test_phase_momentum_runs_only_where_the_halves_agree(seed7_cases):
    """Seed 7 at 1e6 photons: the halves agree, the estimate runs with phase momentum
    (recorded) and finds the phase better (4 passes: phase SSIM 0.654 -> 0.715 measured),
    the amplitude as well (0.909 -> 0.911); at 1e3 photons they disagree: the halves are
    estimated again without it and the estimate is bit for bit the plain one, with the
    momentum halves' agreement (the one that decided) recorded."""
    for scan, args, agree, base, _ in seed7_cases:
        moved, _ = frc_filtered_estimate(*args, amplitude_step=0.5, integer_grid=True,
                                         phase_momentum=0.7)
        assert base.phase_momentum == 0.0 and moved.passes == base.passes == 4
        assert (moved.agreement >= EXTRA_PASS_AGREEMENT) is agree, moved.agreement
        if agree:
            assert moved.phase_momentum == 0.7
            gain = _amp_ssim(moved, scan, "phase_ssim") - _amp_ssim(base, scan, "phase_ssim")
            assert gain > 0.03, gain
            assert _amp_ssim(moved, scan) > _amp_ssim(base, scan)
        else:
            assert moved.phase_momentum == 0.0
            assert torch.equal(moved.canvas, base.canvas)
            assert moved.agreement != base.agreement  # the momentum halves' decided
    with pytest.raises(ValueError, match="phase_momentum must be in"):
        frc_filtered_estimate(*args, phase_momentum=1.0)


@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_over_relaxed_passes_estimate_their_plain_halves_first(monkeypatch, threshold):
    """With ``step_scale`` other than 1 the plain halves come first and the momentum's only
    where they agree: where nothing agrees (threshold above 1) the halves are estimated
    once and the estimate is bit for bit the one without momentum (its agreement too);
    where everything agrees (threshold 0) the momentum's halves decide and are used, as
    with plain passes."""
    import ptychopinn.physics.prior_frc as pf
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    monkeypatch.setattr(pf, "EXTRA_PASS_AGREEMENT", threshold)
    scan = simulate_scan(SimulationConfig(N=32, n_positions=49, seed=3, probe_kind="gaussian",
                                          photons_per_pattern=1e5))
    args = (torch.from_numpy(scan.diffraction), scan.positions_px,
            torch.from_numpy(scan.probe), 3)
    kw = dict(amplitude_step=0.5, step_scale=3.0, batch_size=16)
    calls = []
    real = pf.scan_error_reduction

    def counting(*a, **k):
        calls.append(k.get("subset") is not None and a[3] > 0)  # a half's passes
        return real(*a, **k)

    monkeypatch.setattr(pf, "scan_error_reduction", counting)
    moved, _ = frc_filtered_estimate(*args, phase_momentum=0.7, **kw)
    half_runs = sum(calls)
    plain, _ = frc_filtered_estimate(*args, **kw)
    if threshold > 1:
        assert half_runs == 2 + 2  # each half's shared first pass and its continuation
        assert moved.phase_momentum == 0.0 and torch.equal(moved.canvas, plain.canvas)
        assert moved.agreement == plain.agreement
    else:
        assert half_runs == 2 + 2 * 2  # the plain continuations, then the momentum's
        assert moved.phase_momentum == 0.7
        assert not torch.equal(moved.canvas, plain.canvas)
    # plain passes keep the momentum's halves first: they run twice where nothing agrees
    calls.clear()
    frc_filtered_estimate(*args, phase_momentum=0.7, amplitude_step=0.5, batch_size=16)
    assert sum(calls) == (2 + 2 * 2 if threshold > 1 else 2 + 2)
