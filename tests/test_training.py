"""Training with Lightning: outputs, checkpoint reload, resume, loggers, modes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ptychopinn import api
from ptychopinn.config import TrainingConfig
from ptychopinn.errors import ConfigError
from run_configs import tiny_training_config


def _cfg(tmp_path, **kw):
    return tiny_training_config(tmp_path / "run", **kw)


def test_train_writes_run_directory(tmp_path, small_scan):
    cfg = _cfg(tmp_path, execution={"logger": "csv"}, save_reconstruction=True)
    res = api.train(cfg, small_scan)
    run = tmp_path / "run"
    assert res.backend == "pytorch"
    for name in (
        "config.yaml",
        "history.json",
        "checkpoints/last.ckpt",
        "model.ptychopinn.safetensors",
        "reconstruction/reconstruction.npz",
        "reconstruction/metrics.json",
        "loss_curve.png",
    ):
        assert (run / name).is_file(), name
    hist = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in hist] == [0, 1]
    assert all(np.isfinite(h["train/poisson_nll"]) for h in hist)
    assert list((run / "logs" / "csv").rglob("metrics.csv"))
    rec = np.load(run / "reconstruction" / "reconstruction.npz")
    assert rec["object"].dtype == np.complex64 and rec["object"].shape == small_scan.object.shape
    assert rec["positions_px"].shape == (small_scan.n_patterns, 2)


def test_checkpoint_rebuilds_without_arguments(tmp_path, small_scan):
    from ptychopinn.training.module import PINNModule

    api.train(_cfg(tmp_path, nepochs=1), small_scan)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain data only
    assert isinstance(raw["hyper_parameters"]["config"], dict)
    module = PINNModule.load_from_checkpoint(ckpt, map_location="cpu")
    bundle = api.load_bundle(tmp_path / "run")
    assert torch.equal(module.model.probe, bundle.model.probe)
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, module.model.state_dict()[k]), k


def test_resume_continues_epochs(tmp_path, small_scan):
    api.train(_cfg(tmp_path, nepochs=1), small_scan)
    res = api.train(_cfg(tmp_path, nepochs=3), small_scan, resume=True)
    epochs = [h["epoch"] for h in res.history]
    assert epochs == [0, 1, 2]
    manifest = api.load_bundle(tmp_path / "run").manifest
    assert manifest["extra"]["epochs_done"] == 3


def test_a_second_training_into_a_trained_folder_needs_resume_or_overwrite(tmp_path,
                                                                          small_scan):
    """A trained model is never silently replaced: train into its folder again is refused
    (before any work) unless --resume continues it or --overwrite replaces it; the
    replacement starts from epoch 0 and leaves none of the old run's checkpoints."""
    from ptychopinn.cli.main import main
    from ptychopinn.errors import OutputPathError

    api.train(_cfg(tmp_path, nepochs=2), small_scan)
    run = tmp_path / "run"
    bundle = run / "model.ptychopinn.safetensors"
    before = bundle.read_bytes()
    with pytest.raises(OutputPathError, match=r"already holds a training .*--resume.*--overwrite"):
        api.train(_cfg(tmp_path, nepochs=1), small_scan)
    assert bundle.read_bytes() == before
    with pytest.raises(ConfigError, match="--resume and --overwrite"):
        api.train(_cfg(tmp_path, nepochs=1), small_scan, resume=True, overwrite=True)
    # the CLI says so in one line, and keeps the folder
    data = tmp_path / "scan.npz"
    from ptychopinn.data.npz import save_npz

    save_npz(small_scan, data)
    assert main(["train", "--data", str(data), "--output-dir", str(run), "-q"]) == 2
    assert bundle.read_bytes() == before and (run / "checkpoints" / "last.ckpt").is_file()
    # a stale checkpoint, the old run's scores and logs must not survive the replacement;
    # the user's own files in the folder do
    (run / "checkpoints" / "old-epoch.ckpt").write_bytes(b"x")
    stale = [run / "reconstruction" / "metrics.json", run / "test_reconstruction" / "a.png",
             run / "logs" / "csv" / "version_0" / "metrics.csv", run / "retrieved_probe.npz"]
    for f in stale + [run / "notes.txt"]:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"old")
    res = api.train(_cfg(tmp_path, nepochs=1), small_scan, overwrite=True)
    assert [h["epoch"] for h in res.history] == [0]
    assert bundle.read_bytes() != before
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert [f for f in stale if f.exists()] == []
    assert not (run / "reconstruction").exists() and not (run / "logs").exists()
    assert (run / "notes.txt").read_bytes() == b"old"
    assert api.load_bundle(run).manifest["extra"]["epochs_done"] == 1


def test_resume_without_checkpoint_is_clear(tmp_path, small_scan):
    with pytest.raises(ConfigError, match="last.ckpt"):
        api.train(_cfg(tmp_path), small_scan, resume=True)


def test_training_reduces_loss(tmp_path, small_scan):
    res = api.train(_cfg(tmp_path, nepochs=4, learning_rate=3e-3), small_scan)
    losses = [h["train/loss"] for h in res.history]
    assert losses[-1] < losses[0]


def test_supervised_mode(tmp_path, small_scan):
    cfg = _cfg(tmp_path, model={"model_type": "supervised"}, nepochs=2)
    res = api.train(cfg, small_scan)
    assert "train/realspace_mae" in res.history[-1]
    assert "train/poisson_nll" not in res.history[-1]


def test_supervised_needs_object(tmp_path, small_scan):
    scan = small_scan.replace(object=None)
    with pytest.raises(ConfigError, match="ground-truth"):
        api.train(_cfg(tmp_path, model={"model_type": "supervised"}), scan)


def test_patch_size_mismatch(tmp_path, small_scan):
    with pytest.raises(ConfigError, match="model.N"):
        api.train(_cfg(tmp_path, model={"N": 64}), small_scan)


def test_test_scan_is_reconstructed_after_training(tmp_path, small_scan):
    """``test_data_file``: a different scan of the same pattern size, reconstructed
    from the saved bundle after training, with its metrics."""
    from ptychopinn.data.npz import save_npz
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    other = simulate_scan(SimulationConfig(N=32, n_positions=100, photons_per_pattern=1e5,
                                           seed=8))
    save_npz(other, tmp_path / "test.npz")
    res = api.train(_cfg(tmp_path, nepochs=1, test_data_file=str(tmp_path / "test.npz")),
                    small_scan)
    out = tmp_path / "run" / "test_reconstruction"
    rec = np.load(out / "reconstruction.npz")
    assert rec["object"].shape == other.object.shape  # the test scan's frame, not the training's
    assert rec["positions_px"].shape == (other.n_patterns, 2)
    metrics = json.loads((out / "metrics.json").read_text())
    ssim = metrics["reconstruction"]["amp_ssim"]  # scored against the test scan's truth
    assert res.test_metrics["reconstruction"]["amp_ssim"] == pytest.approx(ssim)
    assert ssim > 0.5
    assert res.reconstruction is None  # save_reconstruction=False


def test_a_bad_test_scan_fails_before_training(tmp_path, small_scan):
    """A missing or mismatched ``test_data_file`` is reported before any epoch runs."""
    from ptychopinn.data.npz import save_npz
    from ptychopinn.errors import DataError
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    with pytest.raises(DataError, match=r"test_data_file: .*missing\.npz: file not found"):
        api.train(_cfg(tmp_path, test_data_file=str(tmp_path / "missing.npz")), small_scan)
    assert not (tmp_path / "run" / "history.json").exists()
    big = simulate_scan(SimulationConfig(N=64, n_positions=16, photons_per_pattern=1e4, seed=1))
    save_npz(big, tmp_path / "big.npz")
    with pytest.raises(DataError, match=r"test_data_file .*big\.npz: expected 32x32 .*found 64x64"):
        api.train(_cfg(tmp_path, test_data_file=str(tmp_path / "big.npz")), small_scan)
    assert not (tmp_path / "run" / "history.json").exists()


def test_a_bad_test_scan_fails_before_the_probe_retrieval(tmp_path, small_scan, monkeypatch):
    """With ``probe_refine_epochs`` the inputs are checked before the probe retrieval
    (which can take minutes), not only before the training that follows it."""
    import ptychopinn.refinement as refinement
    from ptychopinn.errors import DataError

    calls = []
    monkeypatch.setattr(refinement, "retrieve_probe", lambda *a, **k: calls.append(1))
    cfg = _cfg(tmp_path, probe_refine_epochs=3, test_data_file=str(tmp_path / "missing.npz"))
    with pytest.raises(DataError, match=r"test_data_file: .*missing\.npz: file not found"):
        api.train(cfg, small_scan)
    assert calls == []


def test_fine_tuning_starts_from_the_given_bundle(tmp_path, small_scan):
    """``init_from`` (``train --init``): the generator starts as the bundle's; a model
    section that differs, or a missing bundle, is refused before training."""
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.errors import BundleError

    api.train(_cfg(tmp_path, output_dir=str(tmp_path / "a"), nepochs=1), small_scan)
    first = load_pinn(tmp_path / "a").model.generator.state_dict()

    def generator_after(**kw) -> dict:
        # a vanishing learning rate: one epoch leaves the starting weights as they were
        res = api.train(_cfg(tmp_path, nepochs=1, learning_rate=1e-12, scheduler="none", **kw),
                        small_scan)
        return load_pinn(res.run_dir).model.generator.state_dict()

    tuned = generator_after(init_from=str(tmp_path / "a"))
    assert all(torch.allclose(tuned[k].float(), first[k].float(), atol=1e-6) for k in first)
    fresh = generator_after(output_dir=str(tmp_path / "fresh"), seed=5)
    assert not all(torch.allclose(fresh[k].float(), first[k].float(), atol=1e-3)
                   for k in first if first[k].is_floating_point())
    with pytest.raises(ConfigError, match="init_from .*model section differs"):
        api.train(_cfg(tmp_path, init_from=str(tmp_path / "a"), output_dir=str(tmp_path / "b"),
                       model={"n_filters_scale": 0.5}), small_scan)
    with pytest.raises(BundleError, match="missing"):
        api.train(_cfg(tmp_path, init_from=str(tmp_path / "missing"),
                       output_dir=str(tmp_path / "b")), small_scan)


def test_subsampling_draws_by_its_own_seed(tmp_path, small_scan):
    """``n_subsample`` keeps that many patterns, drawn by ``subsample_seed`` (default:
    ``seed``), so the training seed can change without changing the data."""
    from ptychopinn.training.data import prepare

    def kept(**kw) -> set:
        data = prepare(small_scan, _cfg(tmp_path, n_subsample=60, **kw))
        assert data.positions_px.shape == (60, 2)
        return {tuple(p) for p in np.round(data.positions_px.numpy(), 6)}

    a = kept(seed=1)
    assert a <= {tuple(p) for p in np.round(small_scan.positions_px, 6)}  # real patterns
    assert kept(seed=1) == a and kept(seed=2) != a
    assert kept(seed=2, subsample_seed=1) == a and kept(seed=1, subsample_seed=3) != a


def test_intensity_scale_can_be_held(tmp_path, small_scan):
    """``intensity_scale_trainable=False`` keeps the global intensity scale at its
    initial estimate; trainable (default) it moves."""
    from ptychopinn.bundle.pytorch import load_pinn

    def scale(name, **kw) -> float:
        kw = {"learning_rate": 2e-2, **kw}
        res = api.train(_cfg(tmp_path, output_dir=str(tmp_path / name), nepochs=1, **kw),
                        small_scan)
        return float(load_pinn(res.run_dir).model.log_intensity_scale)

    held = scale("held", intensity_scale_trainable=False)
    assert held == scale("held_slow", intensity_scale_trainable=False, learning_rate=1e-12)
    assert abs(scale("free") - held) > 1e-4


def test_tensorboard_logger(tmp_path, small_scan):
    pytest.importorskip("tensorboard")
    api.train(_cfg(tmp_path, nepochs=1, execution={"logger": "tensorboard"}), small_scan)
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents*"))


def test_mlflow_logger_local(tmp_path, small_scan):
    pytest.importorskip("mlflow")
    api.train(_cfg(tmp_path, nepochs=1, execution={"logger": "mlflow"}), small_scan)
    logs = tmp_path / "run" / "logs"
    assert (logs / "mlruns").is_dir() or (logs / "mlflow.db").is_file()


def test_gridsize_one_and_cnn(tmp_path, small_scan):
    cfg = _cfg(tmp_path, model={"gridsize": 1, "architecture": "cnn"}, nepochs=1)
    res = api.train(cfg, small_scan)
    loaded = api.load_bundle(res.bundle_path)
    rec = api.reconstruct(loaded, small_scan)
    assert rec.object.shape == small_scan.object.shape


def test_two_runs_in_one_process_do_not_interfere(tmp_path, small_scan):
    a = api.train(_cfg(tmp_path / "a", nepochs=1, model={"gridsize": 1}), small_scan)
    b = api.train(_cfg(tmp_path / "b", nepochs=1, model={"gridsize": 2}), small_scan)
    assert api.load_bundle(a.bundle_path).config.model.gridsize == 1
    assert api.load_bundle(b.bundle_path).config.model.gridsize == 2


def test_weight_decay_spares_the_physical_parameters() -> None:
    """Weight decay shrinks the network's weights, never the intensity scale or the probe."""
    from ptychopinn.training.module import PINNModule

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 0},
                         optimizer="adamw", weight_decay=0.5, probe_trainable=True,
                         scheduler="none")
    probe = torch.polar(torch.rand(1, 32, 32) + 0.1, torch.rand(1, 32, 32))
    module = PINNModule(cfg.model_dump(mode="json"), [1, 32, 32], probe=probe,
                        log_intensity_scale=2.0)
    opt = module.configure_optimizers()
    scale0 = module.model.log_intensity_scale.detach().clone()
    probe0 = module.model.probe_param.detach().clone()
    weights0 = [p.detach().clone() for p in module.model.generator.parameters()]
    for p in module.parameters():
        p.grad = torch.zeros_like(p)  # no data gradient: only the decay moves anything
    opt.step()
    assert torch.equal(module.model.log_intensity_scale.detach(), scale0)
    assert torch.equal(module.model.probe_param.detach(), probe0)
    moved = [not torch.equal(a, b.detach())
             for a, b in zip(weights0, module.model.generator.parameters(), strict=True)]
    assert any(moved)


def test_input_scale_is_the_rms_amplitude_over_the_whole_scan() -> None:
    """Summed in chunks of patterns, it equals sqrt(mean counts) over every pattern."""
    from ptychopinn.training.data import input_scale_of

    rng = np.random.default_rng(0)
    amps = rng.gamma(2.0, 1.5, size=(1000, 8, 8)).astype(np.float32)
    amps[700:] *= 3.0  # the last chunks differ from the first ones
    want = float(np.sqrt(np.mean(amps.astype(np.float64) ** 2)))
    assert input_scale_of(amps) == pytest.approx(want, rel=1e-9)
    assert input_scale_of(torch.from_numpy(amps)) == pytest.approx(want, rel=1e-9)
    assert input_scale_of(np.zeros((3, 4, 4), np.float32)) == pytest.approx(1e-12)


def test_probe_shift_model_trains_saves_and_reconstructs(tmp_path, small_scan):
    """model.subpixel='probe_shift': training feeds each pattern's sub-pixel remainder to
    the physics and whole-pixel window offsets to the group consistency; the bundle keeps
    the choice; inference stitches at the whole-pixel windows."""
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.training.data import GroupDataset, prepare

    cfg = _cfg(tmp_path, model={"subpixel": "probe_shift"})
    data = prepare(small_scan, cfg)
    assert data.frac_px is not None and float(data.frac_px.abs().max()) <= 0.5
    assert torch.equal(data.offsets_px, torch.round(data.offsets_px))  # whole pixels
    batch = GroupDataset(data, np.arange(4), False, None).__getitems__([0, 1])
    assert batch["frac"].shape == (2, 4, 2)
    from ptychopinn.models.scan_prior import ScanPrior

    prior = ScanPrior.for_config(cfg.model, data.amplitudes, data.positions_px,
                                 torch.from_numpy(small_scan.probe), prior_amplitude_scale=1.0,
                                 train_input_scale=data.input_scale)
    np.testing.assert_array_equal(prior.lookup_px - 16, np.round(small_scan.positions_px - 16))
    # the prior's canvas sits on the scan frame's pixels: a lookup copies pixels
    origin = prior.estimate.origin_px
    np.testing.assert_array_equal(origin, np.round(origin))
    i0 = (prior.lookup_px[3] - 16 - origin).astype(int)
    np.testing.assert_array_equal(prior(torch.tensor([3]))[0].numpy(),
                                  prior.estimate.canvas[i0[0]:i0[0] + 32, i0[1]:i0[1] + 32].numpy())
    res = api.train(cfg, small_scan)
    assert np.isfinite(res.history[-1]["train/poisson_nll"])
    loaded = api.load_bundle(res.bundle_path)
    assert loaded.config.model.subpixel == "probe_shift"
    rec = reconstruct_pytorch(loaded, small_scan, InferenceConfig())
    assert np.isfinite(rec.object).all() and rec.object.shape == small_scan.object.shape
    with pytest.raises(Exception, match="prior_scope"):
        TrainingConfig(model={"subpixel": "probe_shift", "prior_scope": "neighbourhood"})


def test_training_at_1e3_photons_per_pattern(tmp_path) -> None:
    """Low dose (1e3 photons per pattern, about one photon per pixel at N=32): the
    Poisson loss stays finite and falls, and the saved model reconstructs a finite,
    non-zero object."""
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    low = simulate_scan(SimulationConfig(N=32, n_positions=144, photons_per_pattern=1e3, seed=3))
    res = api.train(_cfg(tmp_path, nepochs=4, learning_rate=3e-3), low)
    losses = [h["train/poisson_nll"] for h in res.history]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    rec = reconstruct_pytorch(api.load_bundle(res.bundle_path), low, InferenceConfig())
    assert np.isfinite(rec.object).all() and float(np.abs(rec.object).max()) > 0


def test_an_interrupted_training_resumes_from_its_last_epoch(tmp_path, small_scan):
    """The checkpoint is written after every epoch, not only when fit ends: a run that
    dies in its third epoch leaves its second epoch's state, and --resume finishes it."""
    import lightning as L

    class Crash(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                raise RuntimeError("simulated crash in epoch 2")

    from ptychopinn.training.runner import train_pytorch

    with pytest.raises(RuntimeError, match="simulated crash"):
        train_pytorch(_cfg(tmp_path, nepochs=4), small_scan, extra_callbacks=[Crash()])
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["epoch"] == 1  # epochs 0 and 1 done
    res = api.train(_cfg(tmp_path, nepochs=4), small_scan, resume=True)
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 3]
    assert api.load_bundle(tmp_path / "run").manifest["extra"]["epochs_done"] == 4


def test_training_hides_only_lightnings_leafspec_warning(tmp_path, small_scan):
    """torch's FutureWarning about `LeafSpec`, raised inside Lightning's fit loop, is not
    shown to users (nothing they can act on); the filter ends with the fit, so the same
    warning raised afterwards, and any other warning, still reaches them."""
    import warnings

    from ptychopinn.training import runner

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        api.train(_cfg(tmp_path, nepochs=1), small_scan)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning,
                      stacklevel=1)
        with runner._without_lightning_pytree_warning():
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning,
                          stacklevel=1)
            warnings.warn("something else", FutureWarning, stacklevel=1)
    messages = [str(w.message) for w in seen]
    assert sum("LeafSpec" in m for m in messages) == 1  # only the one raised outside the fit
    assert "something else" in messages
