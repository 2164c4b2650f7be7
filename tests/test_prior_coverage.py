"""The scan's coverage (`physics.coverage`) and the plain prior's passes it asks for
(`models.scan_prior.coverage_passes`, ``model.prior_coverage_passes``)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.models.scan_prior import (
    COVERAGE_REFERENCE,
    MAX_COVERAGE_PASSES,
    ScanPrior,
    coverage_agreement,
    coverage_passes,
    overrelaxed_coverage_warning,
)
from ptychopinn.physics.coverage import scan_coverage
from ptychopinn.physics.prior_frc import EXTRA_PASS_AGREEMENT
from ptychopinn.simulation import SimulationConfig, simulate_scan


def _square_probe(n: int, side: int, value: complex = 1.0) -> torch.Tensor:
    p = torch.zeros(n, n, dtype=torch.complex64)
    lo = (n - side) // 2
    p[lo : lo + side, lo : lo + side] = value
    return p


def _raster(count: int, step: float, origin: float = 100.0) -> np.ndarray:
    g = origin + step * np.arange(count, dtype=np.float64)
    return np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


def test_coverage_counts_probe_footprints_per_lit_pixel() -> None:
    """A flat square probe tiling the plane once covers every lit pixel once; at half
    its side as the step, four times inside and less at the edges; the probe's scale,
    its modes' split, the scan's translation and the positions' order change nothing."""
    probe = _square_probe(32, 8)
    assert scan_coverage(_raster(6, 8.0), probe) == pytest.approx(1.0)
    dense = scan_coverage(_raster(12, 4.0), probe)
    # a 12 x 12 raster at step 4 of an 8-px square: 52 x 52 pixels lit 144 * 64 times
    assert dense == pytest.approx(144 * 64 / 52**2)
    assert scan_coverage(_raster(12, 4.0), _square_probe(32, 8, 3 - 2j)) == pytest.approx(dense)
    modes = torch.stack([0.6 * probe, 0.8 * probe])
    assert scan_coverage(_raster(12, 4.0), modes) == pytest.approx(dense)
    pos = _raster(12, 4.0)
    shuffled = pos[np.random.default_rng(0).permutation(len(pos))] + np.array([13.0, -7.0])
    assert scan_coverage(shuffled, probe) == pytest.approx(dense)


def test_coverage_is_the_windows_summed_one_by_one() -> None:
    """The convolution gives what adding every pattern's window of the probe intensity to
    the canvas one at a time gives (random positions, a random complex probe)."""
    rng = np.random.default_rng(4)
    n = 16
    probe = torch.from_numpy((rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
                             .astype(np.complex64))
    pos = rng.uniform(40, 90, size=(60, 2))
    inten = (probe.abs() ** 2).double().numpy()
    corner = np.round(pos - n / 2).astype(int)
    corner -= corner.min(axis=0)
    canvas = np.zeros(tuple(corner.max(axis=0) + n))
    for y, x in corner:
        canvas[y : y + n, x : x + n] += inten
    lit = canvas >= 0.1 * canvas.max()
    want = canvas[lit].mean() / inten.max()
    assert scan_coverage(pos, probe) == pytest.approx(want, rel=1e-5)


def test_coverage_falls_with_the_scan_step() -> None:
    """Simulated scans: the default raster (steps of N / 8 under a disk of 0.4 N) covers
    its pixels several times over, steps of N / 4 (the 16 px of N = 64) about once."""
    values = []
    for step in (4.0, 6.0, 8.0):
        scan = simulate_scan(SimulationConfig(N=32, n_positions=144, step_px=step, seed=3,
                                              photons_per_pattern=None))
        values.append(scan_coverage(scan.positions_px, torch.as_tensor(scan.probe)))
    assert values[0] > 4.0 and values[2] < 1.6
    assert values[0] > values[1] > values[2]


def test_coverage_refuses_bad_input() -> None:
    probe = _square_probe(16, 4)
    with pytest.raises(ValueError, match="positions must be"):
        scan_coverage(np.zeros((0, 2)), probe)
    with pytest.raises(ValueError, match="positions must be"):
        scan_coverage(np.array([[1.0, np.nan]]), probe)
    with pytest.raises(ValueError, match="no intensity"):
        scan_coverage(_raster(3, 4.0), torch.zeros(16, 16, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"probe must be \(N, N\)"):
        scan_coverage(_raster(3, 4.0), torch.zeros(16, 8, dtype=torch.complex64))


def test_coverage_passes() -> None:
    assert coverage_passes(4, 4.8) == 4 and coverage_passes(4, COVERAGE_REFERENCE) == 4
    assert coverage_passes(4, 2.28) == 7  # ceil(4 (3 / 2.28)^2) = ceil(6.93)
    assert coverage_passes(4, 1.6) == 15  # ceil(14.06)
    assert coverage_passes(4, 1.32) == MAX_COVERAGE_PASSES == 16  # 21 without the cap
    assert coverage_passes(4, 0.5) == MAX_COVERAGE_PASSES
    assert coverage_passes(MAX_COVERAGE_PASSES + 6, 0.5) == MAX_COVERAGE_PASSES + 6
    with pytest.raises(ValueError, match="coverage must be > 0"):
        coverage_passes(4, 0.0)


def _low_coverage_scan():
    scan = simulate_scan(SimulationConfig(N=32, n_positions=64, step_px=7.0, seed=5))
    return torch.as_tensor(scan.diffraction).float(), scan.positions_px, torch.as_tensor(scan.probe)


def test_the_plain_prior_runs_more_passes_on_a_scan_that_overlaps_less(caplog) -> None:
    """At training and inference alike (`ScanPrior.for_config`): the model's passes scaled
    by the scan's coverage, logged; off with ``model.prior_coverage_passes=False``; an
    explicit pass count (infer --prior-iterations) and over-relaxed passes run as given."""
    amps, pos, probe = _low_coverage_scan()
    coverage = scan_coverage(pos, probe)
    want = coverage_passes(4, coverage)
    assert coverage < COVERAGE_REFERENCE and want > 4
    kw = dict(prior_amplitude_scale=1.0, train_input_scale=0.0)
    cfg = ModelConfig(N=32)
    assert cfg.prior_coverage_passes is True and cfg.prior_iterations == 4
    with caplog.at_level(logging.INFO, logger="ptychopinn.models.scan_prior"):
        scaled = ScanPrior.for_config(cfg, amps, pos, probe, **kw)
    assert scaled.passes == want
    assert f"prior passes: {want} instead of the model's 4" in caplog.text
    plain = ScanPrior.for_config(ModelConfig(N=32, prior_coverage_passes=False), amps, pos,
                                 probe, **kw)
    assert plain.passes == 4
    assert not torch.equal(plain.estimate.canvas, scaled.estimate.canvas)
    same = ScanPrior.for_config(ModelConfig(N=32, prior_iterations=want,
                                            prior_coverage_passes=False), amps, pos, probe, **kw)
    assert torch.equal(same.estimate.canvas, scaled.estimate.canvas)
    assert ScanPrior.for_config(cfg, amps, pos, probe, iterations=5, **kw).passes == 5
    # over-relaxed passes are not scaled by the coverage (with the halves, as before
    # model.prior_frc_min_coverage; without them, a fixed number more: test_prior_min_coverage)
    relaxed = ScanPrior.for_config(ModelConfig(N=32, prior_step_scale=2.0,
                                               prior_frc_min_coverage=0.0), amps, pos, probe,
                                   **kw)
    assert relaxed.passes == 4
    # the halves' agreement gate of the extra passes and momentum follows the coverage too
    assert scaled.agreement_threshold == pytest.approx(coverage_agreement(coverage))
    assert scaled.agreement_threshold < EXTRA_PASS_AGREEMENT
    assert plain.agreement_threshold == relaxed.agreement_threshold == EXTRA_PASS_AGREEMENT


def test_an_over_relaxed_prior_warns_on_a_scan_that_overlaps_less(caplog) -> None:
    """The featureless recipe's passes are not scaled (above); below the reference coverage
    training and inference warn that its prior converges less there, naming the coverage
    and what to do; a well-covered scan and a plain prior get no such warning."""
    assert overrelaxed_coverage_warning(4.8) is None
    assert overrelaxed_coverage_warning(COVERAGE_REFERENCE) is None
    text = overrelaxed_coverage_warning(2.33)
    assert text is not None and "coverage 2.33 is below 3.0" in text
    assert "--refine-epochs" in text and "featureless" in text
    assert "prior_frc_min_coverage" in text
    # without the FRC filter's halves (a model of now, below its minimum coverage) no warning
    assert overrelaxed_coverage_warning(2.33, frc_filter=False) is None
    with pytest.raises(ValueError, match="coverage must be > 0"):
        overrelaxed_coverage_warning(0.0)
    amps, pos, probe = _low_coverage_scan()
    kw = dict(prior_amplitude_scale=1.0, train_input_scale=0.0)
    # the halves on any scan: a bundle from before model.prior_frc_min_coverage
    relaxed = ModelConfig(N=32, prior_step_scale=3.0, prior_frc_min_coverage=0.0)
    with caplog.at_level(logging.WARNING, logger="ptychopinn.models.scan_prior"):
        ScanPrior.for_config(relaxed, amps, pos, probe, **kw)
    coverage = scan_coverage(pos, probe)
    assert f"coverage {coverage:.2f} is below" in caplog.text
    caplog.clear()
    assert coverage < ModelConfig().prior_frc_min_coverage
    with caplog.at_level(logging.WARNING, logger="ptychopinn.models.scan_prior"):
        ScanPrior.for_config(ModelConfig(N=32, prior_step_scale=3.0), amps, pos, probe, **kw)
    assert "is below" not in caplog.text  # today's default leaves the halves out instead
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ptychopinn.models.scan_prior"):
        ScanPrior.for_config(ModelConfig(N=32), amps, pos, probe, **kw)  # plain: scaled instead
        dense = simulate_scan(SimulationConfig(N=32, n_positions=64, seed=5))
        assert scan_coverage(dense.positions_px, torch.as_tensor(dense.probe)) >= COVERAGE_REFERENCE
        ScanPrior.for_config(relaxed, torch.as_tensor(dense.diffraction).float(),
                             dense.positions_px, torch.as_tensor(dense.probe), **kw)
    assert "is below" not in caplog.text


def test_coverage_agreement() -> None:
    assert coverage_agreement(4.8) == coverage_agreement(3.0) == EXTRA_PASS_AGREEMENT
    assert coverage_agreement(1.5) == pytest.approx(EXTRA_PASS_AGREEMENT / 2)
    with pytest.raises(ValueError, match="coverage must be > 0"):
        coverage_agreement(-1.0)


def test_the_agreement_threshold_decides_the_momentum_and_extra_passes() -> None:
    """`frc_filtered_estimate`'s ``agreement_threshold``: at 0 the halves' momentum and
    extra passes always run, at 1 never; the agreement itself is the same."""
    from ptychopinn.physics.prior_frc import frc_filtered_estimate

    amps, pos, probe = _low_coverage_scan()
    kw = dict(extra_iterations=2, phase_momentum=0.7, integer_grid=True)
    low, _ = frc_filtered_estimate(amps, pos, probe, 3, agreement_threshold=0.0, **kw)
    high, _ = frc_filtered_estimate(amps, pos, probe, 3, agreement_threshold=1.0, **kw)
    assert (low.passes, low.phase_momentum) == (5, 0.7)
    assert (high.passes, high.phase_momentum) == (3, 0.0)
    assert not torch.equal(low.canvas, high.canvas)
    with pytest.raises(ValueError, match="agreement_threshold"):
        frc_filtered_estimate(amps, pos, probe, 3, agreement_threshold=1.5)


def test_bundles_without_the_option_run_their_passes() -> None:
    """A bundle written before ``model.prior_coverage_passes`` keeps its passes on any scan."""
    from ptychopinn.bundle.format import manifest_config
    from ptychopinn.config import TrainingConfig

    raw = TrainingConfig().model_dump(mode="json")
    del raw["model"]["prior_coverage_passes"]
    assert manifest_config({"config": raw}, "old.safetensors").model.prior_coverage_passes is False
    raw = TrainingConfig().model_dump(mode="json")
    assert manifest_config({"config": raw}, "new.safetensors").model.prior_coverage_passes is True


def test_the_coverage_benchmark_reports_each_scan(tmp_path, capsys) -> None:
    """`benchmarks/bench_coverage.py`: each scan file's coverage and the plain passes the
    rule gives, as the library computes them."""
    import sys
    from pathlib import Path

    from ptychopinn import api

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_coverage

    files = {}
    for step in (4.0, 8.0):
        files[step] = tmp_path / f"step{step:g}.npz"
        api.simulate(SimulationConfig(N=32, n_positions=144, step_px=step, seed=3,
                                      photons_per_pattern=None), files[step])
    rows = bench_coverage.main(["--scan", "dense", str(files[4.0]), "--scan", "sparse",
                                str(files[8.0])])
    for row, step in zip(rows, (4.0, 8.0), strict=True):
        scan = simulate_scan(SimulationConfig(N=32, n_positions=144, step_px=step, seed=3,
                                              photons_per_pattern=None))
        cov = scan_coverage(scan.positions_px, torch.as_tensor(scan.probe))
        assert row[1:] == [144, 32, f"{cov:.2f}", coverage_passes(4, cov)]
    assert rows[0][4] == 4 and rows[1][4] > 4
    assert "| sparse | 144 | 32 |" in capsys.readouterr().out
