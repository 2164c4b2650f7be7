"""The TensorFlow backend: physics and network parity with PyTorch, train/bundle/reconstruct,
cross-backend bundles, and the dispatcher's errors.

TensorFlow is imported only by the tests that need it (the ``tf`` fixture), not
at collection, so the rest of the suite never runs with TensorFlow loaded
because of this file; without TensorFlow those tests are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ptychopinn.backends import get_backend, validate_backend
from ptychopinn.config import InferenceConfig, ModelConfig, TrainingConfig
from ptychopinn.errors import BackendUnavailableError, BundleError, ConfigError


@pytest.fixture(scope="module")
def tf():
    """The tensorflow module (the test is skipped when it is not installed)."""
    return pytest.importorskip("tensorflow")


# float32 tolerances: relative to each quantity's largest magnitude
RTOL = 2e-5


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


def _cplx(rng, *shape) -> np.ndarray:
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


# ----------------------------------------------------------------------------- physics
def test_physics_matches_pytorch(tf, rng) -> None:
    from ptychopinn.physics import geometry, losses
    from ptychopinn.physics.forward import ForwardModel
    from ptychopinn.tf import physics as tfp

    obj = _cplx(rng, 2, 40, 50)
    pos = rng.uniform(9.0, 31.0, size=(2, 5, 2))  # fractional positions
    pt = geometry.extract_patches(torch.from_numpy(obj), torch.from_numpy(pos), 16).numpy()
    pf = tfp.extract_patches(tf.constant(obj), tf.constant(pos), 16).numpy()
    assert _rel(pt, pf) < RTOL
    placed_t = geometry.place_patches(torch.from_numpy(pt), torch.from_numpy(pos), (40, 50))
    placed_f = tfp.place_patches(tf.constant(pt), tf.constant(pos), (40, 50))
    assert _rel(placed_t.numpy(), placed_f.numpy()) < RTOL

    patches = _cplx(rng, 3, 4, 32, 32)
    offsets = rng.uniform(-6.0, 6.0, size=(3, 4, 2)).astype(np.float32)
    probe = _cplx(rng, 2, 32, 32)  # two incoherent modes
    for pad_object in (False, True):
        fm = ForwardModel(torch.from_numpy(probe), pad_object=pad_object)
        sup = tf.constant(fm.support.numpy())
        gc_t = fm.group_consistency(torch.from_numpy(patches), torch.from_numpy(offsets))
        gc_f = tfp.group_consistency(tf.constant(patches), tf.constant(offsets), sup)
        assert _rel(gc_t.numpy(), gc_f.numpy()) < RTOL
        it = fm(torch.from_numpy(patches), torch.from_numpy(offsets)).numpy()
        i_f = tfp.forward_intensity(tf.constant(patches), tf.constant(offsets),
                                    tf.constant(fm.probe.numpy()), sup, True).numpy()
        assert _rel(it, i_f) < RTOL
    # the group consistency changes the patches (so the parity above is not vacuous)
    assert _rel(patches, gc_f.numpy()) > 0.1

    counts = rng.poisson(it).astype(np.float32)
    valid = (rng.random((32, 32)) > 0.1).astype(np.float32)
    for name in ("poisson_nll", "amplitude_mae"):
        a = getattr(losses, name)(torch.from_numpy(it), torch.from_numpy(counts),
                                  torch.from_numpy(valid))
        b = getattr(tfp, name)(tf.constant(i_f), tf.constant(counts), tf.constant(valid))
        assert float(b) == pytest.approx(float(a), rel=1e-5)
    amp, phase = rng.random((3, 4, 32, 32)).astype(np.float32), rng.normal(size=(3, 4, 32, 32))
    phase = (3 * phase).astype(np.float32)
    a = losses.realspace_mae(torch.from_numpy(amp), torch.from_numpy(phase),
                             torch.from_numpy(patches), torch.from_numpy(valid))
    b = tfp.realspace_mae(tf.constant(amp), tf.constant(phase), tf.constant(patches),
                          tf.constant(valid))
    assert float(b) == pytest.approx(float(a), rel=1e-5)


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize(("arch", "kw"), [
    ("cnn", {"N": 64, "gridsize": 1, "pad_object": True, "amp_activation": "exp"}),
    ("unet", {"N": 32, "gridsize": 2, "amp_activation": "softplus"}),
])  # unet with pad_object: test_reconstruction_matches_pytorch_backend
def test_generator_mirrors_pytorch(tf, arch: str, kw: dict) -> None:
    from ptychopinn.models.registry import build_generator
    from ptychopinn.tf.layers import keras_to_torch, torch_to_keras
    from ptychopinn.tf.networks import build_keras_generator

    cfg = ModelConfig(architecture=arch, n_filters_scale=0.25, **kw)
    torch.manual_seed(0)
    tnet = build_generator(cfg).eval()
    knet = build_keras_generator(cfg)
    state = {k: v.numpy() for k, v in tnet.state_dict().items()}
    torch_to_keras(knet, state)
    back = keras_to_torch(knet)
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    assert set(back) == expected
    assert all(np.array_equal(back[k], state[k]) for k in expected)
    x = np.random.default_rng(0).uniform(0, 2, (3, cfg.input_channels, cfg.N, cfg.N))
    x = x.astype(np.float32)
    with torch.no_grad():
        a_t, p_t = tnet(torch.from_numpy(x))
    a_k, p_k = knet(tf.constant(x))
    assert _rel(a_t.numpy(), a_k.numpy()) < 1e-4 and _rel(p_t.numpy(), p_k.numpy()) < 1e-4


def test_unknown_architecture_is_a_config_error(tf) -> None:
    from ptychopinn.tf.networks import build_keras_generator

    bad = ModelConfig(N=32).model_copy(update={"architecture": "transformer"})
    with pytest.raises(ConfigError, match="transformer"):
        build_keras_generator(bad)


def test_pytorch_bundle_converts_and_losses_match(tf, tmp_path, rng) -> None:
    """A pytorch bundle loads in the tensorflow backend with identical predictions and losses."""
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe
    from ptychopinn.physics import losses
    from ptychopinn.tf.model import polar
    from ptychopinn.tf.training import loss_terms

    cfg = TrainingConfig(model={"N": 32, "gridsize": 2, "n_filters_scale": 0.25,
                                "architecture": "cnn", "n_probe_modes": 2},
                         nll_weight=1.0, mae_weight=0.5, realspace_weight=0.3,
                         probe_trainable=True)
    probe, _ = normalise_probe(torch.from_numpy(_cplx(rng, 2, 32, 32)), cfg.model.probe_scale)
    torch.manual_seed(1)
    model = PtychoPINN(cfg.model, probe, probe_trainable=True, log_intensity_scale=2.5).eval()
    model.train_input_scale.fill_(3.0)
    save_pinn(tmp_path, model, cfg)
    loaded = get_backend("tensorflow").load_bundle(tmp_path)
    assert loaded.backend == "tensorflow" and loaded.config == cfg
    assert loaded.model.intensity_scale == pytest.approx(np.exp(2.5), rel=1e-6)

    amps = rng.uniform(0, 6, (3, 4, 32, 32)).astype(np.float32)
    offsets = rng.uniform(-4, 4, (3, 4, 2)).astype(np.float32)
    true = _cplx(rng, 3, 4, 32, 32)
    with torch.no_grad():  # the PyTorch training objective (PINNModule._losses)
        amp_t, phase_t = model.predict_amp_phase(torch.from_numpy(amps), 3.0)
        expected = model.expected_counts(torch.polar(amp_t, phase_t), torch.from_numpy(offsets))
        counts = torch.from_numpy(amps).square()
        weight = (model.physics.illumination(model.probe) > 0.05).float()
        want = {"poisson_nll": float(losses.poisson_nll(expected, counts)),
                "amplitude_mae": float(losses.amplitude_mae(expected, counts)),
                "realspace_mae": float(losses.realspace_mae(amp_t, phase_t,
                                                            torch.from_numpy(true), weight))}
    want["loss"] = want["poisson_nll"] + 0.5 * want["amplitude_mae"] + 0.3 * want["realspace_mae"]
    got = loss_terms(loaded.model, cfg, tf.constant(amps), tf.constant(offsets),
                     tf.constant(true), None, False)
    assert set(got) == set(want)
    for k in want:
        assert float(got[k]) == pytest.approx(want[k], rel=1e-4), k
    amp, phase = loaded.model.predict_amp_phase(amps, 3.0)
    patches_t = torch.polar(amp_t, phase_t).numpy()
    assert _rel(patches_t, polar(amp, phase).numpy()) < 1e-4
    counts_f = loaded.model.expected_counts(tf.constant(patches_t), tf.constant(offsets))
    assert _rel(expected.numpy(), counts_f.numpy()) < 1e-4


@pytest.mark.parametrize("scope", ["scan", "neighbourhood"])
def test_scan_wide_residual_prior_matches_pytorch(tf, tmp_path, rng, scope) -> None:
    """The default unet (scan or neighbourhood prior, residual heads) predicts alike in
    both backends from the same prior, and neither guesses such a prior from a batch."""
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe
    from ptychopinn.tf.model import polar

    cfg = TrainingConfig(
        model={"N": 32, "gridsize": 2, "n_filters_scale": 0.25, "prior_scope": scope}
    )
    assert cfg.model.prior_neighbors == 4 and cfg.model.prior_residual
    probe, _ = normalise_probe(torch.from_numpy(_cplx(rng, 1, 32, 32)), cfg.model.probe_scale)
    torch.manual_seed(3)
    model = PtychoPINN(cfg.model, probe, log_intensity_scale=1.0).eval()
    save_pinn(tmp_path, model, cfg)
    loaded = get_backend("tensorflow").load_bundle(tmp_path)
    amps = rng.uniform(0, 6, (3, 4, 32, 32)).astype(np.float32)
    prior = _cplx(rng, 3, 4, 32, 32)
    with torch.no_grad():
        want = model.predict_patches(torch.from_numpy(amps), 3.0, torch.from_numpy(prior))
    amp, phase = loaded.model.predict_amp_phase(amps, 3.0, prior=tf.constant(prior))
    assert _rel(want.numpy(), polar(amp, phase).numpy()) < 1e-4
    for predict in (lambda: model.predict_patches(torch.from_numpy(amps), 3.0),
                    lambda: loaded.model.predict_amp_phase(amps, 3.0)):
        with pytest.raises(ValueError, match="prior_scope" if scope == "scan" else "prior_neighbors"):
            predict()


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_weight_decay_spares_the_intensity_scale(tf, tmp_path, rng, optimizer) -> None:
    """One training step with and without weight decay moves the intensity scale alike
    (decay is for the network's weights, which it does move)."""
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe
    from ptychopinn.tf.training import _Steps, build_optimizer

    model_cfg = {"N": 32, "gridsize": 2, "n_filters_scale": 0.25, "architecture": "cnn"}
    probe, _ = normalise_probe(torch.from_numpy(_cplx(rng, 1, 32, 32)), 4.0)
    torch.manual_seed(4)
    save_pinn(tmp_path, PtychoPINN(ModelConfig(**model_cfg), probe, log_intensity_scale=1.0),
              TrainingConfig(model=model_cfg))
    amps = tf.constant(rng.uniform(0, 6, (2, 4, 32, 32)).astype(np.float32))
    offsets = tf.constant(rng.uniform(-4, 4, (2, 4, 2)).astype(np.float32))
    after = {}
    for wd in (0.0, 0.5):
        cfg = TrainingConfig(model=model_cfg, optimizer=optimizer, weight_decay=wd,
                             gradient_clip_val=None)
        model = get_backend("tensorflow").load_bundle(tmp_path).model
        _Steps(model, cfg, build_optimizer(cfg, model), None).train(amps, offsets)
        after[wd] = (float(model.log_intensity_scale.numpy()),
                     model.generator.trainable_variables[0].numpy().copy())
    assert after[0.5][0] == pytest.approx(after[0.0][0], abs=1e-7)
    assert not np.allclose(after[0.5][1], after[0.0][1])


def test_reconstruction_matches_pytorch_backend(tf, tmp_path, small_scan) -> None:
    """The same (converted) weights give the same stitched object in both backends."""
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    cfg = TrainingConfig(model={"N": 32, "gridsize": 2, "n_filters_scale": 0.25,
                                "architecture": "unet", "pad_object": True})
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), cfg.model.probe_scale)
    torch.manual_seed(2)
    save_pinn(tmp_path, PtychoPINN(cfg.model, probe).eval(), cfg)
    weights, objects, momenta = {}, {}, []
    # both backends follow the stitching weight option and the prior's FRC filter override
    for flat_above, frc in ((0.01, None), (1.0, None), (0.01, False)):
        # float32 in both ('auto' runs PyTorch's network in bfloat16 on CPUs with AMX)
        icfg = InferenceConfig(figures=False, stitch_flat_above=flat_above, prior_frc_filter=frc,
                               execution={"precision": "32-true"})
        recs = {}
        for name in ("pytorch", "tensorflow"):
            backend = get_backend(name)
            recs[name] = backend.reconstruct(backend.load_bundle(tmp_path), small_scan, icfg)
        assert recs["tensorflow"].backend == "tensorflow" and recs["pytorch"].backend == "pytorch"
        np.testing.assert_allclose(recs["tensorflow"].weight, recs["pytorch"].weight, rtol=1e-5)
        rel = _rel(recs["pytorch"].object, recs["tensorflow"].object)
        assert rel < 1e-4, rel
        # the prior's passes and the agreement that decided them, recorded by both
        assert recs["tensorflow"].prior_passes == recs["pytorch"].prior_passes
        assert recs["tensorflow"].prior_agreement == recs["pytorch"].prior_agreement
        assert recs["tensorflow"].prior_phase_momentum == recs["pytorch"].prior_phase_momentum
        momenta.append(recs["pytorch"].prior_phase_momentum)
        assert (recs["pytorch"].prior_agreement is None) is (frc is False)
        weights[flat_above] = recs["pytorch"].weight
        objects[flat_above, frc] = recs["tensorflow"].object
    assert not np.allclose(weights[0.01], weights[1.0])
    assert _rel(objects[0.01, None], objects[0.01, False]) > 1e-3
    # the prior's phase momentum ran with the filter (the halves agree on this scan), not
    # without it
    assert momenta == [0.7, 0.7, 0.0], momenta
    # and the prior's settling passes (InferenceConfig.prior_settle_passes), recorded by both
    icfg = InferenceConfig(figures=False, prior_settle_passes=2,
                           execution={"precision": "32-true"})
    recs = {name: get_backend(name).reconstruct(get_backend(name).load_bundle(tmp_path),
                                                small_scan, icfg)
            for name in ("pytorch", "tensorflow")}
    assert recs["tensorflow"].prior_settle_passes == recs["pytorch"].prior_settle_passes == 2
    assert _rel(recs["pytorch"].object, recs["tensorflow"].object) < 1e-4
    assert _rel(recs["tensorflow"].object, objects[0.01, None]) > 1e-4
    # and the whole scan's mean of two over-relaxed orders, filtered by their FRC or not
    # (InferenceConfig.prior_orders_filter), the same in both and recorded by both
    filtered = {}
    for flag in (True, False):
        icfg = InferenceConfig(figures=False, prior_frc_filter=False, prior_step_scale=2.0,
                               prior_orders=2, prior_orders_filter=flag,
                               execution={"precision": "32-true"})
        recs = {name: get_backend(name).reconstruct(get_backend(name).load_bundle(tmp_path),
                                                    small_scan, icfg)
                for name in ("pytorch", "tensorflow")}
        assert recs["tensorflow"].prior_orders == recs["pytorch"].prior_orders == 2
        assert recs["tensorflow"].prior_orders_filter is recs["pytorch"].prior_orders_filter
        assert recs["pytorch"].prior_orders_filter is flag
        assert recs["tensorflow"].prior_orders_agreement == recs["pytorch"].prior_orders_agreement
        assert (recs["pytorch"].prior_orders_agreement is None) is (not flag)
        assert _rel(recs["pytorch"].object, recs["tensorflow"].object) < 1e-4
        filtered[flag] = recs["pytorch"].object
    assert _rel(filtered[True], filtered[False]) > 1e-4


def test_both_backends_scale_the_prior_passes_by_the_scan_coverage(tf, tmp_path) -> None:
    """On a scan whose patterns overlap less, both backends run the plain prior's passes
    `models.scan_prior.coverage_passes` asks for (``model.prior_coverage_passes``), and give
    the same object."""
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe
    from ptychopinn.models.scan_prior import coverage_passes
    from ptychopinn.physics.coverage import scan_coverage
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=64, step_px=7.0, seed=5))
    want = coverage_passes(4, scan_coverage(scan.positions_px, torch.as_tensor(scan.probe)))
    assert want > 4
    cfg = TrainingConfig(model={"N": 32, "gridsize": 2, "n_filters_scale": 0.25,
                                "architecture": "unet", "pad_object": True})
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), cfg.model.probe_scale)
    torch.manual_seed(2)
    save_pinn(tmp_path, PtychoPINN(cfg.model, probe).eval(), cfg)
    icfg = InferenceConfig(figures=False, prior_extra_iterations=0,
                           execution={"precision": "32-true"})
    recs = {name: get_backend(name).reconstruct(get_backend(name).load_bundle(tmp_path), scan,
                                                icfg)
            for name in ("pytorch", "tensorflow")}
    assert recs["pytorch"].prior_passes == recs["tensorflow"].prior_passes == want
    assert _rel(recs["pytorch"].object, recs["tensorflow"].object) < 1e-4


def test_position_correction_before_either_backend(tf, tmp_path, small_scan) -> None:
    """``position_refine_epochs`` corrects the positions before the backend runs: the
    TensorFlow reconstruction predicts and stitches at the same corrected positions
    as the PyTorch one, and gives the same object."""
    from ptychopinn import api
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25})
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), cfg.model.probe_scale)
    torch.manual_seed(3)
    save_pinn(tmp_path, PtychoPINN(cfg.model, probe).eval(), cfg)
    err = np.random.default_rng(1).uniform(-1.5, 1.5, small_scan.positions_px.shape)
    bad = small_scan.replace(positions_px=small_scan.positions_px + err)
    recs = {}
    for name in ("pytorch", "tensorflow"):
        for epochs in (0, 4):
            icfg = InferenceConfig(backend=name, figures=False, position_refine_epochs=epochs,
                                   execution={"num_threads": 1, "precision": "32-true"})
            recs[name, epochs] = api.reconstruct(tmp_path, bad, icfg)
    assert recs["tensorflow", 4].backend == "tensorflow"
    moved = recs["tensorflow", 4].positions_px - recs["tensorflow", 0].positions_px
    assert np.abs(moved - moved.mean(0)).max() > 0.1  # corrected, not only re-framed
    np.testing.assert_allclose(recs["tensorflow", 4].positions_px,
                               recs["pytorch", 4].positions_px, atol=1e-6)
    assert _rel(recs["pytorch", 4].object, recs["tensorflow", 4].object) < 1e-4


def test_probe_shift_physics_matches_pytorch(tf, rng) -> None:
    """``model.subpixel='probe_shift'``: whole-pixel windows seen through the probe
    Fourier-shifted by each pattern's remainder, identical in both backends."""
    from ptychopinn.physics.forward import ForwardModel
    from ptychopinn.physics.propagation import diffracted_intensity, shifted_probe_intensity
    from ptychopinn.tf import physics as tfp

    patches = _cplx(rng, 3, 4, 32, 32)
    probe = _cplx(rng, 2, 32, 32)
    frac = rng.uniform(-0.5, 0.5, (3, 4, 2)).astype(np.float32)
    it = shifted_probe_intensity(torch.from_numpy(patches), torch.from_numpy(probe),
                                 torch.from_numpy(frac)).numpy()
    i_f = tfp.shifted_probe_intensity(tf.constant(patches), tf.constant(probe),
                                      tf.constant(frac)).numpy()
    assert _rel(it, i_f) < RTOL
    unshifted = diffracted_intensity(torch.from_numpy(patches), torch.from_numpy(probe)).numpy()
    assert _rel(unshifted, i_f) > 1e-2  # the shift matters
    zero = tfp.shifted_probe_intensity(tf.constant(patches), tf.constant(probe),
                                       tf.zeros((3, 4, 2))).numpy()
    assert _rel(unshifted, zero) < RTOL
    offsets = rng.integers(-5, 6, (3, 4, 2)).astype(np.float32)  # whole-pixel windows
    fm = ForwardModel(torch.from_numpy(probe))
    want = fm(torch.from_numpy(patches), torch.from_numpy(offsets),
              frac_px=torch.from_numpy(frac)).numpy()
    got = tfp.forward_intensity(tf.constant(patches), tf.constant(offsets),
                                tf.constant(fm.probe.numpy()), tf.constant(fm.support.numpy()),
                                True, tf.constant(frac)).numpy()
    assert _rel(want, got) < RTOL


def test_probe_shift_model_converts_and_reconstructs_as_pytorch(tf, tmp_path, small_scan) -> None:
    """A probe-shift model: the same training loss (with the remainders) and the same
    stitched object (whole-pixel windows) in both backends."""
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe
    from ptychopinn.models.scan_prior import ScanPrior
    from ptychopinn.physics import losses
    from ptychopinn.tf.training import loss_terms
    from ptychopinn.training.data import prepare

    cfg = TrainingConfig(model={"N": 32, "gridsize": 2, "n_filters_scale": 0.25,
                                "subpixel": "probe_shift"})  # with the scan prior
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), cfg.model.probe_scale)
    torch.manual_seed(4)
    model = PtychoPINN(cfg.model, probe, log_intensity_scale=1.5).eval()
    model.train_input_scale.fill_(2.0)
    save_pinn(tmp_path, model, cfg)
    loaded = get_backend("tensorflow").load_bundle(tmp_path)
    data = prepare(small_scan, cfg)
    assert data.frac_px is not None and float(data.frac_px.abs().max()) > 0.1
    idx = data.indices[:6]
    amps, offsets, frac = data.amplitudes[idx], data.offsets_px[:6], data.frac_px[idx]
    prior = ScanPrior.for_model(model, data.amplitudes, data.positions_px)(idx.reshape(-1))
    prior = prior.reshape(idx.shape + prior.shape[-2:])
    with torch.no_grad():  # the PyTorch training objective with the remainders
        patches = model.predict_patches(amps, 2.0, prior)
        expected = model.expected_counts(patches, offsets, frac)
        want = float(losses.poisson_nll(expected, amps.square()))
        unshifted = model.expected_counts(patches, offsets)
    got = loss_terms(loaded.model, cfg, tf.constant(amps.numpy()), tf.constant(offsets.numpy()),
                     None, None, False, tf.constant(prior.numpy()), tf.constant(frac.numpy()))
    assert float(got["poisson_nll"]) == pytest.approx(want, rel=1e-4)
    assert _rel(expected.numpy(), unshifted.numpy()) > 1e-3  # the remainders matter
    recs = {}
    for name in ("pytorch", "tensorflow"):
        backend = get_backend(name)
        recs[name] = backend.reconstruct(backend.load_bundle(tmp_path), small_scan,
                                         InferenceConfig(figures=False,
                                                         execution={"precision": "32-true"}))
    assert _rel(recs["pytorch"].object, recs["tensorflow"].object) < 1e-4
    np.testing.assert_allclose(recs["tensorflow"].weight, recs["pytorch"].weight, rtol=1e-5)


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def tf_run(tf, tmp_path_factory):
    from ptychopinn import api
    from ptychopinn.data.npz import save_npz
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=100, photons_per_pattern=1e5, seed=3))
    run = tmp_path_factory.mktemp("tfrun")
    test = simulate_scan(SimulationConfig(N=32, n_positions=64, photons_per_pattern=1e5, seed=4))
    test_file = tmp_path_factory.mktemp("tftest") / "test_scan.npz"
    save_npz(test, test_file)
    cfg = TrainingConfig(backend="tensorflow", output_dir=str(run), nepochs=2, batch_size=8,
                         val_fraction=0.1, seed=0, save_reconstruction=False,
                         test_data_file=str(test_file),
                         model={"N": 32, "n_filters_scale": 0.25},
                         execution={"progress_bar": False})
    result = api.train(cfg, scan)
    # what the bundle holds: model.prior_recipe 'auto' resolved ('plain' under the disk probe)
    model = cfg.model.model_copy(update={"prior_recipe": "plain"})
    return result, cfg.model_copy(update={"model": model}), scan


def test_train_writes_run_directory_and_tensorflow_bundle(tf_run) -> None:
    from ptychopinn.bundle.format import read_bundle

    result, cfg, _ = tf_run
    run = result.run_dir
    assert result.backend == "tensorflow"
    manifest, state = read_bundle(result.bundle_path)
    assert manifest["backend"] == "tensorflow"
    assert manifest["config"] == cfg.model_dump(mode="json")
    assert any(k.startswith("generator.") and k.endswith(".kernel") for k in state)
    assert [r["epoch"] for r in result.history] == [0, 1]
    assert json.loads((run / "history.json").read_text()) == result.history
    for row in result.history:
        assert np.isfinite(row["train/loss"]) and np.isfinite(row["val/loss"])
    assert result.history[1]["train/loss"] < result.history[0]["train/loss"]
    csv_lines = (run / "logs" / "history.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and "train/loss" in csv_lines[0]
    assert (run / "config.yaml").is_file() and (run / "loss_curve.png").is_file()
    assert list((run / "checkpoints").glob("last-*.index"))
    # the test scan, reconstructed by this backend from the saved bundle
    with np.load(run / "test_reconstruction" / "reconstruction.npz") as npz:
        assert str(npz["backend"]) == "tensorflow" and npz["positions_px"].shape == (64, 2)
    assert result.test_metrics["reconstruction"]["amp_ssim"] > 0
    assert not (run / "reconstruction").exists()  # save_reconstruction=False


def test_load_in_fresh_call_and_reconstruct(tf_run, tmp_path) -> None:
    from ptychopinn import api
    from ptychopinn.bundle.format import read_bundle
    from ptychopinn.inference.reconstruct import write_outputs

    result, cfg, scan = tf_run
    loaded = api.load_bundle(result.run_dir)
    assert loaded.backend == "tensorflow" and loaded.config == cfg
    _, saved = read_bundle(result.bundle_path)
    state = loaded.model.state()
    assert set(state) == set(saved)
    assert all(np.array_equal(np.asarray(state[k]).ravel(), saved[k].ravel()) for k in saved)
    recon = api.reconstruct(loaded, scan, InferenceConfig(backend="tensorflow", figures=False))
    assert recon.backend == "tensorflow"
    assert recon.network_batch_size == 64  # 'auto' on this backend, said and written below
    assert recon.object.shape == recon.weight.shape and np.isfinite(recon.object).all()
    covered = recon.weight > 0.05 * recon.weight.max()
    assert covered.mean() > 0.1 and np.abs(recon.object[covered]).mean() > 0.1
    files = write_outputs(recon, tmp_path, scan=scan, figures=False)
    with np.load(files["reconstruction"], allow_pickle=False) as npz:
        assert str(npz["backend"]) == "tensorflow"
        assert int(npz["network_batch_size"]) == 64
        # the probe the network assumed, for `ptychopinn evaluate --scan`
        np.testing.assert_allclose(npz["probe"], loaded.model.probe_numpy())


def test_bundles_across_backends(tf_run) -> None:
    from ptychopinn import api

    result, _, _ = tf_run
    with pytest.raises(BundleError, match="tensorflow"):
        get_backend("pytorch").load_bundle(result.run_dir)
    with pytest.raises(BundleError, match="tensorflow"):
        api.load_bundle(result.run_dir, backend="pytorch")


def test_resume_continues_from_last_epoch(tf_run) -> None:
    from ptychopinn import api

    result, cfg, scan = tf_run
    more = cfg.model_copy(update={"nepochs": 3, "save_reconstruction": False})
    res2 = api.train(more, scan, resume=True)
    assert [r["epoch"] for r in res2.history] == [0, 1, 2]
    assert res2.history[:2] == result.history
    fresh = cfg.model_copy(update={"output_dir": str(result.run_dir) + "_none"})
    with pytest.raises(ConfigError, match="resume"):
        api.train(fresh, scan, resume=True)


def test_fine_tuning_starts_from_the_given_bundle(tf_run, tmp_path) -> None:
    """``init_from`` in this backend: the generator starts as the bundle's."""
    from ptychopinn import api

    result, cfg, scan = tf_run
    start = {k: v for k, v in api.load_bundle(result.run_dir).model.state().items()
             if k.startswith("generator.")}
    tune = cfg.model_copy(update={
        "output_dir": str(tmp_path / "tuned"), "nepochs": 1, "learning_rate": 1e-12,
        "scheduler": "none", "init_from": str(result.run_dir), "test_data_file": None})
    tuned = api.load_bundle(api.train(tune, scan).run_dir).model.state()
    assert start and all(np.allclose(tuned[k], v, atol=1e-6) for k, v in start.items())
    with pytest.raises(ConfigError, match="init_from .*model section differs"):
        api.train(tune.model_copy(update={"output_dir": str(tmp_path / "other"),
                                          "model": cfg.model.model_copy(
            update={"n_filters_scale": 0.5})}), scan)


def test_probe_shift_model_trains(tf, tmp_path, small_scan) -> None:
    """``model.subpixel='probe_shift'`` trains in this backend (it was refused): the
    loss falls, the bundle keeps the choice, the object it stitches is the scan's."""
    from ptychopinn import api

    cfg = TrainingConfig(backend="tensorflow", output_dir=str(tmp_path / "run"), nepochs=3,
                         batch_size=16, seed=0, save_reconstruction=True,
                         model={"N": 32, "n_filters_scale": 0.25, "subpixel": "probe_shift"},
                         execution={"progress_bar": False, "logger": "none"})
    res = api.train(cfg, small_scan)
    nll = [r["train/poisson_nll"] for r in res.history]
    assert np.all(np.isfinite(nll)) and nll[-1] < nll[0]
    loaded = api.load_bundle(res.run_dir)
    assert loaded.backend == "tensorflow" and loaded.config.model.subpixel == "probe_shift"
    assert res.reconstruction is not None and res.reconstruction.backend == "tensorflow"
    assert res.metrics["reconstruction"]["amp_ssim"] > 0.5  # against the scan's truth


def test_unsupported_execution_options_are_config_errors(tf, tmp_path) -> None:
    from ptychopinn import api

    for execution in ({"strategy": "ddp"}, {"precision": "16-mixed"}, {"logger": "mlflow"}):
        cfg = TrainingConfig(backend="tensorflow", output_dir=str(tmp_path),
                             execution=execution)
        with pytest.raises(ConfigError, match="tensorflow backend"):
            api.train(cfg, None)
    # inference: 'auto' is float32 there, an explicit half precision is refused by name
    from ptychopinn.tf.inference import check_execution

    check_execution(InferenceConfig().execution)
    with pytest.raises(ConfigError, match="execution.precision='bf16-mixed'.*tensorflow"):
        check_execution(InferenceConfig(execution={"precision": "bf16-mixed"}).execution)


# ----------------------------------------------------------------------------- dispatcher
def test_missing_tensorflow_names_the_install_command(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real(name, *a))
    with pytest.raises(RuntimeError) as ei:
        get_backend("tensorflow")
    assert isinstance(ei.value, BackendUnavailableError)
    msg = str(ei.value)
    assert "'tensorflow'" in msg and "pip install 'ptychopinn[tensorflow]'" in msg


def test_invalid_backend_literal() -> None:
    with pytest.raises(ValueError, match="'pytorch', 'tensorflow'"):
        validate_backend("tf")
    with pytest.raises(ValueError, match="backend"):
        TrainingConfig(backend="keras")


def test_pytorch_side_never_imports_tensorflow() -> None:
    code = ("import sys, ptychopinn, ptychopinn.api, ptychopinn.backends.pytorch_backend; "
            "ptychopinn.backends.get_backend('pytorch'); "
            "sys.exit(int('tensorflow' in sys.modules or 'keras' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_physics_prior_matches_pytorch(tf, rng) -> None:
    from ptychopinn.physics.prior import error_reduction
    from ptychopinn.tf import physics as tfp

    probe = (rng.normal(size=(2, 16, 16)) + 1j * rng.normal(size=(2, 16, 16))).astype(np.complex64)
    amps = rng.uniform(0, 3, (3, 4, 16, 16)).astype(np.float32)
    a = error_reduction(torch.from_numpy(amps), torch.from_numpy(probe), 4).numpy()
    b = tfp.error_reduction(tf.constant(amps), tf.constant(probe), 4).numpy()
    assert _rel(a, b) < 1e-4


def test_training_warns_under_a_featureless_probe_as_pytorch_does(tf, tmp_path, caplog) -> None:
    """The tensorflow backend resolves ``model.prior_recipe='auto'`` as pytorch does
    (`models.prior_recipe`): 'featureless' under a well-exposed Gaussian beam, saved in its
    bundle; with 'plain' it gives the same featureless-probe advice."""
    import logging

    from ptychopinn import api
    from ptychopinn.simulation import SimulationConfig, simulate_scan
    from ptychopinn.tf.bundle import load_tf

    scan = simulate_scan(SimulationConfig(N=32, n_positions=36, seed=0, probe_kind="gaussian"))

    def train(out: str, **model) -> tuple[list[str], object]:
        cfg = TrainingConfig(backend="tensorflow", output_dir=str(tmp_path / out), nepochs=1,
                             batch_size=8, save_reconstruction=False,
                             model={"N": 32, "n_filters_scale": 0.25, **model},
                             execution={"progress_bar": False, "logger": "none"})
        caplog.clear()
        with caplog.at_level(logging.INFO):
            result = api.train(cfg, scan)
        return [r.getMessage() for r in caplog.records], load_tf(result.bundle_path).config.model

    said, model = train("auto")
    assert any("prior recipe 'auto': 'featureless'" in m for m in said), said
    assert not any("far field is a small spot" in m for m in said)
    assert (model.prior_recipe, model.prior_step_scale, model.prior_batch_size,
            model.prior_iterations, model.prior_settle_passes,
            model.prior_object_momentum) == ("featureless", 2.0, 32, 12, 4, 0.8)
    said, model = train("plain", prior_recipe="plain")
    warned = [m for m in said if "far field is a small spot" in m]
    assert len(warned) == 1 and "model.prior_recipe=featureless" in warned[0], warned
    assert model.prior_step_scale == 1.0
