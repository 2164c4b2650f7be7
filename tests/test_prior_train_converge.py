"""The training prior's converge blocks (``model.prior_train_converge``): plain passes add
inference's converge blocks where inference's would run, so the network trains on a prior
converged as far as the one it corrects (physics.prior_frc's ``gate_momentum``,
models.scan_prior.ScanPrior.for_config's ``training``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import ptychopinn.physics.prior_frc as pf
from ptychopinn.bundle.format import manifest_config
from ptychopinn.config.schema import ModelConfig, TrainingConfig
from ptychopinn.models.scan_prior import (
    INFERENCE_PHASE_MOMENTUM,
    INFERENCE_PLAIN_CONVERGE_PASSES,
    ScanPrior,
    training_prior_note,
)
from ptychopinn.physics.prior_frc import frc_filtered_estimate
from ptychopinn.simulation import SimulationConfig, simulate_scan

# plain passes as the scan prior runs them
PASSES = {"batch_size": 64, "com_correction": True}


@pytest.fixture(scope="module")
def strong_scan():
    """The simulator's strongest phase (-3..3 rad): its plain halves disagree after 4
    passes and the converge blocks are kept (tests/test_prior_converge.py)."""
    return simulate_scan(SimulationConfig(N=32, n_positions=100, seed=5,
                                          phase_range_rad=(-3.0, 3.0)))


def _args(scan, iterations):
    return (torch.from_numpy(scan.diffraction), scan.positions_px,
            torch.from_numpy(scan.probe), iterations)


def test_the_gate_runs_inferences_blocks_where_its_halves_disagree(strong_scan):
    """Where the halves disagree, training's prior (asked for no momentum, the gate's
    instead) is bit for bit inference's (momentum and extra passes asked, no extra pass run
    there): the same
    blocks from the same halves, run with the momentum, against the same agreement; with
    no converge passes the prior is training's prior of before (4 passes)."""
    gated, gated_frc = frc_filtered_estimate(
        *_args(strong_scan, 4), gate_momentum=INFERENCE_PHASE_MOMENTUM,
        converge_passes=INFERENCE_PLAIN_CONVERGE_PASSES, **PASSES)
    infer, infer_frc = frc_filtered_estimate(
        *_args(strong_scan, 4), phase_momentum=INFERENCE_PHASE_MOMENTUM, extra_iterations=2,
        converge_passes=INFERENCE_PLAIN_CONVERGE_PASSES, **PASSES)
    assert 4 < gated.passes == infer.passes <= 4 + INFERENCE_PLAIN_CONVERGE_PASSES
    assert (infer.passes - 4) % pf.CONVERGE_BLOCK == 0  # blocks, no extra passes
    assert gated.agreement == infer.agreement
    # the blocks continue the momentum's halves with it, at training as at inference
    assert gated.phase_momentum == infer.phase_momentum == INFERENCE_PHASE_MOMENTUM
    assert torch.equal(gated.canvas, infer.canvas)
    assert (gated_frc == infer_frc).all()
    before, _ = frc_filtered_estimate(*_args(strong_scan, 4), **PASSES)
    assert before.passes == 4 and not torch.equal(before.canvas, gated.canvas)


def test_where_the_gates_halves_agree_the_prior_is_the_one_without_it(monkeypatch, strong_scan):
    """Halves that agree (patched): no block runs, the passes run without the momentum, the
    estimate is bit for bit the plain one; only the recorded agreement is the gate's."""
    monkeypatch.setattr(pf, "agreement", lambda frc: pf.EXTRA_PASS_AGREEMENT + 0.1)
    gated, _ = frc_filtered_estimate(*_args(strong_scan, 4), gate_momentum=0.7,
                                     converge_passes=12, **PASSES)
    plain, _ = frc_filtered_estimate(*_args(strong_scan, 4), **PASSES)
    assert gated.passes == plain.passes == 4 and gated.phase_momentum == 0.0
    assert torch.equal(gated.canvas, plain.canvas)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="gate_momentum must be in"):
            frc_filtered_estimate(*_args(strong_scan, 4), gate_momentum=bad)


def _decision_agreement(scan) -> float:
    """The agreement inference's halves (run with the momentum) decide by."""
    est, _ = frc_filtered_estimate(*_args(scan, 4), phase_momentum=INFERENCE_PHASE_MOMENTUM,
                                   **PASSES)
    return est.agreement


def test_halves_that_agree_marginally_run_the_blocks_first(monkeypatch, strong_scan):
    """Halves that agree by less than `MARGINAL_AGREEMENT` above the agreement needed run
    the converge blocks as where they disagree (with the momentum; training's gate the same,
    bit for bit); by more, the extra passes alone, as before; marginal halves whose blocks
    are all dropped take the extra passes (inference) or the plain passes (training), the
    estimates of before bit for bit."""
    a = _decision_agreement(strong_scan)
    infer_kw = {"phase_momentum": INFERENCE_PHASE_MOMENTUM, "extra_iterations": 2, **PASSES}
    train_kw = {"gate_momentum": INFERENCE_PHASE_MOMENTUM, **PASSES}
    blocks = INFERENCE_PLAIN_CONVERGE_PASSES
    marginal = a - pf.MARGINAL_AGREEMENT / 2  # the threshold the halves just pass
    infer, _ = frc_filtered_estimate(*_args(strong_scan, 4), converge_passes=blocks,
                                     agreement_threshold=marginal, **infer_kw)
    train, _ = frc_filtered_estimate(*_args(strong_scan, 4), converge_passes=blocks,
                                     agreement_threshold=marginal, **train_kw)
    assert infer.passes > 4 and (infer.passes - 4) % pf.CONVERGE_BLOCK == 0  # blocks, no extras
    assert infer.agreement > a and infer.phase_momentum == INFERENCE_PHASE_MOMENTUM
    assert train.passes == infer.passes and torch.equal(train.canvas, infer.canvas)

    clear = a - 1.5 * pf.MARGINAL_AGREEMENT  # agreed by more than the band: extras only
    extra, _ = frc_filtered_estimate(*_args(strong_scan, 4), converge_passes=blocks,
                                     agreement_threshold=clear, **infer_kw)
    no_blocks, _ = frc_filtered_estimate(*_args(strong_scan, 4), converge_passes=0,
                                         agreement_threshold=clear, **infer_kw)
    assert extra.passes == 6 and torch.equal(extra.canvas, no_blocks.canvas)

    monkeypatch.setattr(pf, "PLAIN_CONVERGE_RISE", 1.0)  # every block is dropped
    monkeypatch.setattr(pf, "PLAIN_CONVERGE_MISFIT_FALL", None)
    dropped, _ = frc_filtered_estimate(*_args(strong_scan, 4), converge_passes=blocks,
                                       agreement_threshold=marginal, **infer_kw)
    before, _ = frc_filtered_estimate(*_args(strong_scan, 4), converge_passes=0,
                                      agreement_threshold=marginal, **infer_kw)
    assert dropped.passes == before.passes == 6
    assert dropped.phase_momentum == INFERENCE_PHASE_MOMENTUM
    assert torch.equal(dropped.canvas, before.canvas)
    t_dropped, _ = frc_filtered_estimate(*_args(strong_scan, 4), converge_passes=blocks,
                                         agreement_threshold=marginal, **train_kw)
    t_before, _ = frc_filtered_estimate(*_args(strong_scan, 4), agreement_threshold=marginal,
                                        **PASSES)
    assert t_dropped.passes == 4 and t_dropped.phase_momentum == 0.0
    assert torch.equal(t_dropped.canvas, t_before.canvas)


def _training_prior(cfg: ModelConfig, scan, **kw):
    return ScanPrior.for_config(cfg, torch.from_numpy(scan.diffraction), scan.positions_px,
                                torch.from_numpy(scan.probe), prior_amplitude_scale=1.0,
                                train_input_scale=0.0, **kw)


def test_for_config_adds_the_blocks_to_the_training_prior_with_the_option(strong_scan):
    """``training=True`` with ``prior_train_converge`` (the default): the training prior
    keeps inference's blocks on the strong-phase scan; off, or not training, the model's
    passes; a training prior refuses inference's pass options by name; over-relaxed
    passes (the featureless recipe) are left as they were."""
    cfg = TrainingConfig.model_validate(
        {"model": {"N": 32, "prior_iterations": 4, "prior_coverage_passes": False}}).model
    assert cfg.prior_train_converge and cfg.prior_frc_filter and cfg.prior_step_scale == 1.0
    on = _training_prior(cfg, strong_scan, training=True)
    off = _training_prior(cfg.model_copy(update={"prior_train_converge": False}), strong_scan,
                          training=True)
    as_before = _training_prior(cfg, strong_scan)  # not training, no inference options
    assert 4 < on.passes <= 4 + INFERENCE_PLAIN_CONVERGE_PASSES  # blocks kept
    assert off.passes == as_before.passes == 4
    assert on.iterations == off.iterations == 4
    note = training_prior_note(on)  # what train logs
    assert f"ran {on.passes} passes, {on.passes - 4} of them in converge blocks" in note
    assert training_prior_note(off) is None and training_prior_note(None) is None
    by_misfit = sum(1 for b in on.converge_blocks if b.kept and b.misfit_fall is not None)
    assert (f"{by_misfit} of the blocks kept for the fall of their held-out misfit" in note
            ) == (by_misfit > 0)
    # one block kept for its held-out misfit, the others for their agreement: named
    kept = replace(on.converge_blocks[0], rise=0.0, misfit_fall=0.5, kept=True)
    on.converge_blocks = (kept, *(replace(b, misfit_fall=None) for b in on.converge_blocks[1:]))
    assert ", 1 of the blocks kept for the fall of their held-out misfit" in (
        training_prior_note(on))
    ids = torch.arange(strong_scan.n_patterns)
    assert torch.equal(off(ids), as_before(ids)) and not torch.equal(on(ids), off(ids))
    with pytest.raises(ValueError, match="training prior takes no converge_passes"):
        _training_prior(cfg, strong_scan, training=True, converge_passes=4)

    relaxed = cfg.model_copy(update={"prior_step_scale": 2.0, "prior_batch_size": 16})
    r_on = _training_prior(relaxed, strong_scan, training=True)
    r_off = _training_prior(relaxed.model_copy(update={"prior_train_converge": False}),
                            strong_scan, training=True)
    assert r_on.passes == r_off.passes == 4 and torch.equal(r_on(ids), r_off(ids))


def test_bundles_without_the_option_trained_without_blocks():
    manifest = {"config": {"model": {"N": 32}}}
    assert manifest_config(manifest, "old.safetensors").model.prior_train_converge is False
    assert ModelConfig().prior_train_converge is True


def test_both_backends_train_on_a_training_prior(monkeypatch, tmp_path, small_scan):
    """`ptychopinn train` (PyTorch) asks for the training prior, so the option applies
    there; TensorFlow's training does likewise (its model's ``scan_prior``)."""
    from ptychopinn import api

    seen = {}

    def spy(cls, *args, **kw):
        seen.update(kw)
        raise RuntimeError("stop after the prior's options")

    monkeypatch.setattr(ScanPrior, "for_config", classmethod(spy))
    cfg = TrainingConfig.model_validate(
        {"output_dir": str(tmp_path / "run"), "nepochs": 1, "max_time_minutes": None,
         "model": {"N": 32, "n_filters_scale": 0.25},
         "execution": {"logger": "none", "progress_bar": False, "accelerator": "cpu"}})
    with pytest.raises(RuntimeError, match="stop after"):
        api.train(cfg, small_scan)
    assert seen.get("training") is True and "converge_passes" not in seen

    pytest.importorskip("tensorflow")
    from ptychopinn.backends import get_backend
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), cfg.model.probe_scale)
    save_pinn(tmp_path / "bundle", PtychoPINN(cfg.model, probe, log_intensity_scale=1.0), cfg)
    loaded = get_backend("tensorflow").load_bundle(tmp_path / "bundle")
    for training in (True, False):
        seen.clear()
        with pytest.raises(RuntimeError, match="stop after"):
            loaded.model.scan_prior(small_scan.diffraction, small_scan.positions_px,
                                    training=training)
        assert seen["training"] is training
        assert ("converge_passes" in seen) is not training  # inference passes its options
    with pytest.raises(ValueError, match="training prior takes no converge_passes"):
        loaded.model.scan_prior(small_scan.diffraction, small_scan.positions_px,
                                training=True, converge_passes=4)


def test_train_says_where_its_prior_ran_converge_blocks(tmp_path, strong_scan, caplog):
    """A short training on the strong-phase scan logs the blocks its prior ran."""
    import logging

    from ptychopinn import api

    cfg = TrainingConfig.model_validate(
        {"output_dir": str(tmp_path / "run"), "nepochs": 1, "max_time_minutes": None,
         "batch_size": 16, "save_reconstruction": False,
         "model": {"N": 32, "n_filters_scale": 0.25, "prior_coverage_passes": False},
         "execution": {"logger": "none", "progress_bar": False, "accelerator": "cpu"}})
    with caplog.at_level(logging.INFO, logger="ptychopinn"):
        api.train(cfg, strong_scan)
    assert any("of them in converge blocks" in r.getMessage() for r in caplog.records)
