"""The scan prior's over-relaxation (``step_scale`` / ``model.prior_step_scale``)."""

from __future__ import annotations

import pytest
import torch

from ptychopinn.physics.prior_scan import canvas_frame, scan_error_reduction
from test_prior_scan import _amp_error  # rms amplitude error over the well-lit pixels


def _scan(probe_kind: str, n_positions: int = 100, seed: int = 0):
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    return simulate_scan(SimulationConfig(n_positions=n_positions, seed=seed,
                                          probe_kind=probe_kind))


def _inputs(scan):
    return torch.from_numpy(scan.diffraction).float(), torch.from_numpy(scan.probe)


def infer_option(field: str, *flags: str):  # noqa: ANN201
    """``InferenceConfig.<field>`` as ``ptychopinn infer ... <flags>`` sets it."""
    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser

    args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz", *flags])
    return getattr(infer_config_from_args(args), field)


@pytest.mark.parametrize("windowed", [False, True])
def test_one_update_is_scaled_by_the_step_scale(monkeypatch, windowed) -> None:
    """With every pattern in one mini-batch, one pass is one update from the flat
    start: over-relaxed by s, it moves the canvas s times as far (both the whole-canvas
    and the windowed update paths), and s = 1 is plain PIE to the bit."""
    import ptychopinn.physics.prior_scan as ps

    if windowed:
        monkeypatch.setattr(ps, "UPDATE_WHOLE_RATIO", 0)
    scan = _scan("disk", n_positions=36)
    amps, probe = _inputs(scan)
    kw = dict(batch_size=64, amplitude_step=0.5)
    start = scan_error_reduction(amps, scan.positions_px, probe, 0).canvas
    plain = scan_error_reduction(amps, scan.positions_px, probe, 1, **kw).canvas
    assert torch.equal(plain, scan_error_reduction(amps, scan.positions_px, probe, 1,
                                                   step_scale=1.0, **kw).canvas)
    for s in (0.5, 2.5):
        moved = scan_error_reduction(amps, scan.positions_px, probe, 1, step_scale=s, **kw)
        expected = start + s * (plain - start)
        assert torch.allclose(moved.canvas, expected, atol=1e-5 * float(start.abs().max()))
        assert not torch.allclose(moved.canvas, plain, atol=1e-3)  # the comparison can fail


def test_over_relaxation_converges_a_gaussian_probe_scan_further() -> None:
    """Under a Gaussian beam (a far field of a few pixels) plain passes converge slowly
    and over-relaxed ones get closer to the object in the same passes (measured 0.045 ->
    0.030 rms amplitude error); under the default disk probe the same over-relaxation
    overshoots (0.0077 -> 0.011: why the default is 1). The prior's half amplitude steps,
    16 patterns per update on a 225-pattern scan."""
    kw = dict(amplitude_step=0.5, batch_size=16)
    errors = {}
    for kind in ("gaussian", "disk"):
        scan = _scan(kind, n_positions=225)
        amps, probe = _inputs(scan)
        errors[kind] = [_amp_error(scan_error_reduction(amps, scan.positions_px, probe, 4,
                                                        step_scale=s, **kw), scan)
                        for s in (1.0, 3.0)]
    plain, relaxed = errors["gaussian"]
    assert relaxed < 0.8 * plain, errors
    plain, relaxed = errors["disk"]
    assert relaxed > 1.2 * plain, errors


def test_bad_step_scales_are_refused() -> None:
    scan = _scan("disk", n_positions=16)
    amps, probe = _inputs(scan)
    for bad in (0.0, -1.0, 4.5):
        with pytest.raises(ValueError, match="step_scale must be in"):
            scan_error_reduction(amps, scan.positions_px, probe, 1, step_scale=bad)
    _, shape = canvas_frame(scan.positions_px, scan.patch_size)
    assert shape[0] > scan.patch_size  # the scan is a scan, not one window


def test_step_scale_option_config_bundle_cli_and_prior() -> None:
    from ptychopinn.bundle.format import manifest_config
    from ptychopinn.config import InferenceConfig, ModelConfig, TrainingConfig
    from ptychopinn.config.io import with_overrides
    from ptychopinn.errors import ConfigError
    from ptychopinn.inference.reconstruct import check_prior_options
    from ptychopinn.models.scan_prior import ScanPrior

    assert ModelConfig().prior_step_scale == 1.0
    for bad in (0, 4.5, "fast"):
        with pytest.raises(ValueError, match="prior_step_scale"):
            ModelConfig(prior_step_scale=bad)
    with pytest.raises(ValueError, match="prior_step_scale other than 1 needs prior_scope"):
        ModelConfig(prior_scope="neighbourhood", prior_step_scale=2.0)
    cfg = with_overrides(TrainingConfig(), {"model": {"prior_step_scale": 3}})
    assert cfg.model.prior_step_scale == 3.0
    with pytest.raises(ConfigError, match="prior_step_scale"):
        with_overrides(TrainingConfig(), {"model": {"prior_step_scale": 9}})
    # bundles written before the option ran plain PIE
    raw = cfg.model_dump(mode="json")
    del raw["model"]["prior_step_scale"]
    assert manifest_config({"config": raw}, "old.bundle").model.prior_step_scale == 1.0
    with pytest.raises(ValueError, match="prior_step_scale"):
        InferenceConfig(prior_step_scale=0)

    assert infer_option("prior_step_scale") is None
    assert infer_option("prior_step_scale", "--prior-step-scale", "2.5") == 2.5
    # the inference option needs a model with the scan prior
    neighbourhood = ModelConfig(prior_scope="neighbourhood")
    check_prior_options(neighbourhood, InferenceConfig(prior_step_scale=1.0), "m")
    with pytest.raises(ConfigError, match="prior_step_scale=2.0 needs a model with the scan"):
        check_prior_options(neighbourhood, InferenceConfig(prior_step_scale=2.0), "m")
    # the prior takes it from the model's config unless overridden
    scan = _scan("gaussian", n_positions=25)
    amps, probe = _inputs(scan)
    kw = dict(prior_amplitude_scale=1.0, train_input_scale=0.0)
    mcfg = ModelConfig(prior_step_scale=3.0, prior_frc_filter=False)
    relaxed = ScanPrior.for_config(mcfg, amps, scan.positions_px, probe, **kw)
    plain = ScanPrior.for_config(mcfg, amps, scan.positions_px, probe, step_scale=1.0, **kw)
    assert relaxed.step_scale == 3.0 and plain.step_scale == 1.0
    assert not torch.equal(relaxed.estimate.canvas, plain.estimate.canvas)
    with pytest.raises(ValueError, match="step_scale 2.0 needs scope 'scan'"):
        ScanPrior(amps, scan.positions_px, probe, 1.0, 1, 3, step_scale=2.0)
    with pytest.raises(ValueError, match="prior step scale must be in"):
        ScanPrior(amps, scan.positions_px, probe, 1.0, 1, 3, scope="scan", step_scale=0.0)


def test_far_field_tail_tells_smooth_beams_from_structured_probes() -> None:
    """The simulator's Gaussian beam (in focus or defocused) puts almost none of its
    far-field energy beyond 4 px of its centre; the default disk (Airy rings), a zone plate
    and a random (speckle) probe put much of it there, the disk 2.5 times the threshold; a
    plane wave puts none beyond 1 px."""
    from ptychopinn.physics.probe import FEATURELESS_TAIL, far_field_tail
    from ptychopinn.simulation.probes import disk_probe, gaussian_probe, zoneplate_probe

    n, d = 64, 0.4 * 64
    smooth = [far_field_tail(torch.from_numpy(gaussian_probe(n, d, f))) for f in (None, 4.0)]
    assert all(t < 1e-3 * FEATURELESS_TAIL for t in smooth), smooth
    disk = far_field_tail(torch.from_numpy(disk_probe(n, d, 4.0)))
    zone = far_field_tail(torch.from_numpy(zoneplate_probe(n, d)))
    g = torch.Generator().manual_seed(0)
    speckle = far_field_tail(torch.polar(torch.rand(2, n, n, generator=g),
                                         6.3 * torch.rand(2, n, n, generator=g)))
    assert min(disk, zone, speckle) > 2 * FEATURELESS_TAIL, (disk, zone, speckle)
    assert zone > disk  # the zone plate's far field is an annulus, wider than the Airy disk
    flat = torch.ones(n, n, dtype=torch.complex64)
    assert far_field_tail(flat, radius_px=1.0) == 0.0
    with pytest.raises(ValueError, match="the probe is zero"):
        far_field_tail(torch.zeros(n, n, dtype=torch.complex64))


def test_featureless_probe_advice_and_the_training_warning(tmp_path, caplog) -> None:
    """Under a Gaussian beam, training with the default recipe 'auto' chooses the
    'featureless' one (logged, saved in config.yaml and the bundle) and does not warn;
    with 'plain' it warns with the recipe; under the default disk it stays plain, silently.
    The advice itself: none with the recipe's step scale or without the scan prior."""
    import logging

    import yaml

    from ptychopinn import api
    from ptychopinn.bundle.pytorch import load_pinn
    from ptychopinn.config import ModelConfig, TrainingConfig
    from ptychopinn.models.prior_recipe import featureless_probe_advice
    from ptychopinn.simulation import SimulationConfig, simulate_scan
    from ptychopinn.simulation.probes import disk_probe, gaussian_probe

    gauss = torch.from_numpy(gaussian_probe(64, 25.6, 4.0))
    disk = torch.from_numpy(disk_probe(64, 25.6, 4.0))
    advice = featureless_probe_advice(ModelConfig(prior_recipe="plain"), gauss)
    assert advice is not None and "--set model.prior_recipe=featureless" in advice
    assert "prior_settle_passes 4" in advice  # the recipe named as it is
    assert featureless_probe_advice(ModelConfig(), disk) is None
    assert featureless_probe_advice(ModelConfig(prior_step_scale=3.0), gauss) is None
    assert featureless_probe_advice(ModelConfig(prior_recipe="featureless"), gauss) is None
    assert featureless_probe_advice(ModelConfig(prior_scope="neighbourhood"), gauss) is None
    assert featureless_probe_advice(ModelConfig(prior_iterations=0), gauss) is None

    def train(probe_kind: str, **model) -> tuple[list[str], list[str], ModelConfig, dict]:
        scan = simulate_scan(SimulationConfig(N=32, n_positions=36, seed=0,
                                              probe_kind=probe_kind))
        out = tmp_path / f"{probe_kind}{len(model)}"
        cfg = TrainingConfig.model_validate({
            "output_dir": str(out), "nepochs": 1, "max_time_minutes": None,
            "batch_size": 8, "save_reconstruction": False,
            "model": {"N": 32, "n_filters_scale": 0.25, **model},
            "execution": {"logger": "none", "progress_bar": False, "accelerator": "cpu"}})
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ptychopinn.training.runner"):
            result = api.train(cfg, scan)
        said = [r.getMessage() for r in caplog.records]
        saved = yaml.safe_load((out / "config.yaml").read_text())["model"]
        return ([m for m in said if "far field is a small spot" in m],
                [m for m in said if "prior recipe 'auto'" in m],
                load_pinn(result.bundle_path).config.model, saved)

    warned, chosen, bundled, saved = train("gaussian")
    assert warned == [] and len(chosen) == 1 and "'featureless'" in chosen[0], chosen
    assert bundled.prior_recipe == "featureless" and saved["prior_recipe"] == "featureless"
    assert (bundled.prior_step_scale, bundled.prior_batch_size, bundled.prior_iterations,
            bundled.prior_settle_passes, bundled.prior_object_momentum) == (2.0, 32, 12, 4, 0.8)
    assert saved["prior_batch_size"] == 32
    warned, chosen, bundled, _ = train("gaussian", prior_recipe="plain")
    assert len(warned) == 1 and "model.prior_recipe=featureless" in warned[0], warned
    assert chosen == [] and bundled.prior_step_scale == 1.0
    warned, chosen, bundled, _ = train("disk")
    assert warned == [] and chosen == []
    assert bundled.prior_recipe == "plain" and bundled.prior_batch_size == 64
