"""The integrated centre-of-mass phase (`physics.com_phase`) and the scan prior's
start from it (`scan_error_reduction(start_phase='com')`, `model.prior_start`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.physics.com_phase import centre_of_mass_gradients, integrated_phase
from ptychopinn.physics.geometry import extract_patches
from ptychopinn.physics.prior_scan import scan_error_reduction
from ptychopinn.physics.propagation import far_field

N = 32


def _probe(sigma: float = 4.0) -> torch.Tensor:
    """A real Gaussian probe: no tilt of its own."""
    r = torch.arange(N, dtype=torch.float64) - N / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g.to(torch.complex64)


def _bump(shape, height: float = 1.5, width: float = 22.0) -> np.ndarray:
    """A smooth phase bump across the canvas (radians)."""
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    return height * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2))


def _grid_positions(shape, step: int = 5) -> np.ndarray:
    ys = np.arange(N / 2 + 2, shape[0] - N / 2 - 2, step)
    xs = np.arange(N / 2 + 2, shape[1] - N / 2 - 2, step)
    return np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2).astype(float)


def _patterns(obj: np.ndarray, pos: np.ndarray, probe: torch.Tensor) -> torch.Tensor:
    patches = extract_patches(torch.from_numpy(obj.astype(np.complex64)), torch.from_numpy(pos), N)
    return far_field(patches * probe).abs().float()


def test_centre_of_mass_gives_a_phase_ramp_gradient() -> None:
    shape = (80, 80)
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    pos = _grid_positions(shape, 9)
    probe = _probe()
    for a, b in ((0.10, -0.05), (-0.2, 0.0)):
        obj = np.exp(1j * (a * y + b * x))
        g = centre_of_mass_gradients(_patterns(obj, pos, probe))
        assert g.shape == (len(pos), 2)
        np.testing.assert_allclose(g.numpy(), np.tile([a, b], (len(pos), 1)), atol=2e-3)


def test_the_mask_counts_mirrored_pixels_only() -> None:
    amps = torch.ones(3, N, N)
    valid = torch.ones(N, N, dtype=torch.bool)
    valid[N // 2 + 5, N // 2 - 7] = False  # one bad pixel off the centre
    g = centre_of_mass_gradients(amps, valid)
    np.testing.assert_allclose(g.numpy(), 0.0, atol=1e-12)
    # an empty pattern has no centre: zero, not NaN
    assert torch.equal(centre_of_mass_gradients(torch.zeros(1, N, N)), torch.zeros(1, 2,
                                                                             dtype=torch.float64))
    with pytest.raises(ValueError, match=r"valid must be \(32, 32\)"):
        centre_of_mass_gradients(amps, torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"expected amplitudes \(n, N, N\)"):
        centre_of_mass_gradients(torch.ones(N, N))


def test_integration_recovers_a_smooth_phase_and_its_sign() -> None:
    shape = (130, 130)
    phi = _bump(shape)
    pos = _grid_positions(shape, 5)
    probe = _probe()
    ill = probe.abs() ** 2
    # each position's probe-weighted mean gradient: what the centre of mass measures
    gy, gx = np.gradient(phi)
    w = ill.double()
    top = torch.from_numpy(np.rint(pos - N / 2).astype(np.int64))
    g = np.stack([[float((torch.from_numpy(d[t0:t0 + N, t1:t1 + N]) * w).sum() / w.sum())
                   for d in (gy, gx)] for t0, t1 in top.tolist()])
    est = integrated_phase(g, pos, shape, ill).numpy().astype(float)
    lit = np.zeros(shape, bool)
    lit[int(pos[:, 0].min()):int(pos[:, 0].max()), int(pos[:, 1].min()):int(pos[:, 1].max())] = True
    a, b = est[lit] - est[lit].mean(), phi[lit] - phi[lit].mean()
    corr = float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))
    assert corr > 0.99, corr
    assert np.sqrt(np.mean((a - b) ** 2)) < 0.05 * np.ptp(phi)
    # the gradients the other way round give the phase the other way round
    flipped = integrated_phase(-g, pos, shape, ill).numpy()[lit]
    assert np.allclose(flipped - flipped.mean(), -a, atol=1e-3)
    with pytest.raises(ValueError, match="must both be"):
        integrated_phase(g[:-1], pos, shape, ill)
    assert torch.equal(integrated_phase(np.zeros((0, 2)), np.zeros((0, 2)), (5, 6), ill),
                       torch.zeros(5, 6))


def _phase_corr(est, obj: np.ndarray, pos: np.ndarray, probe: torch.Tensor) -> float:
    """Correlation of the estimate's phase with the truth's where the probe is bright."""
    mask = (probe.abs() ** 2 / (probe.abs() ** 2).max()) > 0.3
    a = est.patches(pos, N)[:, mask]
    b = extract_patches(torch.from_numpy(obj.astype(np.complex64)), torch.from_numpy(pos),
                        N)[:, mask]
    a = torch.angle(a * torch.exp(-1j * torch.angle((a * b.conj()).sum())))
    b = torch.angle(b)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()))


def test_the_prior_starting_from_the_centres_of_mass_has_the_low_frequencies() -> None:
    shape = (130, 130)
    rng = np.random.default_rng(0)
    texture = 0.15 * rng.standard_normal(shape)
    from scipy.ndimage import gaussian_filter

    phi = _bump(shape) + gaussian_filter(texture, 2.0) * 4
    obj = np.exp(1j * phi)
    pos = _grid_positions(shape, 5)
    probe = _probe()
    amps = _patterns(obj, pos, probe)
    corr = {}
    for start in ("flat", "com"):
        for passes in (0, 2):
            est = scan_error_reduction(amps, pos, probe, passes, start_phase=start)
            corr[start, passes] = _phase_corr(est, obj, pos, probe)
            if (start, passes) == ("flat", 0):  # the flat start has no phase at all
                assert torch.count_nonzero(est.canvas.imag) == 0
    assert corr["com", 0] > 0.8, corr  # the bump, before any pass
    # after 2 passes the flat start is still short of the bump (0.88), the com one is not
    assert corr["com", 2] > 0.99 and corr["flat", 2] < 0.95, corr
    # the flat start is the one without the option (bit for bit)
    flat = scan_error_reduction(amps, pos, probe, 2)
    assert torch.equal(flat.canvas, scan_error_reduction(amps, pos, probe, 2,
                                                         start_phase="flat").canvas)
    with pytest.raises(ValueError, match="start_phase must be one of"):
        scan_error_reduction(amps, pos, probe, 1, start_phase="dpc")


def test_prior_start_option_config_bundle_and_cli() -> None:
    from ptychopinn.bundle.format import manifest_config
    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser
    from ptychopinn.config import InferenceConfig, ModelConfig, TrainingConfig

    assert ModelConfig().prior_start == "flat"  # the default (docs/benchmarks.md)
    assert ModelConfig(prior_scope="neighbourhood").prior_start == "flat"
    assert ModelConfig(prior_iterations=0).prior_start == "flat"
    assert ModelConfig(prior_start="com").prior_start == "com"
    with pytest.raises(ValueError, match="prior_start 'com' needs the scan prior"):
        ModelConfig(prior_start="com", prior_scope="neighbourhood")
    with pytest.raises(ValueError, match="prior_start"):
        ModelConfig(prior_start="dpc")
    with pytest.raises(ValueError, match="prior_start"):
        InferenceConfig(prior_start="dpc")
    # bundles written before the option started flat
    raw = TrainingConfig(model=ModelConfig(prior_start="com")).model_dump(mode="json")
    del raw["model"]["prior_start"]
    assert manifest_config({"config": raw}, "old.bundle").model.prior_start == "flat"

    def start(*extra):
        args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz", *extra])
        return infer_config_from_args(args).prior_start

    assert start() is None  # as trained
    assert start("--prior-start", "com") == "com"
    assert start("--prior-start", "flat") == "flat"
    with pytest.raises(SystemExit):
        start("--prior-start", "dpc")


def test_a_com_start_is_kept_across_overrides_and_refused_without_a_scan_prior() -> None:
    from ptychopinn.config import ModelConfig, TrainingConfig
    from ptychopinn.config.io import with_overrides
    from ptychopinn.errors import ConfigError

    cfg = with_overrides(TrainingConfig(), {"model": {"prior_start": "com"}})
    assert cfg.model.prior_start == "com"
    assert with_overrides(cfg, {"model": {"prior_iterations": 6}}).model.prior_start == "com"
    # a neighbourhood or raw-diffraction model has no scan prior to start: refused, named
    with pytest.raises(ConfigError, match="prior_start 'com' needs the scan prior"):
        with_overrides(cfg, {"model": {"prior_scope": "neighbourhood"}})
    with pytest.raises(ValueError, match="found prior_scope 'scan', prior_iterations 0"):
        ModelConfig(prior_start="com", prior_iterations=0)


def _curved(a: float, sigma: float = 4.0) -> torch.Tensor:
    """The Gaussian probe times a quadratic phase ``exp(i a r^2)``."""
    r = torch.arange(N, dtype=torch.float64) - N / 2
    r2 = r[:, None] ** 2 + r[None, :] ** 2
    return (_probe(sigma).to(torch.complex128) * torch.exp(1j * a * r2)).to(torch.complex64)


def test_probe_phase_curvature_of_a_tilt_and_a_quadratic_phase() -> None:
    from ptychopinn.physics.com_phase import probe_phase_curvature

    sigma = 4.0
    assert probe_phase_curvature(_probe(sigma)) == pytest.approx(0.0, abs=1e-9)
    r = torch.arange(N, dtype=torch.float64) - N / 2
    tilt = torch.exp(1j * (0.3 * r[:, None] - 0.2 * r[None, :]))
    assert probe_phase_curvature(_probe(sigma) * tilt) == pytest.approx(0.0, abs=1e-6)
    # |P|^2 = exp(-r^2 / sigma^2): variance sigma^2 / 2 per axis, so C = 2 a sigma^2 / 2
    for a in (0.01, 0.03):
        assert probe_phase_curvature(_curved(a, sigma)) == pytest.approx(a * sigma**2, rel=0.03)
    # modes add; the sign of the curvature does not matter
    two = torch.stack([_curved(0.03, sigma), _curved(0.03, sigma)])
    assert probe_phase_curvature(two) == pytest.approx(probe_phase_curvature(_curved(-0.03)),
                                                       rel=1e-9)
    with pytest.raises(ValueError, match="no intensity"):
        probe_phase_curvature(torch.zeros(N, N, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"probe must be \(N, N\)"):
        probe_phase_curvature(torch.ones(2, 3, 4, 4, dtype=torch.complex64))


def test_a_curved_probe_reads_the_objects_amplitude_as_phase() -> None:
    """The reason for the limit: an amplitude-only object, ``|O|^2 = exp(2 b y)``, has no
    phase; under a flat-phased probe its centres of mass say so, under a curved one they
    show a phase gradient of ``C grad log |O|^2 = 2 b C``."""
    from ptychopinn.physics.com_phase import probe_phase_curvature

    shape = (80, 80)
    y = np.mgrid[: shape[0], : shape[1]][0].astype(float)
    b = 0.01
    obj = np.exp(b * y)  # amplitude only
    pos = _grid_positions(shape, 9)
    flat = centre_of_mass_gradients(_patterns(obj, pos, _probe())).numpy()
    np.testing.assert_allclose(flat, 0.0, atol=1e-6)
    probe = _curved(0.03)
    g = centre_of_mass_gradients(_patterns(obj, pos, probe)).numpy()
    expect = 2 * b * probe_phase_curvature(probe)
    np.testing.assert_allclose(g[:, 0], expect, rtol=0.05)
    np.testing.assert_allclose(g[:, 1], 0.0, atol=1e-6)


def test_the_scan_prior_warns_about_a_com_start_under_a_curved_probe(caplog) -> None:
    from ptychopinn.models.scan_prior import ScanPrior
    from ptychopinn.physics.com_phase import COM_CURVATURE_LIMIT

    shape = (80, 80)
    pos = _grid_positions(shape, 9)
    obj = np.exp(1j * _bump(shape))
    for a, warned in ((0.0, False), (0.15, True)):
        probe = _curved(a)
        amps = _patterns(obj, pos, probe)
        for start in ("flat", "com"):
            caplog.clear()
            with caplog.at_level("WARNING", logger="ptychopinn.models.scan_prior"):
                prior = ScanPrior(amps, pos, probe, 1.0, 1, 1, scope="scan", start_phase=start)
            said = [r.getMessage() for r in caplog.records]
            if start == "com" and warned:
                assert prior.probe_curvature > COM_CURVATURE_LIMIT
                assert len(said) == 1 and "prior start 'com'" in said[0], said
                assert f"{prior.probe_curvature:.2f} rad" in said[0]
            else:
                assert said == [], said
                assert (prior.probe_curvature is None) == (start == "flat")


def test_a_phase_integrator_is_linear_and_keeps_no_state_between_calls() -> None:
    """One factorisation serves every gradient set of a scan (the correction integrates
    once per pass): the result is linear in the gradients and the same however often
    and in whichever order the integrator is called, and it is `integrated_phase`'s."""
    from ptychopinn.physics.com_phase import PhaseIntegrator

    shape = (90, 100)
    pos = _grid_positions(shape, 6) + np.random.default_rng(4).uniform(-0.5, 0.5, (1, 2))
    ill = _probe().abs() ** 2
    rng = np.random.default_rng(5)
    g1, g2 = 0.02 * rng.standard_normal((2, len(pos), 2))
    integ = PhaseIntegrator(pos, shape, ill)
    a, b = integ(g1), integ(g2)
    assert a.shape == shape and a.dtype == torch.float32
    assert float(a.abs().max()) > 0.05  # not a trivial zero
    both = integ(g1 - 2.5 * g2)
    np.testing.assert_allclose(both.numpy(), (a - 2.5 * b).numpy(), atol=2e-5)
    assert torch.equal(integ(g1), a)  # no state carried from call to call
    assert torch.equal(integrated_phase(g2, pos, shape, ill), b)
    with pytest.raises(ValueError, match=rf"found \(3, 2\) and \({len(pos)}, 2\)"):
        integ(g1[:3])
    with pytest.raises(ValueError, match="gradients must be finite"):
        integ(np.full_like(g1, np.nan))
    with pytest.raises(ValueError, match="positions must be finite"):
        PhaseIntegrator(np.full((2, 2), np.inf), shape, ill)
    # its size, as bench_com_correction.py reports it: the grid covers the canvas at
    # `factor` pixels a cell (plus a window's margin) and the factors hold at least the
    # diagonal of the normal equations
    assert integ.grid_cells >= (shape[0] // integ.factor) * (shape[1] // integ.factor)
    assert integ.factor_nonzeros >= integ.grid_cells
    empty = PhaseIntegrator(np.zeros((0, 2)), shape, ill)
    assert (empty.grid_cells, empty.factor_nonzeros) == (0, 0)


@pytest.mark.parametrize("n", [32, 33])
def test_moments_in_the_ffts_layout_give_the_centred_patterns_centres(n) -> None:
    """The correction reads the predicted patterns' centres straight from ``fft2``
    (`moment_weights(centred=False)`, float32): the same gradients as
    `centre_of_mass_gradients` of the same patterns laid out centred, mask included."""
    from ptychopinn.physics.com_phase import intensity_centre_gradients, moment_weights

    rng = np.random.default_rng(n)
    inten = torch.from_numpy(rng.gamma(2.0, 1.0, (5, n, n))) ** 2
    inten[:, n // 2 + 3, n // 2 - 2] += 400.0  # off-centre weight: clearly non-zero
    inten[4] = 0.0  # a pattern without counts
    valid = torch.from_numpy(rng.uniform(size=(n, n)) > 0.1)
    for mask in (None, valid):
        want = centre_of_mass_gradients(inten.sqrt(), mask)
        assert float(want[:4].abs().min()) > 1e-4 and torch.equal(want[4], torch.zeros(2,
                                                                                dtype=want.dtype))
        w = moment_weights(n, mask, centred=False, dtype=torch.float32)
        got = intensity_centre_gradients(torch.fft.ifftshift(inten, dim=(-2, -1)).float(), w)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-7)  # float32 sums
    with pytest.raises(ValueError, match=rf"valid must be \({n}, {n}\)"):
        moment_weights(n, torch.ones(4, 4, dtype=torch.bool))


def _true_canvas_terms():
    """A scan of a phase bump under a curved probe, whole-pixel positions, and
    `prior_scan._far_fields`' leading arguments with the true object as the canvas."""
    from ptychopinn.physics import prior_update

    shape = (90, 90)
    rng = np.random.default_rng(6)
    pos = _grid_positions(shape, 7)  # whole pixels: the windows are the truth's patches
    obj = np.exp(1j * _bump(shape)) * (1 + 0.2 * rng.uniform(size=shape))
    probe = _curved(0.05)
    amps = _patterns(obj, pos, probe)
    canvas = torch.from_numpy(obj.astype(np.complex64))  # the truth as the canvas
    frac, corner = prior_update.window_corners(torch.from_numpy(pos), N)
    win = ((shape[0] - N + 1, shape[1] - N + 1, N, N), (shape[1], 1, shape[1], 1))
    p_hat = torch.fft.fft2(probe[None])
    far = (canvas.as_strided(*win), corner, p_hat, frac, None, None,
           lambda rows: amps[rows], None)
    return far, win, amps, canvas


def test_the_true_object_predicts_the_measured_centres_and_patterns() -> None:
    """The correction's model of the centres (each pattern's probe on the canvas's
    window, `prior_scan._far_fields`, in the FFT's layout) on the true object is the
    measured patterns' centres (laid out centred): the correction then turns nothing. Its
    misfit there is the data's own (none, noiseless); any turn raises it, on every pattern
    as on a checked subset, by what the turned canvas itself predicts."""
    from ptychopinn.physics import prior_scan
    from ptychopinn.physics.com_phase import moment_weights

    far, win, amps, canvas = _true_canvas_terms()
    shape = tuple(canvas.shape)
    every = torch.arange(len(amps))
    model, misfit = prior_scan._far_fields(
        *far, every, weights=moment_weights(N, centred=False, dtype=torch.float32))
    measured = centre_of_mass_gradients(amps)
    assert float(measured.abs().max()) > 0.01
    np.testing.assert_allclose(model.numpy(), measured.numpy(), atol=2e-5)
    total = float(amps.square().sum())
    assert misfit < 1e-8 * total
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    turn = torch.polar(torch.ones(shape), torch.from_numpy(0.3 * np.sin(xx / 9.0)).float())
    turned = prior_scan._far_fields(*far, every, turn_windows=turn.as_strided(*win))[1]
    assert turned > 1e-3 * total
    # the same as the turned canvas's own misfit
    own = canvas * turn
    direct = prior_scan._far_fields(own.as_strided(*win), *far[1:], every)[1]
    assert turned == pytest.approx(direct, rel=1e-4)
    # a checked subset: its own patterns' misfit, from either call
    sub = every[::3]
    mask = torch.zeros(len(amps), dtype=torch.bool).index_fill_(0, sub, True)
    part = prior_scan._far_fields(*far, sub, turn_windows=turn.as_strided(*win))[1]
    masked = prior_scan._far_fields(own.as_strided(*win), *far[1:], every, checked=mask)[1]
    assert part == pytest.approx(masked, rel=1e-4)
    assert 0.2 * turned < part < 0.5 * turned


def test_auto_starts_from_the_centres_of_mass_only_under_a_flat_phased_probe(caplog) -> None:
    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser
    from ptychopinn.config import ModelConfig
    from ptychopinn.models.scan_prior import ScanPrior

    shape = (80, 80)
    pos = _grid_positions(shape, 9)
    obj = np.exp(1j * _bump(shape))
    for a, chosen in ((0.0, "com"), (0.15, "flat")):
        probe = _curved(a)
        amps = _patterns(obj, pos, probe)
        with caplog.at_level("WARNING", logger="ptychopinn.models.scan_prior"):
            auto = ScanPrior(amps, pos, probe, 1.0, 2, 1, scope="scan", start_phase="auto")
        assert auto.start_phase == chosen and auto.probe_curvature is not None
        assert not [r for r in caplog.records if r.levelname == "WARNING"]  # a choice, no warning
        same = ScanPrior(amps, pos, probe, 1.0, 2, 1, scope="scan", start_phase=chosen)
        assert torch.equal(auto.estimate.canvas, same.estimate.canvas)
    # without a scan prior 'auto' is 'flat'; 'com' is refused
    neigh = ScanPrior(amps[:9], pos[:9], _probe(), 1.0, 1, 3, start_phase="auto")
    assert neigh.start_phase == "flat" and neigh.probe_curvature is None
    with pytest.raises(ValueError, match="needs scope 'scan'"):
        ScanPrior(amps[:9], pos[:9], _probe(), 1.0, 1, 3, start_phase="com")
    with pytest.raises(ValueError, match="start_phase must be one of"):
        ScanPrior(amps[:9], pos[:9], _probe(), 1.0, 1, 3, scope="scan", start_phase="dpc")
    assert ModelConfig(prior_start="auto", prior_scope="neighbourhood").prior_start == "auto"
    assert ModelConfig(prior_start="auto", prior_iterations=0).prior_start == "auto"
    args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz",
                                      "--prior-start", "auto"])
    assert infer_config_from_args(args).prior_start == "auto"


def _textured_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 130 x 130 object with a phase bump plus fine phase texture and a textured
    amplitude (seed 3), and a grid of positions 5 px apart."""
    from scipy.ndimage import gaussian_filter

    shape = (130, 130)
    rng = np.random.default_rng(3)
    phi = _bump(shape) + 4 * gaussian_filter(0.15 * rng.standard_normal(shape), 2.0)
    amp = np.exp(3 * gaussian_filter(rng.standard_normal(shape), 3.0))  # amplitude texture
    return amp * np.exp(1j * phi), _grid_positions(shape, 5)


def test_the_centre_of_mass_correction_converges_the_phase_under_a_curved_probe() -> None:
    """Under a curved probe the com start reads the amplitude as phase; the correction
    (measured minus predicted centres of mass, between passes) does not: with it the
    low-frequency phase is there after 3 passes, without it not."""
    obj, pos = _textured_scene()
    probe = _curved(0.15)  # C = 2.4 rad: the com start is misled
    amps = _patterns(obj, pos, probe)
    corr = {}
    for name, kw in (("flat", {}), ("com", {"start_phase": "com"}),
                     ("corrected", {"com_correction": True})):
        est = scan_error_reduction(amps, pos, probe, 3, **kw)
        corr[name] = _phase_corr(est, obj, pos, probe)
    assert corr["corrected"] > 0.97, corr
    assert corr["corrected"] > corr["flat"] + 0.05, corr
    assert corr["com"] < corr["corrected"] - 0.05, corr
    # one pass has no pass after it to correct before: the plain estimate, bit for bit
    one = scan_error_reduction(amps, pos, probe, 1)
    assert torch.equal(one.canvas, scan_error_reduction(amps, pos, probe, 1,
                                                        com_correction=True).canvas)


def test_a_correction_is_applied_only_where_it_lowers_the_misfit() -> None:
    """``com_check`` (the default): under a curved probe every correction lowers the
    canvas's misfit to the patterns and is applied (the unchecked run bit for bit); under a
    probe whose quadratic phase aliases on the grid (``exp(i 0.4 r^2)``: 12.8 rad per pixel
    at the patch's edge) the predicted centres mislead, the unchecked corrections turn the
    phase away from the truth (correlation below 0 here) and the checked run rejects each:
    the plain estimate bit for bit."""
    obj, pos = _textured_scene()
    for a, applied in ((0.15, True), (0.4, False)):
        probe = _curved(a)
        amps = _patterns(obj, pos, probe)
        plain = scan_error_reduction(amps, pos, probe, 4)
        checked = scan_error_reduction(amps, pos, probe, 4, com_correction=True)
        unchecked = scan_error_reduction(amps, pos, probe, 4, com_correction=True,
                                         com_check=False)
        if applied:
            assert torch.equal(checked.canvas, unchecked.canvas)
            assert _phase_corr(checked, obj, pos, probe) > _phase_corr(plain, obj, pos,
                                                                       probe) + 0.5
        else:
            assert torch.equal(checked.canvas, plain.canvas)
            assert _phase_corr(unchecked, obj, pos, probe) < 0.0
            assert _phase_corr(plain, obj, pos, probe) > 0.8


def test_a_large_scan_checks_its_turns_on_a_spread_subset(monkeypatch) -> None:
    """Scans of at least twice `COM_CHECK_PATTERNS` patterns check each turn on every k-th
    pattern in raster order (``k = n // COM_CHECK_PATTERNS``), spread over the whole scan;
    the corrections still converge the phase where they lower the misfit."""
    from ptychopinn.physics import prior_scan

    shape = (130, 130)
    pos = _grid_positions(shape, 5)
    n_pat = len(pos)
    monkeypatch.setattr(prior_scan, "COM_CHECK_PATTERNS", 16)
    k = n_pat // 16
    assert k > 1
    checked = []
    real = prior_scan._far_fields
    monkeypatch.setattr(prior_scan, "_far_fields", lambda *a, **kw: (
        # a[8]: the patterns checked (after the eight canvas and scan terms)
        checked.append(a[8].clone()) if kw.get("turn_windows") is not None else None)
        or real(*a, **kw))
    obj = np.exp(1j * _bump(shape))
    probe = _curved(0.1)
    amps = _patterns(obj, pos, probe)
    est = scan_error_reduction(amps, pos, probe, 3, com_correction=True)
    assert len(checked) == 2  # before passes 1 and 2
    raster = np.lexsort((pos[:, 1], pos[:, 0]))
    want = np.sort(raster[::k])
    for rows in checked:
        np.testing.assert_array_equal(rows.numpy(), want)
    ys = pos[want, 0]
    assert ys.min() < shape[0] * 0.3 and ys.max() > shape[0] * 0.7  # spread over the scan
    plain = scan_error_reduction(amps, pos, probe, 3)
    assert _phase_corr(est, obj, pos, probe) > _phase_corr(plain, obj, pos, probe) + 0.1


def test_the_centres_read_off_the_passes_correct_the_phase_as_well(monkeypatch) -> None:
    """``com_from_passes``: the predicted centres of mass read off each pattern's own update
    in the pass before (stale by less than a pass) converge the low-frequency phase under a
    curved probe as the fresh predictions do, without predicting the centres afresh (no
    `_far_fields` with weights in a run from the start; one, at its first correction, in a
    continuation); without the correction the option changes nothing."""
    from ptychopinn.physics import prior_scan

    obj, pos = _textured_scene()
    probe = _curved(0.15)
    amps = _patterns(obj, pos, probe)
    fresh_calls = []  # predictions of the centres (not the check's misfits)
    fresh = prior_scan._far_fields
    monkeypatch.setattr(prior_scan, "_far_fields", lambda *a, **k: (
        fresh_calls.append(1) if k.get("weights") is not None else None) or fresh(*a, **k))
    flat = _phase_corr(scan_error_reduction(amps, pos, probe, 3), obj, pos, probe)
    est = {}
    for from_passes in (False, True):
        fresh_calls.clear()
        est[from_passes] = scan_error_reduction(amps, pos, probe, 3, com_correction=True,
                                                com_from_passes=from_passes)
        assert len(fresh_calls) == (0 if from_passes else 2)  # before passes 1 and 2
    corr = {k: _phase_corr(e, obj, pos, probe) for k, e in est.items()}
    # (0.968 against 0.984 here: the first correction reads pass 0's fields, some of the
    # flat start's; the flat start alone: 0.23)
    assert corr[True] > 0.95 and corr[True] > flat + 0.5, (corr, flat)
    assert abs(corr[True] - corr[False]) < 0.03, corr
    assert not torch.equal(est[True].canvas, est[False].canvas)  # the centres were read off
    # a continuation has no pass before it to read them off: its first correction predicts
    frame = (est[True].origin_px, tuple(est[True].canvas.shape))
    first = scan_error_reduction(amps, pos, probe, 1, com_correction=True, frame=frame,
                                 com_from_passes=True)
    fresh_calls.clear()
    scan_error_reduction(amps, pos, probe, 2, start=first.canvas, first_pass=1,
                         com_correction=True, frame=frame, com_from_passes=True)
    assert len(fresh_calls) == 1
    # without the correction there is nothing to read them for
    plain = scan_error_reduction(amps, pos, probe, 3)
    assert torch.equal(plain.canvas, scan_error_reduction(amps, pos, probe, 3,
                                                          com_from_passes=True).canvas)


def test_com_correction_option_config_bundle_cli_and_reconstruction() -> None:
    from ptychopinn.bundle.format import manifest_config
    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser
    from ptychopinn.config import InferenceConfig, ModelConfig, TrainingConfig
    from ptychopinn.config.io import with_overrides
    from ptychopinn.errors import ConfigError
    from ptychopinn.models.scan_prior import ScanPrior

    # on with the scan prior, off without one; asked for without one, refused
    assert ModelConfig().prior_com_correction is True
    assert ModelConfig(prior_scope="neighbourhood").prior_com_correction is False
    assert ModelConfig(prior_iterations=0).prior_com_correction is False
    assert ModelConfig(prior_com_correction=False).prior_com_correction is False
    with pytest.raises(ValueError, match="prior_com_correction true needs the scan prior"):
        ModelConfig(prior_com_correction=True, prior_iterations=0)
    cfg = with_overrides(TrainingConfig(), {"model": {"prior_com_correction": True}})
    assert cfg.model.prior_com_correction is True
    assert with_overrides(cfg, {"model": {"prior_iterations": 6}}).model.prior_com_correction
    # switching to the neighbourhood prior lets the resolved default go with the scan
    # prior's; asking for the correction with it in the same breath is refused
    assert not with_overrides(cfg, {"model": {"prior_scope": "neighbourhood"}}
                              ).model.prior_com_correction
    with pytest.raises(ConfigError, match="prior_com_correction true needs the scan prior"):
        with_overrides(cfg, {"model": {"prior_scope": "neighbourhood",
                                       "prior_com_correction": True}})
    # an explicit off is kept across unrelated overrides
    off = with_overrides(TrainingConfig(), {"model": {"prior_com_correction": False}})
    assert not with_overrides(off, {"model": {"n_filters_scale": 0.5}}).model.prior_com_correction
    raw = cfg.model_dump(mode="json")
    del raw["model"]["prior_com_correction"]
    assert manifest_config({"config": raw}, "old.bundle").model.prior_com_correction is False
    with pytest.raises(ValueError, match="prior_com_correction"):
        InferenceConfig(prior_com_correction="maybe")

    def opt(*extra):
        args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz", *extra])
        return infer_config_from_args(args).prior_com_correction

    assert opt() is None and opt("--prior-com-correction", "on") is True
    assert opt("--prior-com-correction", "off") is False
    with pytest.raises(SystemExit):
        opt("--prior-com-correction", "yes")
    # the prior takes it from the model's config unless overridden
    shape = (80, 80)
    pos = _grid_positions(shape, 9)
    amps = _patterns(np.exp(1j * _bump(shape)), pos, _probe())
    kw = dict(prior_amplitude_scale=1.0, train_input_scale=0.0)
    on = ScanPrior.for_config(ModelConfig(prior_com_correction=True), amps, pos, _probe(), **kw)
    assert on.com_correction is True
    off = ScanPrior.for_config(ModelConfig(prior_com_correction=True), amps, pos, _probe(),
                               com_correction=False, **kw)
    assert off.com_correction is False
    assert not torch.equal(on.estimate.canvas, off.estimate.canvas)
    with pytest.raises(ValueError, match="com_correction needs scope 'scan'"):
        ScanPrior(amps, pos, _probe(), 1.0, 1, 3, com_correction=True)


def test_a_corrected_run_split_into_continuations_is_the_whole_run() -> None:
    """The corrections fall between passes of the run, not of each call: k passes and
    then the rest from their canvas with ``first_pass=k`` give the whole run bit for bit
    (the FRC-filtered prior splits its halves' runs so)."""
    shape = (80, 80)
    pos = _grid_positions(shape, 6)
    probe = _curved(0.05)
    amps = _patterns(np.exp(1j * _bump(shape)), pos, probe)
    whole = scan_error_reduction(amps, pos, probe, 3, com_correction=True)
    assert not torch.equal(whole.canvas, scan_error_reduction(amps, pos, probe, 3).canvas)
    frame = (whole.origin_px, tuple(whole.canvas.shape))
    for k in (1, 2):
        first = scan_error_reduction(amps, pos, probe, k, com_correction=True, frame=frame)
        rest = scan_error_reduction(amps, pos, probe, 3 - k, start=first.canvas, first_pass=k,
                                    com_correction=True, frame=frame)
        assert torch.equal(rest.canvas, whole.canvas), k


def test_inference_runs_records_and_refuses_the_prior_options(tmp_path) -> None:
    """`InferenceConfig.prior_com_correction` / ``prior_start`` reach the prior and are
    recorded (result and reconstruction.npz); a neighbourhood-prior model refuses them,
    naming the bundle."""
    from ptychopinn import api
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.config import InferenceConfig, TrainingConfig
    from ptychopinn.errors import ConfigError
    from ptychopinn.inference.reconstruct import write_outputs
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=64, seed=3))
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), 4.0)
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 2})
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)
    one = {"execution": {"num_threads": 1}, "figures": False}
    plain = api.reconstruct(tmp_path / "model", scan, InferenceConfig(**one))
    assert plain.prior_com_correction is True and plain.prior_start == "flat"  # the default
    fixed = api.reconstruct(tmp_path / "model", scan,
                            InferenceConfig(prior_com_correction=False, prior_start="auto", **one))
    assert fixed.prior_com_correction is False and fixed.prior_start == "com"  # a flat probe
    assert np.abs(fixed.object - plain.object).max() > 1e-4
    for rec, name in ((fixed, "fixed"), (plain, "plain")):
        write_outputs(rec, tmp_path / name, scan=scan, figures=False)
    saved = np.load(tmp_path / "fixed" / "reconstruction.npz")
    assert not bool(saved["prior_com_correction"]) and str(saved["prior_start"]) == "com"
    saved = np.load(tmp_path / "plain" / "reconstruction.npz")
    assert bool(saved["prior_com_correction"]) and str(saved["prior_start"]) == "flat"
    ncfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 1,
                                 "prior_scope": "neighbourhood"})
    save_pinn(tmp_path / "neigh", PtychoPINN(ncfg.model, probe), ncfg)
    for bad in ({"prior_com_correction": True}, {"prior_start": "com"}):
        with pytest.raises(ConfigError, match="needs a model with the scan prior.*neigh"):
            api.reconstruct(tmp_path / "neigh", scan, InferenceConfig(**bad, **one))


@pytest.mark.parametrize("f, grid", [(4, (7, 9)), (1, (5, 6)), (8, (1, 3)), (3, (2, 1))])
def test_the_grid_reaches_the_canvas_by_bilinear_interpolation(f, grid) -> None:
    """`_to_canvas` (one axis at a time) is torch's bilinear ``grid_sample`` of the grid
    with its nodes at ``i f + (f - 1) / 2`` and the edges held beyond them."""
    from ptychopinn.physics.com_phase import _to_canvas

    phi = np.random.default_rng(f).standard_normal(grid)
    shape = (grid[0] * f + 5, grid[1] * f + 3)
    yy = (torch.arange(shape[0], dtype=torch.float64) - (f - 1) / 2.0) / f
    xx = (torch.arange(shape[1], dtype=torch.float64) - (f - 1) / 2.0) / f
    gy, gx = torch.meshgrid(yy / max(grid[0] - 1, 1) * 2 - 1, xx / max(grid[1] - 1, 1) * 2 - 1,
                            indexing="ij")
    want = torch.nn.functional.grid_sample(
        torch.from_numpy(phi)[None, None], torch.stack([gx, gy], -1)[None], mode="bilinear",
        padding_mode="border", align_corners=True)[0, 0]
    got = _to_canvas(phi, shape, f)
    assert got.shape == shape and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
