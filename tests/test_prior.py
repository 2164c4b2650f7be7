"""The physics prior (single-pattern and neighbourhood error reduction) and the generators'
prior input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig, TrainingConfig
from ptychopinn.models.pinn import PtychoPINN, normalise_probe
from ptychopinn.physics.geometry import extract_patches
from ptychopinn.physics.prior import (
    error_reduction,
    neighbourhood_error_reduction,
    prior_channels,
)
from ptychopinn.physics.propagation import far_field


@pytest.fixture(scope="module")
def scan64():
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    return simulate_scan(SimulationConfig(n_positions=36, seed=0))


def _modulus_error(obj: torch.Tensor, probe: torch.Tensor, amps: torch.Tensor) -> float:
    field = far_field(obj.unsqueeze(-3) * probe)
    model = (field.real.square() + field.imag.square()).sum(-3).sqrt()
    return float((model - amps).square().sum() / amps.square().sum())


def _true_patches(scan) -> torch.Tensor:
    return extract_patches(
        torch.from_numpy(scan.object), torch.from_numpy(scan.positions_px), scan.patch_size
    ).to(torch.complex64)


def test_zero_iterations_is_the_flat_start() -> None:
    est = error_reduction(torch.rand(3, 8, 8), torch.ones(8, 8, dtype=torch.complex64), 0)
    assert est.shape == (3, 8, 8) and est.dtype == torch.complex64
    assert torch.equal(est, torch.ones_like(est))


def test_flat_object_is_a_fixed_point() -> None:
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(1, 16, 16, dtype=torch.complex64, generator=g)
    amps = far_field(probe).abs()
    est = error_reduction(amps, probe, 5)
    assert torch.allclose(est, torch.ones_like(est), atol=1e-3)


def test_iterations_reduce_the_modulus_error(scan64) -> None:
    probe = torch.from_numpy(scan64.probe)
    amps = torch.from_numpy(scan64.diffraction).float()
    errors = [_modulus_error(error_reduction(amps, probe, k), probe, amps) for k in (0, 1, 5, 20)]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.5 * errors[0]


def test_estimate_correlates_with_the_true_patches(scan64) -> None:
    """A real first guess: ten projections correlate with the truth where the probe shines."""
    probe = torch.from_numpy(scan64.probe)
    amps = torch.from_numpy(scan64.diffraction).float()
    true = _true_patches(scan64)
    ill = (probe.abs() ** 2).sum(0)
    mask = (ill / ill.max() > 0.3).numpy()

    def mean_corr(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.numpy()[..., mask], b.numpy()[..., mask]
        a = a - a.mean(-1, keepdims=True)
        b = b - b.mean(-1, keepdims=True)
        return float(np.mean((a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))))

    est = error_reduction(amps, probe, 10)
    # phase up to each patch's global phase (the flat start fixes it only roughly)
    offset = torch.angle((est * true.conj() * ill).sum((-2, -1), keepdim=True))
    assert mean_corr(est.abs(), true.abs()) > 0.35
    assert mean_corr(torch.angle(est * torch.exp(-1j * offset)), true.angle()) > 0.6


def test_neighbourhood_of_one_is_the_single_pattern_estimate(scan64) -> None:
    probe = torch.from_numpy(scan64.probe)
    amps = torch.from_numpy(scan64.diffraction[:5]).float()
    joint = neighbourhood_error_reduction(amps[:, None], torch.zeros(5, 1, 2), probe, 4)
    assert torch.allclose(joint, error_reduction(amps, probe, 4))


def test_flat_object_is_a_fixed_point_of_the_neighbourhood_estimate() -> None:
    g = torch.Generator().manual_seed(2)
    probe = torch.randn(2, 16, 16, dtype=torch.complex64, generator=g)  # two modes
    # a flat object of transmission 0.5: the Parseval start is already the answer
    amps = far_field(0.5 * probe).abs().square().sum(0).sqrt().expand(3, 4, 16, 16)
    offsets = torch.randn(3, 4, 2, generator=g) * 3
    offsets[:, 0] = 0
    start = neighbourhood_error_reduction(amps, offsets, probe, 0)
    assert torch.allclose(start, torch.full_like(start, 0.5), atol=1e-5)
    est = neighbourhood_error_reduction(amps, offsets, probe, 5)
    assert est.shape == (3, 16, 16) and est.dtype == torch.complex64
    assert torch.allclose(est, torch.full_like(est, 0.5), atol=1e-3)
    valid = torch.ones(16, 16, dtype=torch.bool)
    assert torch.allclose(neighbourhood_error_reduction(amps, offsets, probe, 5, valid=valid), est)


def test_neighbours_sharpen_the_estimate(scan64) -> None:
    """The overlap of four neighbours pins the patch far better than one pattern,
    and only with the offsets the right way round (a sign error would blur it)."""
    from ptychopinn.grouping import nearest_patterns

    probe = torch.from_numpy(scan64.probe)
    amps = torch.from_numpy(scan64.diffraction).float()
    pos = scan64.positions_px
    table = torch.from_numpy(nearest_patterns(pos, 4))
    offs = torch.from_numpy((pos[table.numpy()] - pos[:, None]).astype(np.float32))
    true = _true_patches(scan64)
    ill = (probe.abs() ** 2).sum(0)
    mask = (ill / ill.max() > 0.3).numpy()

    def amp_corr(est: torch.Tensor) -> float:
        a, b = est.abs().numpy()[..., mask], true.abs().numpy()[..., mask]
        a = a - a.mean(-1, keepdims=True)
        b = b - b.mean(-1, keepdims=True)
        return float(np.mean((a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))))

    single = amp_corr(error_reduction(amps, probe, 10))
    joint = amp_corr(neighbourhood_error_reduction(amps[table], offs, probe, 10))
    flipped = amp_corr(neighbourhood_error_reduction(amps[table], -offs, probe, 10))
    assert joint > single + 0.2, (single, joint)
    assert joint > 0.8
    assert flipped < joint - 0.2, (flipped, joint)


def test_neighbourhood_estimate_rejects_bad_shapes() -> None:
    probe = torch.ones(8, 8, dtype=torch.complex64)
    with pytest.raises(ValueError, match="offsets"):
        neighbourhood_error_reduction(torch.rand(2, 3, 8, 8), torch.zeros(2, 2, 2), probe, 1)
    with pytest.raises(ValueError, match="probe is"):
        neighbourhood_error_reduction(
            torch.rand(2, 3, 8, 8), torch.zeros(2, 3, 2), torch.ones(4, 4, dtype=torch.complex64), 1
        )
    with pytest.raises(ValueError, match="iterations"):
        neighbourhood_error_reduction(torch.rand(2, 3, 8, 8), torch.zeros(2, 3, 2), probe, -1)


def test_probe_modes_and_shapes() -> None:
    g = torch.Generator().manual_seed(1)
    probe = torch.randn(2, 8, 8, dtype=torch.complex64, generator=g)
    amps = torch.rand(4, 3, 8, 8, generator=g)
    assert error_reduction(amps, probe, 2).shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="probe is"):
        error_reduction(amps, torch.ones(16, 16, dtype=torch.complex64), 1)
    with pytest.raises(ValueError, match="iterations"):
        error_reduction(amps, probe, -1)
    assert prior_channels(torch.ones(4, 3, 8, 8, dtype=torch.complex64)).shape == (4, 6, 8, 8)


def test_default_prior_iterations_by_architecture() -> None:
    assert ModelConfig().prior_scope == "scan"
    assert ModelConfig().prior_iterations == 4  # passes over the whole scan
    assert ModelConfig(prior_scope="neighbourhood").prior_iterations == 20  # per pattern
    assert ModelConfig().input_channels == 8
    assert ModelConfig(architecture="cnn").prior_iterations == 0  # the original input
    assert ModelConfig(architecture="cnn").input_channels == 4
    assert ModelConfig(architecture="cnn", prior_iterations=3).input_channels == 8
    assert ModelConfig(prior_iterations=0).input_channels == 4
    assert ModelConfig().prior_neighbors == 4
    with pytest.raises(ValueError, match="prior_neighbors"):
        ModelConfig(prior_neighbors=0)
    with pytest.raises(ValueError, match="prior_iterations"):
        ModelConfig(prior_iterations=-1)
    with pytest.raises(ValueError, match="prior_scope"):
        ModelConfig(prior_scope="global")


def test_model_input_is_the_prior_in_data_scale(scan64) -> None:
    probe_n, factor = normalise_probe(torch.from_numpy(scan64.probe), 4.0)
    cfg = ModelConfig(
        n_filters_scale=0.25, gridsize=1, prior_scope="neighbourhood", prior_neighbors=1
    )
    model = PtychoPINN(cfg, probe_n, log_intensity_scale=-float(np.log(factor)))
    amps = torch.from_numpy(scan64.diffraction[:4]).float()[:, None]
    x = model.network_input(amps, 1.0)
    assert x.shape == (4, 2, 64, 64)
    # amplitudes / s with the normalised probe == amplitudes with the data's probe
    direct = error_reduction(amps, torch.from_numpy(scan64.probe), cfg.prior_iterations)
    assert torch.allclose(x[:, :1], direct.real, atol=1e-3)
    assert torch.allclose(x[:, 1:], direct.imag, atol=1e-3)
    # a precomputed prior gives the same prediction as the on-the-fly one
    with torch.no_grad():
        a1, p1 = model.predict_amp_phase(amps, 1.0)
        a2, p2 = model.predict_amp_phase(amps, 1.0, model.prior_estimate(amps))
    assert torch.allclose(a1, a2) and torch.allclose(p1, p2)


def test_training_precomputes_the_neighbourhood_prior(scan64) -> None:
    from ptychopinn.models.scan_prior import ScanPrior
    from ptychopinn.training.data import GroupDataset, prepare

    cfg = TrainingConfig(
        model={"n_filters_scale": 0.25, "prior_scope": "neighbourhood"}, batch_size=4
    )
    data = prepare(scan64, cfg)
    probe_n, factor = normalise_probe(torch.from_numpy(scan64.probe), 4.0)
    model = PtychoPINN(cfg.model, probe_n, log_intensity_scale=-float(np.log(factor)))
    model.train_input_scale.fill_(data.input_scale)  # as the training runner does
    prior = ScanPrior.for_model(model, data.amplitudes, data.positions_px)
    assert prior is not None and prior.cache is not None
    assert prior.cache.shape == data.amplitudes.shape
    assert prior.table.shape == (data.amplitudes.shape[0], 4)
    batch = GroupDataset(data, np.arange(3), False, prior).__getitems__([0, 2])
    idx = data.indices[[0, 2]]
    assert batch["prior"].shape == (2, 4, 64, 64)
    # member j of group 0: the joint estimate of that pattern with its 3 nearest neighbours
    j = int(idx[0, 1])
    members = prior.table[j]
    offs = data.positions_px[members] - data.positions_px[j]
    direct = model.prior_estimate(data.amplitudes[members][None], offs[None].float())[0]
    assert torch.allclose(batch["prior"][0, 1], direct, atol=1e-5)
    # without the prior a neighbourhood model refuses to guess from the batch alone
    with pytest.raises(ValueError, match="prior_neighbors"):
        model.network_input(data.amplitudes[idx], 1.0)
    cnn = PtychoPINN(ModelConfig(architecture="cnn", n_filters_scale=0.25), probe_n)
    assert ScanPrior.for_model(cnn, data.amplitudes, data.positions_px) is None  # raw input


def test_scan_prior_on_demand_matches_the_cache(scan64) -> None:
    from ptychopinn.models.scan_prior import ScanPrior

    amps = torch.from_numpy(scan64.diffraction).float()
    probe = torch.from_numpy(scan64.probe)
    cached = ScanPrior(amps, scan64.positions_px, probe, 1.0, 3, 4)
    lazy = ScanPrior(amps, scan64.positions_px, probe, 1.0, 3, 4, cache_limit_bytes=0)
    assert lazy.cache is None
    index = torch.tensor([[3, 7], [7, 0]])
    assert torch.allclose(cached(index), lazy(index), atol=1e-5)
    assert lazy(index).shape == (2, 2, 64, 64)


def test_switching_architecture_re_resolves_the_prior_default() -> None:
    from ptychopinn.config.io import with_overrides

    cfg = TrainingConfig()
    assert cfg.model.prior_iterations == 4
    cnn = with_overrides(cfg, {"model": {"architecture": "cnn"}})
    assert cnn.model.prior_iterations == 0  # the original input, not unet's resolved 4
    hood = with_overrides(cfg, {"model": {"prior_scope": "neighbourhood"}})
    assert hood.model.prior_iterations == 20  # the neighbourhood default, not the scan's 4
    kept = with_overrides(cfg, {"model": {"architecture": "cnn", "prior_iterations": 4}})
    assert kept.model.prior_iterations == 4
    assert with_overrides(ModelConfig(), {"architecture": "cnn"}).prior_iterations == 0
    assert with_overrides(cnn, {"learning_rate": 1e-3}).model.prior_iterations == 0


def test_prior_amplitude_step_default_by_scope() -> None:
    """Half amplitude steps for the scan prior, whole ones for the neighbourhood prior
    (which has no other value); switching scope re-resolves the default."""
    from ptychopinn.config.io import with_overrides

    assert ModelConfig().prior_amplitude_step == 0.5
    assert ModelConfig(prior_scope="neighbourhood").prior_amplitude_step == 1.0
    assert ModelConfig(prior_amplitude_step=1).prior_amplitude_step == 1.0
    with pytest.raises(ValueError, match="prior_amplitude_step.*neighbourhood"):
        ModelConfig(prior_scope="neighbourhood", prior_amplitude_step=0.5)
    for bad in (0, -0.5, 1.5):
        with pytest.raises(ValueError, match="prior_amplitude_step"):
            ModelConfig(prior_amplitude_step=bad)
    cfg = TrainingConfig()
    hood = with_overrides(cfg, {"model": {"prior_scope": "neighbourhood"}})
    assert hood.model.prior_amplitude_step == 1.0  # not the scan's resolved 0.5
    back = with_overrides(hood, {"model": {"prior_scope": "scan"}})
    assert back.model.prior_amplitude_step == 0.5
    kept = with_overrides(cfg, {"model": {"prior_amplitude_step": 0.25}})
    assert with_overrides(kept, {"learning_rate": 1e-3}).model.prior_amplitude_step == 0.25


def _reloaded_without(tmp_path, model, cfg, probe_n, *keys: str):
    """``model`` saved as a bundle whose config lacks the model ``keys`` (as bundles
    written before those keys existed), loaded back (`load_pinn`)."""
    from ptychopinn.bundle.format import save_bundle
    from ptychopinn.bundle.pytorch import load_pinn

    config = cfg.model_dump(mode="json")
    for key in keys:
        del config["model"][key]
    path = save_bundle(tmp_path / "old", model.state_dict(), config=config, backend="pytorch",
                       extra={"probe_shape": list(probe_n.shape)})
    return load_pinn(path)


def test_scan_prior_bundles_older_than_the_amplitude_step_take_whole_steps(
    tmp_path, small_scan
) -> None:
    """A scan-prior bundle saved before ``prior_amplitude_step`` existed was trained on
    plain PIE priors: it loads with 1 and its inference prior is plain PIE."""
    from ptychopinn.models.scan_prior import ScanPrior

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25})
    assert cfg.model.prior_scope == "scan"
    probe_n, factor = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    model = PtychoPINN(cfg.model, probe_n, log_intensity_scale=-float(np.log(factor))).eval()
    loaded = _reloaded_without(tmp_path, model, cfg, probe_n, "prior_amplitude_step")
    assert loaded.config.model.prior_amplitude_step == 1.0
    amps = torch.from_numpy(small_scan.diffraction).float()
    old = ScanPrior.for_model(loaded.model, amps, small_scan.positions_px)
    new = ScanPrior.for_model(model, amps, small_scan.positions_px)
    whole = ModelConfig(N=32, n_filters_scale=0.25, prior_amplitude_step=1)
    plain = ScanPrior.for_config(
        whole, amps, small_scan.positions_px, model.physics.probe,
        prior_amplitude_scale=float(model.prior_amplitude_scale),
        train_input_scale=float(model.train_input_scale))
    assert torch.equal(old.estimate.canvas, plain.estimate.canvas)
    assert not torch.allclose(old.estimate.canvas, new.estimate.canvas, atol=1e-4)
    with pytest.raises(ValueError, match="amplitude_step"):
        ScanPrior(amps, small_scan.positions_px, loaded.model.physics.probe, 1.0, 4, 4,
                  scope="neighbourhood", amplitude_step=0.5)


def test_scan_prior_batch_size_reaches_the_passes_and_old_bundles_keep_64(
    tmp_path, small_scan
) -> None:
    """``model.prior_batch_size`` (default 64) is the patterns per update of the scan
    prior's passes, in training's and inference's prior alike (`ScanPrior.for_config`);
    a bundle saved before the key existed loads with 64, as it was trained (not with a
    model's setting); bad values are refused by name."""
    from ptychopinn.bundle.format import LEGACY_PRIOR_BATCH_SIZE
    from ptychopinn.models.scan_prior import ScanPrior, dose_ratio
    from ptychopinn.physics.prior_frc import frc_filtered_estimate

    assert TrainingConfig().model.prior_batch_size == 64 == LEGACY_PRIOR_BATCH_SIZE
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_batch_size": 16})
    probe_n, factor = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    model = PtychoPINN(cfg.model, probe_n, log_intensity_scale=-float(np.log(factor))).eval()
    amps = torch.from_numpy(small_scan.diffraction).float()
    pos = small_scan.positions_px
    kw = dict(integer_grid=True, amplitude_step=cfg.model.prior_amplitude_step,
              com_correction=cfg.model.prior_com_correction)
    scaled = model.physics.probe * (float(model.prior_amplitude_scale)
                                    * dose_ratio(amps, float(model.train_input_scale)))
    for size in (16, 5):
        mcfg = cfg.model.model_copy(update={"prior_batch_size": size})
        prior = ScanPrior.for_config(mcfg, amps, pos, model.physics.probe,
                                     prior_amplitude_scale=float(model.prior_amplitude_scale),
                                     train_input_scale=float(model.train_input_scale))
        direct, _ = frc_filtered_estimate(amps, pos, scaled, mcfg.prior_iterations,
                                          batch_size=size, **kw)
        assert torch.allclose(prior.estimate.canvas, direct.canvas, atol=1e-5)
    loaded = _reloaded_without(tmp_path, model, cfg, probe_n, "prior_batch_size")
    assert loaded.config.model.prior_batch_size == 64
    old = ScanPrior.for_model(loaded.model, amps, pos)
    new = ScanPrior.for_model(model, amps, pos)
    direct64, _ = frc_filtered_estimate(amps, pos, scaled, cfg.model.prior_iterations,
                                        batch_size=64, **kw)
    assert torch.allclose(old.estimate.canvas, direct64.canvas, atol=1e-5)
    assert not torch.allclose(old.estimate.canvas, new.estimate.canvas, atol=1e-3)
    for bad in (0, -1, 5000, 2.5):
        with pytest.raises(ValueError, match="prior_batch_size"):
            ModelConfig(prior_batch_size=bad)


def test_subpixel_and_frc_filter_default_by_scan_prior_and_old_bundles_keep_theirs(
    tmp_path, small_scan
) -> None:
    """With a scan prior the defaults are the probe-shift model and the FRC filter; a
    scope, architecture or passes override re-resolves them; bundles saved before
    the keys existed (or before their defaults changed) load as they were trained:
    bilinear, no filter."""
    from ptychopinn.config.io import with_overrides

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25})
    assert (cfg.model.subpixel, cfg.model.prior_frc_filter) == ("probe_shift", True)
    hood = with_overrides(cfg, {"model": {"prior_scope": "neighbourhood"}})
    assert (hood.model.subpixel, hood.model.prior_frc_filter) == ("bilinear", False)
    raw = with_overrides(cfg, {"model": {"prior_iterations": 0}})
    assert (raw.model.subpixel, raw.model.prior_frc_filter) == ("bilinear", False)
    back = with_overrides(raw, {"model": {"prior_iterations": 4}})
    assert (back.model.subpixel, back.model.prior_frc_filter) == ("probe_shift", True)
    kept = with_overrides(cfg, {"model": {"subpixel": "bilinear"}})
    assert with_overrides(kept, {"learning_rate": 1e-3}).model.subpixel == "bilinear"
    with pytest.raises(ValueError, match="subpixel"):
        ModelConfig(subpixel="nearest")
    probe_n, factor = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    model = PtychoPINN(cfg.model, probe_n, log_intensity_scale=-float(np.log(factor))).eval()
    loaded = _reloaded_without(tmp_path, model, cfg, probe_n, "subpixel",
                               "prior_frc_filter").config.model
    assert (loaded.subpixel, loaded.prior_frc_filter) == ("bilinear", False)


def test_inference_cached_prior_matches_per_batch_prior(small_scan, monkeypatch) -> None:
    """Computing the prior once per pattern changes the cost, not the reconstruction."""
    from ptychopinn.bundle.pytorch import LoadedModel
    from ptychopinn.inference.reconstruct import reconstruct_pytorch
    from ptychopinn.models import scan_prior as prior_mod

    cfg = TrainingConfig(
        model={"N": 32, "n_filters_scale": 0.25, "prior_scope": "neighbourhood"}
    )
    probe_n, factor = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    torch.manual_seed(0)
    model = PtychoPINN(cfg.model, probe_n, log_intensity_scale=-float(np.log(factor))).eval()
    loaded = LoadedModel(model=model, config=cfg, manifest={}, path=None)
    cached = reconstruct_pytorch(loaded, small_scan)
    monkeypatch.setattr(prior_mod, "PRIOR_CACHE_LIMIT_BYTES", 0)  # force per-batch priors
    per_batch = reconstruct_pytorch(loaded, small_scan)
    assert np.allclose(cached.object, per_batch.object, atol=1e-5)


def _legacy_bundle(tmp_path, small_scan):
    """A bundle as written before `prior_iterations` existed: no config key, no scale tensor."""
    from ptychopinn.bundle.format import save_bundle

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 0})
    probe_n, _ = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    torch.manual_seed(0)
    model = PtychoPINN(cfg.model, probe_n, log_intensity_scale=1.5).eval()
    state = {k: v for k, v in model.state_dict().items() if k != "prior_amplitude_scale"}
    config = cfg.model_dump(mode="json")
    del config["model"]["prior_iterations"]
    del config["model"]["prior_neighbors"]
    del config["model"]["prior_residual"]
    del config["model"]["prior_residual_gate"]
    del config["model"]["prior_scope"]
    del config["model"]["prior_amplitude_step"]
    path = save_bundle(tmp_path / "legacy", state, config=config, backend="pytorch",
                       extra={"probe_shape": list(probe_n.shape)})
    return path, model


def test_bundles_older_than_the_prior_load_as_raw_diffraction(tmp_path, small_scan) -> None:
    from ptychopinn.bundle.pytorch import load_pinn

    path, model = _legacy_bundle(tmp_path, small_scan)
    loaded = load_pinn(path)
    assert loaded.config.model.prior_iterations == 0  # not unet's default 10
    assert loaded.config.model.prior_neighbors == 1
    assert loaded.config.model.prior_residual is False
    assert loaded.config.model.prior_residual_gate is False
    assert loaded.config.model.prior_scope == "neighbourhood"
    assert float(loaded.model.prior_amplitude_scale) == pytest.approx(np.exp(1.5), rel=1e-6)
    x = torch.from_numpy(small_scan.diffraction[:8]).float().reshape(2, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model.predict_patches(x, 1.0), model.predict_patches(x, 1.0))


def test_tensorflow_loads_bundles_older_than_the_prior(tmp_path, small_scan) -> None:
    pytest.importorskip("tensorflow")
    from ptychopinn.tf.bundle import load_tf

    path, _ = _legacy_bundle(tmp_path, small_scan)
    loaded = load_tf(path)
    assert loaded.config.model.prior_iterations == 0
    assert float(loaded.model.prior_amplitude_scale.numpy()) == pytest.approx(np.exp(1.5), 1e-6)


def test_cli_architecture_flag_over_a_dumped_config_re_resolves_the_prior(tmp_path) -> None:
    from ptychopinn.cli.commands import train_config_from_args
    from ptychopinn.cli.main import build_parser
    from ptychopinn.config.io import save_config

    dumped = tmp_path / "cfg.yaml"
    save_config(TrainingConfig(), dumped)  # carries unet's resolved prior_iterations: 4
    parse = build_parser().parse_args
    base = ["train", "--data", "s.npz", "--output-dir", "o", "--config", str(dumped)]
    assert train_config_from_args(parse(base)).model.prior_iterations == 4
    cnn = train_config_from_args(parse([*base, "--architecture", "cnn"]))
    assert cnn.model.architecture == "cnn" and cnn.model.prior_iterations == 0
    kept = train_config_from_args(
        parse([*base, "--architecture", "cnn", "--set", "model.prior_iterations=3"])
    )
    assert kept.model.prior_iterations == 3


def test_residual_heads_correct_the_prior(scan64) -> None:
    """With prior_residual the heads' initial output (0.6, 0) returns the prior itself,
    and an untrained network starts close to it; without, the heads give the patch."""
    probe_n, factor = normalise_probe(torch.from_numpy(scan64.probe), 4.0)
    amps = torch.from_numpy(scan64.diffraction[:8]).float().reshape(2, 4, 64, 64)
    torch.manual_seed(0)
    cfg = ModelConfig(n_filters_scale=0.25, prior_scope="neighbourhood", prior_neighbors=1)
    model = PtychoPINN(cfg, probe_n, log_intensity_scale=-float(np.log(factor))).eval()
    prior = model.prior_estimate(amps)
    with torch.no_grad():
        start = model.predict_patches(amps, 1.0)
    a, b = start.abs().flatten(), prior.abs().flatten()
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.9

    class Neutral(torch.nn.Module):
        def forward(self, x):
            shape = (x.shape[0], x.shape[1] // 2, *x.shape[-2:])
            return torch.full(shape, 0.6), torch.zeros(shape)

    model.generator = Neutral()
    with torch.no_grad():
        assert torch.allclose(model.predict_patches(amps, 1.0), prior, atol=1e-5)
        model.cfg = cfg.model_copy(update={"prior_residual": False})
        direct = model.predict_patches(amps, 1.0)
    assert torch.allclose(direct, torch.full_like(direct, 0.6))


def test_prior_of_a_scan_at_another_dose_is_on_the_training_scale(scan64) -> None:
    """Inference on a scan recorded at 1 % of the training dose feeds the network the
    same prior (amplitudes normalised by the dose ratio), not one 10x too dark."""
    from ptychopinn.models.scan_prior import ScanPrior, dose_ratio
    from ptychopinn.training.data import input_scale_of

    probe_n, factor = normalise_probe(torch.from_numpy(scan64.probe), 4.0)
    model = PtychoPINN(ModelConfig(n_filters_scale=0.25), probe_n,
                       log_intensity_scale=-float(np.log(factor)))
    amps = torch.from_numpy(scan64.diffraction).float()
    model.train_input_scale.fill_(input_scale_of(amps))
    every = torch.arange(amps.shape[0])
    same = ScanPrior.for_model(model, amps, scan64.positions_px)(every)
    dim = ScanPrior.for_model(model, amps * 0.1, scan64.positions_px)(every)
    assert dose_ratio(amps * 0.1, float(model.train_input_scale)) == pytest.approx(0.1, rel=1e-5)
    assert float((same - dim).abs().max()) < 1e-3 * float(same.abs().max())
    raw = ScanPrior(amps * 0.1, scan64.positions_px, model.physics.probe,
                    float(model.prior_amplitude_scale), 4, 4, scope="scan")(every)
    assert float(raw.abs().mean() / same.abs().mean()) < 0.5


def test_residual_gate_keeps_the_prior_where_the_probe_is_dark() -> None:
    """With the gate, a correction acts fully where the probe is brightest and not at all
    where it is dark; without it, everywhere alike."""
    n = 16
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    probe = torch.where((yy - 8) ** 2 + (xx - 8) ** 2 < 16, 1.0, 0.0).to(torch.complex64)
    probe[8, 8] = 2.0  # the brightest pixel: g = 1 there
    prior = torch.polar(torch.full((1, 1, n, n), 0.8), torch.full((1, 1, n, n), 0.3))

    class Fixed(torch.nn.Module):
        def forward(self, x):
            shape = (x.shape[0], x.shape[1] // 2, *x.shape[-2:])
            return torch.full(shape, 0.3), torch.full(shape, 1.0)

    # N is only validated here
    cfg = ModelConfig(N=32, prior_scope="neighbourhood", prior_neighbors=1)
    model = PtychoPINN(cfg, probe[None])
    model.generator = Fixed()
    with torch.no_grad():
        amp, phase = model.predict_amp_phase(torch.zeros(1, 1, n, n), 1.0, prior)
    assert amp[0, 0, 8, 8] == pytest.approx(0.4) and phase[0, 0, 8, 8] == pytest.approx(1.3)
    assert amp[0, 0, 0, 0] == pytest.approx(0.8) and phase[0, 0, 0, 0] == pytest.approx(0.3)
    model.cfg = cfg.model_copy(update={"prior_residual_gate": False})
    with torch.no_grad():
        amp, phase = model.predict_amp_phase(torch.zeros(1, 1, n, n), 1.0, prior)
    assert torch.allclose(amp, torch.full_like(amp, 0.4))
    assert torch.allclose(phase, torch.full_like(phase, 1.3))


def test_bad_detector_pixels_are_ignored_by_the_neighbourhood_estimate(scan64) -> None:
    """A corrupted pixel under the bad-pixel mask changes nothing; unmasked, it does."""
    from ptychopinn.grouping import nearest_patterns

    probe = torch.from_numpy(scan64.probe)
    pos = scan64.positions_px[:8]
    table = torch.from_numpy(nearest_patterns(pos, 4))
    offs = torch.from_numpy((pos[table.numpy()] - pos[:, None]).astype(np.float32))
    amps = torch.from_numpy(scan64.diffraction[:8]).float()[table]
    bad = amps.clone()
    bad[..., 30, 33] = 1e4  # a hot pixel in every pattern
    valid = torch.ones(64, 64, dtype=torch.bool)
    valid[30, 33] = False
    clean = neighbourhood_error_reduction(amps, offs, probe, 5, valid=valid)
    masked = neighbourhood_error_reduction(bad, offs, probe, 5, valid=valid)
    unmasked = neighbourhood_error_reduction(bad, offs, probe, 5)
    assert torch.allclose(masked, clean, atol=1e-4)
    assert not torch.allclose(unmasked, clean, atol=1e-2)
