"""`reconstruct` with physics refinement writes the refined object beside the raw one."""

from __future__ import annotations

import numpy as np
import torch

from ptychopinn import api
from ptychopinn.bundle.pytorch import save_pinn
from ptychopinn.config import InferenceConfig, TrainingConfig
from ptychopinn.inference.reconstruct import write_outputs
from ptychopinn.metrics import evaluate
from ptychopinn.models.pinn import PtychoPINN, normalise_probe


def test_refine_epochs_improves_and_is_saved(tmp_path, small_scan):
    # raw-diffraction input: the untrained network's guess is poor, refinement must fix it
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 0})
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)
    icfg = InferenceConfig(refine_epochs=8, execution={"progress_bar": False, "num_threads": 1})
    rec = api.reconstruct(tmp_path / "model", small_scan, icfg)
    assert rec.refined_object is not None and len(rec.refinement_history) == 8
    n = small_scan.patch_size
    raw = evaluate(rec.object, small_scan.object, positions_px=rec.positions_px, patch_size=n)
    ref = evaluate(rec.refined_object, small_scan.object, positions_px=rec.positions_px,
                   patch_size=n)
    assert ref["amp_ssim"] > raw["amp_ssim"] + 0.2, (raw["amp_ssim"], ref["amp_ssim"])
    write_outputs(rec, tmp_path / "out", scan=small_scan)
    data = np.load(tmp_path / "out" / "reconstruction.npz")
    assert data["refined_object"].shape == data["object"].shape
    assert data["refinement_loss"].shape == (8,)
    # the scan-level numbers of the refinement travel with the result (dense counts:
    # the photon-sparse rule did not apply)
    assert float(data["refinement_step_scale"]) == 1.0
    assert float(data["refinement_counts_per_photon"]) > 3.0
    assert float(data["refinement_intensity_scale"]) > 0.0
    assert (tmp_path / "out" / "refined_amplitude.png").is_file()


def test_more_prior_passes_at_inference_give_a_better_object(tmp_path, small_scan):
    """`InferenceConfig.prior_iterations` overrides the model's passes: with an
    untrained residual network (whose correction starts small) the result follows
    its prior, so more passes must score better; 0 passes is refused."""
    import pytest

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 2})
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)
    n = small_scan.patch_size

    def amp_ssim(iterations):
        icfg = InferenceConfig(prior_iterations=iterations, execution={"num_threads": 1})
        rec = api.reconstruct(tmp_path / "model", small_scan, icfg)
        m = evaluate(rec.object, small_scan.object, positions_px=rec.positions_px, patch_size=n)
        return m["amp_ssim"]

    as_trained, more = amp_ssim(None), amp_ssim(12)
    assert amp_ssim(2) == pytest.approx(as_trained, abs=1e-6)
    assert more > as_trained + 0.02, (as_trained, more)
    with pytest.raises(ValueError):
        InferenceConfig(prior_iterations=0)


def test_prior_frc_filter_override_at_inference(tmp_path, small_scan):
    """`InferenceConfig.prior_frc_filter` overrides the model's filter: a model trained
    with it and inferred without gives what the same weights saved without the filter
    give, and the other way round; on / off differ; a neighbourhood-prior model is
    refused by name; the CLI flag maps to it."""
    import pytest

    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser
    from ptychopinn.errors import ConfigError

    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    objects = {}
    for frc in (True, False):
        cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 2,
                                    "prior_frc_filter": frc})
        torch.manual_seed(0)
        save_pinn(tmp_path / f"m{frc}", PtychoPINN(cfg.model, probe), cfg)
        for override in (None, True, False):
            icfg = InferenceConfig(prior_frc_filter=override, execution={"num_threads": 1})
            objects[frc, override] = api.reconstruct(tmp_path / f"m{frc}", small_scan,
                                                     icfg).object
    np.testing.assert_allclose(objects[True, False], objects[False, None], atol=1e-6)
    np.testing.assert_allclose(objects[False, True], objects[True, None], atol=1e-6)
    np.testing.assert_allclose(objects[True, True], objects[True, None], atol=0)
    assert np.abs(objects[True, None] - objects[False, None]).max() > 1e-3

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25,
                                "prior_scope": "neighbourhood", "prior_iterations": 2})
    save_pinn(tmp_path / "nb", PtychoPINN(cfg.model, probe), cfg)
    with pytest.raises(ConfigError, match="prior_frc_filter.*prior_scope 'neighbourhood'"):
        api.reconstruct(tmp_path / "nb", small_scan, InferenceConfig(prior_frc_filter=True))

    def flag(*extra):
        args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz", *extra])
        return infer_config_from_args(args).prior_frc_filter

    assert flag() is None
    assert flag("--prior-frc-filter", "off") is False
    assert flag("--prior-frc-filter", "on") is True
    with pytest.raises(SystemExit):
        flag("--prior-frc-filter", "maybe")


def test_prior_extra_iterations_at_inference(tmp_path):
    """`InferenceConfig.prior_extra_iterations`: where the prior's halves agree (a
    well-exposed textured scan) the prior runs the model's passes plus these, recorded as
    ``prior_passes`` in the result and reconstruction.npz; 0 gives the model's passes
    exactly; negative values are refused by name; the CLI flag maps to it."""
    import pytest
    from pydantic import ValidationError

    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser
    from ptychopinn.physics.prior_frc import EXTRA_PASS_AGREEMENT
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=7))
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 2})
    assert cfg.model.prior_frc_filter
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), 4.0)
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)
    recs = {k: api.reconstruct(tmp_path / "model", scan,
                               InferenceConfig(prior_extra_iterations=k,
                                               execution={"num_threads": 1}))
            for k in (0, 3)}
    assert recs[0].prior_passes == 2 and recs[3].prior_passes == 5
    # the agreement that decided, the same for both (taken before any extra pass)
    assert recs[0].prior_agreement == recs[3].prior_agreement >= EXTRA_PASS_AGREEMENT
    assert np.abs(recs[3].object - recs[0].object).max() > 1e-3
    assert InferenceConfig().prior_extra_iterations is None  # 2 for these plain passes:
    default = api.reconstruct(tmp_path / "model", scan,
                              InferenceConfig(execution={"num_threads": 1}))
    assert default.prior_passes == 4 and default.prior_phase_momentum == 0.7
    write_outputs(recs[3], tmp_path / "out", scan=scan, figures=False)
    saved = np.load(tmp_path / "out" / "reconstruction.npz")
    assert int(saved["prior_passes"]) == 5
    assert float(saved["prior_agreement"]) == recs[3].prior_agreement
    with pytest.raises(ValidationError, match="prior_extra_iterations"):
        InferenceConfig(prior_extra_iterations=-1)

    def flag(*extra):
        args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz", *extra])
        return infer_config_from_args(args).prior_extra_iterations

    assert flag() is None
    assert flag("--prior-extra-iterations", "0") == 0

    # the phase momentum (InferenceConfig.prior_phase_momentum, 0.7 by default) ran where
    # the halves agree: recorded in the result and the npz; 0 turns it off, the passes stay
    off = api.reconstruct(tmp_path / "model", scan,
                          InferenceConfig(prior_extra_iterations=3, prior_phase_momentum=0.0,
                                          execution={"num_threads": 1}))
    assert InferenceConfig().prior_phase_momentum is None  # 0.7 for plain passes
    assert recs[3].prior_phase_momentum == 0.7 and off.prior_phase_momentum == 0.0
    assert off.prior_passes == 5
    assert np.abs(recs[3].object - off.object).max() > 1e-3
    assert float(saved["prior_phase_momentum"]) == 0.7
    for bad in (-0.1, 1.0):
        with pytest.raises(ValidationError, match="prior_phase_momentum"):
            InferenceConfig(prior_phase_momentum=bad)

    def momentum(*extra):
        args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz", *extra])
        return infer_config_from_args(args).prior_phase_momentum

    assert momentum() is None and momentum("--prior-phase-momentum", "0") == 0.0


def test_over_relaxed_priors_add_no_passes_or_momentum_unless_asked(monkeypatch, tmp_path):
    """The extra passes and phase momentum where the halves agree are for plain passes:
    with an over-relaxed prior (the featureless recipe, which ends with its own plain
    passes) inference runs the model's passes exactly and no momentum, unless they are
    given; `inference_pass_options` resolves the defaults by step scale. The agreement
    threshold is patched to 0 so the halves count as agreeing on this small scan.
    Converge passes (`InferenceConfig.prior_converge_passes`) are the over-relaxed prior's
    instead: kept while the halves agree more (the agreement patched to rise or fall); plain
    priors try them only where their halves did not agree (tests/test_prior_converge.py)."""
    import pytest
    from pydantic import ValidationError

    import ptychopinn.physics.prior_frc as prior_frc
    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser
    from ptychopinn.models.scan_prior import (
        INFERENCE_CONVERGE_PASSES,
        INFERENCE_EXTRA_PASSES,
        INFERENCE_PHASE_MOMENTUM,
        INFERENCE_PLAIN_CONVERGE_PASSES,
        inference_pass_options,
    )
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    assert inference_pass_options(1.0, None, None, None) == (
        INFERENCE_EXTRA_PASSES, INFERENCE_PHASE_MOMENTUM, INFERENCE_PLAIN_CONVERGE_PASSES)
    assert inference_pass_options(3.0, None, None, None) == (0, 0.0, INFERENCE_CONVERGE_PASSES)
    assert inference_pass_options(3.0, 1, 0.5, 2) == (1, 0.5, 2)
    assert inference_pass_options(1.0, 0, 0.0, 4) == (0, 0.0, 4)
    assert inference_pass_options(3.0, None, None) == (0, 0.0, 0)  # training: none
    monkeypatch.setattr(prior_frc, "EXTRA_PASS_AGREEMENT", 0.0)
    scan = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=7, probe_kind="gaussian"))
    # the halves on this small scan, whose edges make its coverage low (without them,
    # model.prior_frc_min_coverage: none of these options apply; test_prior_min_coverage)
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 3,
                                "prior_step_scale": 2.0, "prior_settle_passes": 1,
                                "prior_frc_min_coverage": 0.0})
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), 4.0)
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)

    def run(**kw):
        return api.reconstruct(tmp_path / "model", scan,
                               InferenceConfig(execution={"num_threads": 1}, **kw))

    # (converge passes off here: they follow the agreement, below)
    default = run(prior_converge_passes=0)
    asked = run(prior_extra_iterations=2, prior_phase_momentum=0.7, prior_converge_passes=0)
    assert default.prior_passes == 3 and not default.prior_phase_momentum
    assert asked.prior_passes == 5 and asked.prior_phase_momentum == 0.7
    assert np.abs(default.object - asked.object).max() > 1e-3
    exact = run(prior_extra_iterations=0, prior_phase_momentum=0.0, prior_converge_passes=0)
    assert np.array_equal(exact.object, default.object)

    # converge passes: on by default for over-relaxed passes, kept while the halves agree
    # more with each block (an agreement that rises every time: all of them), none asked
    # with 0 (plain priors try them only where their halves disagree: test_prior_converge)
    calls = iter(np.linspace(0.1, 0.9, 20))
    monkeypatch.setattr(prior_frc, "agreement", lambda frc: float(next(calls)))
    rising = run()
    assert rising.prior_passes == 3 + INFERENCE_CONVERGE_PASSES
    assert np.abs(rising.object - default.object).max() > 1e-3
    calls = iter(np.linspace(0.9, 0.1, 20))
    falling = run()
    assert falling.prior_passes == 3 and np.array_equal(falling.object, default.object)
    with pytest.raises(ValidationError, match="prior_converge_passes"):
        InferenceConfig(prior_converge_passes=-1)
    assert InferenceConfig().prior_converge_passes is None

    def converge(*extra):
        args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz", *extra])
        return infer_config_from_args(args).prior_converge_passes

    assert converge() is None and converge("--prior-converge-passes", "4") == 4


def test_plain_prior_adds_converge_passes_on_a_strong_phase_object_by_default(tmp_path):
    """Through `reconstruct` with infer's defaults: on a strong-phase scan (-2.5..2.5 rad,
    whose plain halves disagree after the model's 4 passes) the prior adds converge blocks
    (`InferenceConfig.prior_converge_passes` None: 12 for plain priors) and records them;
    0 gives the model's passes."""
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=5,
                                          phase_range_rad=(-2.5, 2.5)))
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 4,
                                "prior_coverage_passes": False})
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), 4.0)
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)

    def run(**kw):
        return api.reconstruct(tmp_path / "model", scan,
                               InferenceConfig(execution={"num_threads": 1}, **kw))

    default, none = run(), run(prior_converge_passes=0)
    assert none.prior_passes == 4 and none.prior_agreement < 0.45
    assert default.prior_passes > 4 and default.prior_agreement > none.prior_agreement
    assert np.abs(default.object - none.object).max() > 1e-3
