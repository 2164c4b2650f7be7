"""The plain passes the scan prior's estimate ends with (``settle_passes`` /
``model.prior_settle_passes``), part of the featureless recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.physics.prior_scan import canvas_frame, scan_error_reduction
from test_prior_scan import _amp_error  # rms amplitude error over the well-lit pixels
from test_prior_step_scale import infer_option


def _scan(n_positions: int, seed: int = 0, photons: float | None = None):
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    kw = {} if photons is None else {"photons_per_pattern": photons}
    return simulate_scan(SimulationConfig(n_positions=n_positions, seed=seed,
                                          probe_kind="gaussian", **kw))


def _inputs(scan):
    return torch.from_numpy(scan.diffraction).float(), torch.from_numpy(scan.probe)


def test_settling_passes_are_plain_passes_that_continue_the_run() -> None:
    """``k`` settling passes after ``n`` passes at step scale ``s`` are, bit for bit, the
    run of ``n`` passes continued by ``k`` plain ones (``first_pass=n``: the same batch
    orders and centre-of-mass corrections); at step scale 1 they are ``n + k`` passes;
    0 changes nothing."""
    scan = _scan(49)
    amps, probe = _inputs(scan)
    pos = scan.positions_px
    kw = dict(batch_size=16, amplitude_step=0.5, com_correction=True)
    settled = scan_error_reduction(amps, pos, probe, 3, step_scale=3.0, settle_passes=2, **kw)
    head = scan_error_reduction(amps, pos, probe, 3, step_scale=3.0, **kw)
    frame = (head.origin_px, tuple(head.canvas.shape))
    tail = scan_error_reduction(amps, pos, probe, 2, frame=frame, start=head.canvas,
                                illumination=head.illumination, first_pass=3, **kw)
    assert torch.equal(settled.canvas, tail.canvas)
    assert not torch.allclose(settled.canvas, head.canvas, atol=1e-3)  # they did move it
    assert torch.equal(
        scan_error_reduction(amps, pos, probe, 2, settle_passes=2, **kw).canvas,
        scan_error_reduction(amps, pos, probe, 4, **kw).canvas)
    assert torch.equal(
        scan_error_reduction(amps, pos, probe, 3, step_scale=3.0, settle_passes=0, **kw).canvas,
        head.canvas)
    # the phase momentum stops before them: after n passes with it, k plain passes
    mom = dict(kw, phase_momentum=0.7)
    with_momentum = scan_error_reduction(amps, pos, probe, 3, step_scale=3.0, settle_passes=2,
                                         **mom)
    head = scan_error_reduction(amps, pos, probe, 3, step_scale=3.0, **mom)
    tail = scan_error_reduction(amps, pos, probe, 2, frame=frame, start=head.canvas,
                                illumination=head.illumination, first_pass=3, **kw)
    assert torch.equal(with_momentum.canvas, tail.canvas)


def test_settling_passes_average_the_over_relaxed_noise_out() -> None:
    """On a noisy Gaussian-beam scan (1e4 photons per pattern) the over-relaxed passes
    carry the photon noise into the estimate; two plain passes after them bring it closer
    to the object than two more over-relaxed passes do (measured 0.046 and 0.041 rms
    amplitude error after 4 + 2 over-relaxed passes against 0.036 and 0.034 with 2 plain
    ones, seeds 0 and 1)."""
    for seed in (0, 1):
        scan = _scan(225, seed=seed, photons=1e4)
        amps, probe = _inputs(scan)
        kw = dict(batch_size=16, amplitude_step=0.5, step_scale=3.0)
        relaxed = _amp_error(scan_error_reduction(amps, scan.positions_px, probe, 6, **kw), scan)
        settled = _amp_error(scan_error_reduction(amps, scan.positions_px, probe, 4,
                                                  settle_passes=2, **kw), scan)
        assert settled < 0.9 * relaxed, (seed, settled, relaxed)


def test_bad_settle_passes_are_refused() -> None:
    from ptychopinn.config import InferenceConfig
    from ptychopinn.models.scan_prior import ScanPrior

    scan = _scan(16)
    amps, probe = _inputs(scan)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="settle_passes must be an integer >= 0"):
            scan_error_reduction(amps, scan.positions_px, probe, 1, settle_passes=bad)
        with pytest.raises(ValueError, match="prior settle passes must be an integer"):
            ScanPrior(amps, scan.positions_px, probe, 1.0, 1, 3, scope="scan",
                      settle_passes=bad)
    with pytest.raises(ValueError, match="settle_passes 2 needs scope 'scan'"):
        ScanPrior(amps, scan.positions_px, probe, 1.0, 1, 3, settle_passes=2)
    for bad in (-1, 65):
        with pytest.raises(ValueError, match="prior_settle_passes"):
            ModelConfig(prior_settle_passes=bad)
        with pytest.raises(ValueError, match="prior_settle_passes"):
            InferenceConfig(prior_settle_passes=bad)
    with pytest.raises(ValueError, match="prior_settle_passes above 0 needs prior_scope 'scan'"):
        ModelConfig(prior_scope="neighbourhood", prior_settle_passes=2)
    _, shape = canvas_frame(scan.positions_px, scan.patch_size)
    assert shape[0] > scan.patch_size


def test_settle_option_config_recipe_bundle_cli_and_prior() -> None:
    from ptychopinn.bundle.format import manifest_config
    from ptychopinn.config import InferenceConfig, TrainingConfig
    from ptychopinn.config.schema import FEATURELESS_RECIPE
    from ptychopinn.errors import ConfigError
    from ptychopinn.inference.reconstruct import check_prior_options
    from ptychopinn.models.scan_prior import ScanPrior

    assert ModelConfig().prior_settle_passes == 0
    assert FEATURELESS_RECIPE["prior_settle_passes"] == 4
    assert ModelConfig(prior_recipe="featureless").prior_settle_passes == 4
    assert ModelConfig(prior_recipe="featureless", prior_settle_passes=0).prior_settle_passes == 0
    # bundles written before the option ended their passes without plain ones, whatever
    # their recipe (a 'featureless' one would otherwise take today's 4)
    for recipe in ("plain", "featureless"):
        raw = TrainingConfig(model=ModelConfig(prior_recipe=recipe)).model_dump(mode="json")
        del raw["model"]["prior_settle_passes"]
        m = manifest_config({"config": raw}, "old.bundle").model
        assert m.prior_settle_passes == 0 and m.prior_recipe == recipe

    assert infer_option("prior_settle_passes") is None
    assert infer_option("prior_settle_passes", "--prior-settle-passes", "4") == 4
    neighbourhood = ModelConfig(prior_scope="neighbourhood")
    check_prior_options(neighbourhood, InferenceConfig(prior_settle_passes=0), "m")
    with pytest.raises(ConfigError, match="prior_settle_passes=2 needs a model with the scan"):
        check_prior_options(neighbourhood, InferenceConfig(prior_settle_passes=2), "m")
    # the prior takes them from the model's config unless overridden, with or without the
    # FRC filter (whose halves run without them: the filter reads the over-relaxed passes)
    scan = _scan(25)
    amps, probe = _inputs(scan)
    kw = dict(prior_amplitude_scale=1.0, train_input_scale=0.0)
    for frc in (False, True):
        mcfg = ModelConfig(prior_recipe="featureless", prior_iterations=2, prior_frc_filter=frc)
        settled = ScanPrior.for_config(mcfg, amps, scan.positions_px, probe, **kw)
        plain_end = ScanPrior.for_config(mcfg, amps, scan.positions_px, probe, settle_passes=0,
                                         **kw)
        assert settled.settle_passes == 4 and plain_end.settle_passes == 0
        assert not torch.equal(settled.estimate.canvas, plain_end.estimate.canvas)


def test_frc_filtered_estimate_settles_the_whole_scan_only(monkeypatch) -> None:
    """The halves run the over-relaxed passes alone; the whole scan's estimate ends with
    the settling passes."""
    import ptychopinn.physics.prior_frc as pf

    seen = []
    real = pf.scan_error_reduction

    def spy(*args, **kw):
        seen.append((kw.get("subset") is not None, kw.get("settle_passes", 0)))
        return real(*args, **kw)

    monkeypatch.setattr(pf, "scan_error_reduction", spy)
    scan = _scan(36)
    amps, probe = _inputs(scan)
    est, _ = pf.frc_filtered_estimate(amps, scan.positions_px, probe, 2, settle_passes=3,
                                      step_scale=3.0, batch_size=16)
    assert est.passes == 2
    halves = [s for half, s in seen if half]
    whole = [s for half, s in seen if not half]
    assert halves and set(halves) == {0}
    assert whole == [3]
    assert np.isfinite(est.canvas.abs().numpy()).all()


def test_infer_advises_plain_passes_for_older_featureless_models(caplog, tmp_path) -> None:
    """A featureless model without plain passes (a bundle from before them) gets infer's
    advice, once, unless inference sets them; other models do not."""
    import logging
    from dataclasses import replace

    from ptychopinn.bundle.pytorch import load_pinn, save_pinn
    from ptychopinn.config import InferenceConfig, TrainingConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch, settle_advice
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    old = ModelConfig(prior_recipe="featureless", prior_settle_passes=0)
    assert "--prior-settle-passes 4" in settle_advice(old, InferenceConfig(), "m")
    assert settle_advice(old, InferenceConfig(prior_settle_passes=0), "m") is None
    assert settle_advice(ModelConfig(prior_recipe="featureless"), InferenceConfig(), "m") is None
    assert settle_advice(ModelConfig(prior_recipe="plain"), InferenceConfig(), "m") is None
    scan = _scan(25)
    cfg = TrainingConfig(model=dict(old.model_dump(), N=64, n_filters_scale=0.25,
                                    prior_iterations=1))
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), cfg.model.probe_scale)
    torch.manual_seed(0)
    save_pinn(tmp_path, PtychoPINN(cfg.model, probe).eval(), cfg)
    loaded = load_pinn(tmp_path)
    for icfg, said in ((InferenceConfig(figures=False), 1),
                       (InferenceConfig(figures=False, prior_settle_passes=4), 0)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ptychopinn.inference.reconstruct"):
            rec = reconstruct_pytorch(replace(loaded), scan, icfg)
        advised = [r for r in caplog.records if "prior-settle-passes 4" in r.getMessage()]
        assert len(advised) == said
        assert rec.prior_settle_passes == (0 if said else 4)
