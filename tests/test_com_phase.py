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
    assert corr["flat", 0] == pytest.approx(0.0, abs=1e-6)  # the flat start has no phase
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
    with pytest.raises(ValueError, match="prior_start 'com' needs prior_scope 'scan'"):
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


def test_switching_the_scope_lets_the_start_default_again() -> None:
    from ptychopinn.config import TrainingConfig
    from ptychopinn.config.io import with_overrides

    cfg = with_overrides(TrainingConfig(), {"model": {"prior_start": "com"}})
    assert cfg.model.prior_start == "com"
    other = with_overrides(cfg, {"model": {"prior_scope": "neighbourhood"}})
    assert other.model.prior_start == "flat"  # defaults again for the new scope
    kept = with_overrides(cfg, {"model": {"prior_iterations": 6}})
    assert kept.model.prior_start == "flat"
