"""Over-relaxed priors on scans covered less than ``model.prior_frc_min_coverage`` times:
the whole scan's passes without the FRC filter's halves (`models.scan_prior.ScanPrior.for_config`)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.models.scan_prior import (
    LOW_COVERAGE_EXTRA_PASSES,
    LOW_DOSE_PHOTONS,
    ScanPrior,
    low_dose_warning,
    measured_photons,
)
from ptychopinn.physics.coverage import scan_coverage
from ptychopinn.physics.prior_frc import frc_filtered_estimate
from ptychopinn.physics.prior_orders import order_averaged_estimate
from ptychopinn.simulation import SimulationConfig, simulate_scan
from test_prior_scan import _amp_error  # rms amplitude error over the well-lit pixels

KW = dict(prior_amplitude_scale=1.0, train_input_scale=0.0)


def _gaussian_scan(step_px: float, n_positions: int = 64, seed: int = 2):
    scan = simulate_scan(SimulationConfig(n_positions=n_positions, seed=seed,
                                          probe_kind="gaussian", step_px=step_px))
    return scan, torch.from_numpy(scan.diffraction).float(), torch.from_numpy(scan.probe)


def test_the_whole_scan_converges_further_than_its_halves_at_low_coverage() -> None:
    """Under a Gaussian beam with steps of 12 px (coverage 1.4 here) the featureless recipe's
    passes on the whole scan, 8 more of them, as `ScanPrior` runs them there (two mini-batch
    orders, the centres of mass read off the passes), leave less amplitude error than its
    halves and the FRC filter (the reason the halves are left out there). One order alone
    leaves 0.61-0.85 times the halves' error on this scan, by the order (and the CPU's float
    rounding, which the over-relaxation amplifies); the mean of two, 0.59."""
    scan, amps, probe = _gaussian_scan(12.0)
    pos = scan.positions_px
    assert scan_coverage(pos, probe) < ModelConfig().prior_frc_min_coverage
    kw = dict(batch_size=32, amplitude_step=0.5, com_correction=True, step_scale=2.0,
              object_momentum=0.8, integer_grid=True, settle_passes=4)
    halves, _ = frc_filtered_estimate(amps, pos, probe, 12, **kw)
    whole = order_averaged_estimate(amps, pos, probe, 12 + LOW_COVERAGE_EXTRA_PASSES, 2,
                                    com_from_passes=True, **kw)
    assert _amp_error(whole, scan) < 0.8 * _amp_error(halves, scan)


def _recipe(**extra) -> ModelConfig:
    return ModelConfig(prior_recipe="featureless", **extra)


def test_below_the_minimum_coverage_the_halves_are_left_out(caplog) -> None:
    """At training and inference alike: the whole scan's estimate, the model's passes plus
    `LOW_COVERAGE_EXTRA_PASSES`, no FRC filter (recorded on the prior), logged; the same
    canvas as a model set that way by hand."""
    scan, amps, probe = _gaussian_scan(12.0)
    pos = scan.positions_px
    cfg = _recipe()
    assert cfg.prior_frc_min_coverage == 2.0 and cfg.prior_frc_filter is True
    with caplog.at_level(logging.INFO, logger="ptychopinn.models.scan_prior"):
        prior = ScanPrior.for_config(cfg, amps, pos, probe, **KW)
    want = cfg.prior_iterations + LOW_COVERAGE_EXTRA_PASSES
    assert prior.passes == want and prior.frc_filter is False and prior.agreement is None
    assert f"prior: {want} whole-scan passes without the FRC filter's halves" in caplog.text
    assert "model.prior_frc_min_coverage" in caplog.text
    by_hand = ScanPrior.for_config(
        _recipe(prior_frc_filter=False, prior_iterations=want, prior_frc_min_coverage=0.0),
        amps, pos, probe, **KW)
    assert torch.equal(by_hand.estimate.canvas, prior.estimate.canvas)


def test_the_halves_stay_where_asked_for_covered_or_plain() -> None:
    """The halves run on a scan covered at least the minimum, with a minimum of 0 (bundles
    from before the option), with infer's explicit --prior-frc-filter, and for plain passes;
    an explicit infer --prior-iterations is kept as given."""
    scan, amps, probe = _gaussian_scan(12.0)
    pos = scan.positions_px
    coverage = scan_coverage(pos, probe)
    passes = _recipe().prior_iterations
    for cfg, kw in ((_recipe(prior_frc_min_coverage=0.0), {}),
                    (_recipe(prior_frc_min_coverage=coverage * 0.99), {}),
                    (_recipe(), {"frc_filter": True})):
        prior = ScanPrior.for_config(cfg, amps, pos, probe, **kw, **KW)
        assert prior.frc_filter is True and prior.agreement is not None, cfg
        assert prior.passes >= passes
    plain = ScanPrior.for_config(ModelConfig(prior_coverage_passes=False), amps, pos, probe,
                                 **KW)
    assert plain.frc_filter is True and plain.passes == ModelConfig().prior_iterations
    given = ScanPrior.for_config(_recipe(), amps, pos, probe, iterations=5, **KW)
    assert given.frc_filter is False and given.passes == 5
    dense, d_amps, d_probe = _gaussian_scan(6.0, n_positions=100)
    assert scan_coverage(dense.positions_px, d_probe) >= 3.0
    covered = ScanPrior.for_config(_recipe(), d_amps, dense.positions_px, d_probe, **KW)
    assert covered.frc_filter is True


def test_between_the_minimum_and_3_the_halves_run_with_a_warning(caplog) -> None:
    scan, amps, probe = _gaussian_scan(8.0, n_positions=100, seed=1)
    coverage = scan_coverage(scan.positions_px, probe)
    assert _recipe().prior_frc_min_coverage <= coverage < 3.0
    with caplog.at_level(logging.INFO, logger="ptychopinn.models.scan_prior"):
        prior = ScanPrior.for_config(_recipe(), amps, scan.positions_px, probe, **KW)
    assert prior.frc_filter is True and prior.passes == _recipe().prior_iterations
    assert f"coverage {coverage:.2f} is below 3.0" in caplog.text
    assert "whole-scan passes" not in caplog.text


def test_measured_photons_reads_the_dose_of_photon_counts_only() -> None:
    amps = np.sqrt(np.array([np.full((4, 4), 2.0), np.full((4, 4), 4.0)], np.float32))
    assert measured_photons(amps, "sqrt_counts") == pytest.approx(48.0)  # 32 and 64 photons
    assert measured_photons(torch.from_numpy(amps), "sqrt_counts") == pytest.approx(48.0)
    assert measured_photons(amps, "arbitrary") is None
    assert measured_photons(amps[:0], "sqrt_counts") is None
    many = np.sqrt(np.arange(1, 2501, dtype=np.float32))[:, None, None] * np.ones((1, 2, 2))
    assert measured_photons(many, "sqrt_counts") == pytest.approx(4 * 1250.5)  # in chunks


def test_low_dose_warning_names_the_dose_the_coverage_and_what_to_do() -> None:
    assert low_dose_warning(None, 1.2) is None
    assert low_dose_warning(LOW_DOSE_PHOTONS, 1.2) is None
    text = low_dose_warning(1e5, 1.65)
    assert "1e+05 photons per pattern, below 5e+05" in text and "covered 1.65 times" in text
    assert "Featureless probes at low coverage" in text and "iterative engine" in text


def test_a_low_dose_scan_run_on_the_whole_scan_warns(caplog) -> None:
    """`ScanPrior.for_config` warns where the over-relaxed prior runs without the halves
    and the scan's photons per pattern are below `LOW_DOSE_PHOTONS`; not at the
    simulator's dose (1e6), not with an unknown dose, not where the halves run."""
    scan, amps, probe = _gaussian_scan(12.0)
    pos = scan.positions_px
    dose = measured_photons(scan.diffraction, scan.amplitude_units)
    assert dose == pytest.approx(1e6, rel=0.05)
    low = amps * (1e5 / dose) ** 0.5  # a tenth of the photons
    cases = ((_recipe(), low, "sqrt_counts", True), (_recipe(), amps, "sqrt_counts", False),
             (_recipe(), low, "arbitrary", False), (_recipe(), low, None, False),
             (_recipe(prior_frc_min_coverage=0.0), low, "sqrt_counts", False))
    for cfg, a, units, warned in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ptychopinn.models.scan_prior"):
            ScanPrior.for_config(cfg, a, pos, probe, amplitude_units=units, **KW)
        assert ("photons per pattern, below" in caplog.text) is warned, (units, cfg)
        assert ("1e+05 photons per pattern" in caplog.text) is warned


def test_the_option_is_validated_recorded_and_read_from_old_bundles() -> None:
    from ptychopinn.bundle.format import manifest_config
    from ptychopinn.config import TrainingConfig

    with pytest.raises(ValueError, match="prior_frc_min_coverage"):
        ModelConfig(prior_frc_min_coverage=-1.0)
    raw = TrainingConfig(model=_recipe()).model_dump(mode="json")
    del raw["model"]["prior_frc_min_coverage"]
    old = manifest_config({"config": raw}, "old.safetensors")
    assert old.model.prior_frc_min_coverage == 0.0  # the halves on any scan, as trained
    raw["model"]["prior_frc_min_coverage"] = 2.5
    assert manifest_config({"config": raw}, "new.safetensors").model.prior_frc_min_coverage == 2.5


def test_reconstruction_records_whether_the_halves_ran(tmp_path) -> None:
    from ptychopinn.inference.reconstruct import Reconstruction, write_outputs

    rec = Reconstruction(object=np.ones((8, 8), np.complex64),
                         positions_px=np.zeros((1, 2)), weight=np.ones((8, 8), np.float32),
                         backend="pytorch", prior_frc_filter=False)
    files = write_outputs(rec, tmp_path, figures=False)
    with np.load(files["reconstruction"]) as z:
        assert bool(z["prior_frc_filter"]) is False
