"""``model.prior_recipe``: the 'featureless' recipe, 'auto' resolved when training starts
(`models.prior_recipe`), and its dose signal (`physics.prior_misfit`)."""

from __future__ import annotations

import math

import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.config.schema import FEATURELESS_RECIPE
from ptychopinn.physics.prior_misfit import misfit_over_noise_floor


def _scan(probe_kind: str = "gaussian", photons: float = 1e6, **kw):
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    return simulate_scan(SimulationConfig(N=32, n_positions=36, seed=0, probe_kind=probe_kind,
                                          photons_per_pattern=photons, **kw))


def _ratio(scan, passes: int = 1) -> float:
    return misfit_over_noise_floor(torch.from_numpy(scan.diffraction).float(),
                                   scan.positions_px, torch.from_numpy(scan.probe), passes)


def test_misfit_is_zero_without_noise_and_near_one_at_the_noise_floor() -> None:
    """A flat object is the passes' flat start: noiseless counts leave no misfit, Poisson
    counts leave about the noise floor (measured 1.33 at 1e6 photons, 1.41 at 1e4)."""
    flat = dict(amplitude_range=(1.0, 1.0), phase_range_rad=(0.0, 0.0))
    assert _ratio(_scan(poisson_noise=False, **flat)) < 1e-6
    for photons in (1e6, 1e4):
        assert 0.8 < _ratio(_scan(photons=photons, **flat)) < 2.0


def test_misfit_grows_with_the_dose_and_falls_with_passes() -> None:
    """The same textured object under a Gaussian beam: 119 times the floor after one pass
    at 1e6 photons, 6.6 at 1e4 (measured), and less after more passes."""
    high, low = _scan(photons=1e6), _scan(photons=1e4)
    assert _ratio(high) > 50 and _ratio(low) < 10
    assert _ratio(high, 2) < _ratio(high, 1)


def test_misfit_refuses_bad_input() -> None:
    scan = _scan()
    amps = torch.from_numpy(scan.diffraction).float()
    probe = torch.from_numpy(scan.probe)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="passes must be an integer >= 1"):
            misfit_over_noise_floor(amps, scan.positions_px, probe, bad)
    with pytest.raises(ValueError, match="no counts"):
        misfit_over_noise_floor(torch.zeros_like(amps), scan.positions_px, probe)


def test_featureless_recipe_fills_what_is_not_given() -> None:
    m = ModelConfig(prior_recipe="featureless")
    assert (m.prior_step_scale, m.prior_batch_size, m.prior_iterations) == (3.0, 32, 12)
    assert m.prior_frc_filter and m.subpixel == "probe_shift"  # still the scan prior's
    m = ModelConfig(prior_recipe="featureless", prior_batch_size=16, prior_iterations=None)
    assert (m.prior_step_scale, m.prior_batch_size, m.prior_iterations) == (3.0, 16, 12)
    assert ModelConfig.model_validate(m.model_dump(mode="json")) == m
    assert ModelConfig().prior_recipe == "auto"
    with pytest.raises(ValueError, match="prior_recipe 'featureless' needs the scan prior"):
        ModelConfig(prior_recipe="featureless", prior_scope="neighbourhood")
    with pytest.raises(ValueError, match="prior_recipe 'featureless' needs the scan prior"):
        ModelConfig(prior_recipe="featureless", prior_iterations=0)
    with pytest.raises(ValueError, match="'auto', 'plain' or 'featureless'"):
        ModelConfig(prior_recipe="gaussian")


def test_bundles_without_the_recipe_read_as_plain() -> None:
    from ptychopinn.bundle.format import manifest_config
    from ptychopinn.config import TrainingConfig

    raw = TrainingConfig().model_dump(mode="json")
    del raw["model"]["prior_recipe"]
    assert manifest_config({"config": raw}, "old.safetensors").model.prior_recipe == "plain"


def _resolve(scan, model: ModelConfig | None = None, *, counts: bool = True,
             like: ModelConfig | None = None):
    from ptychopinn.models.pinn import initial_log_scale, normalise_probe
    from ptychopinn.models.prior_recipe import resolve_prior_recipe
    from ptychopinn.training.data import input_scale_of

    model = model or ModelConfig(N=32)
    probe_n, factor = normalise_probe(torch.from_numpy(scan.probe), model.probe_scale)
    amps = torch.from_numpy(scan.diffraction).float()
    counts_pp = float(amps.square().sum((-2, -1)).mean())
    log_s = initial_log_scale(counts_pp, probe_n, "sqrt_counts", factor)
    assert input_scale_of(amps) > 0
    return resolve_prior_recipe(model, probe_n, amps, scan.positions_px,
                                amplitude_scale=math.exp(log_s), counts=counts, like=like)


def test_auto_chooses_the_featureless_recipe_for_a_well_exposed_gaussian_beam_scan() -> None:
    m, why = _resolve(_scan("gaussian", 1e6))
    assert m.prior_recipe == "featureless"
    assert {k: getattr(m, k) for k in FEATURELESS_RECIPE} == FEATURELESS_RECIPE
    assert "below 0.001" in why and "times the photon-noise floor" in why
    # everything else is as it was
    assert m.model_dump(exclude={"prior_recipe", *FEATURELESS_RECIPE}) == ModelConfig(
        N=32).model_dump(exclude={"prior_recipe", *FEATURELESS_RECIPE})


def test_auto_keeps_the_plain_prior_elsewhere_unchanged() -> None:
    """Under the disk probe (quietly), at low dose, with the prior set by hand, and
    without counts, 'auto' becomes 'plain' with the values it had."""
    cases = [(_scan("disk", 1e6), ModelConfig(N=32), True, None),
             (_scan("gaussian", 1e4), ModelConfig(N=32), True, "a low dose"),
             (_scan("gaussian", 1e6), ModelConfig(N=32, prior_batch_size=16), True,
              "set by hand"),
             (_scan("gaussian", 1e6), ModelConfig(N=32), False, "dose is unknown")]
    for scan, model, counts, said in cases:
        m, why = _resolve(scan, model, counts=counts)
        assert m == model.model_copy(update={"prior_recipe": "plain"})
        assert (why is None) if said is None else (said in why), why
    for recipe in ("plain", "featureless"):  # a recipe given is kept, silently
        model = ModelConfig(N=32, prior_recipe=recipe)
        assert _resolve(_scan("gaussian", 1e6), model) == (model, None)
    raw = ModelConfig(N=32, prior_iterations=0)  # no scan prior: nothing to choose
    assert _resolve(_scan("gaussian", 1e6), raw) == (
        raw.model_copy(update={"prior_recipe": "plain"}), None)


def test_fine_tuning_keeps_the_recipe_of_the_bundle_it_starts_from() -> None:
    """With ``init_from`` the network was trained on its bundle's prior: 'auto' takes that
    recipe, whatever the new scan's signals say."""
    featureless = ModelConfig(N=32, prior_recipe="featureless")
    plain = ModelConfig(N=32, prior_recipe="plain")
    m, why = _resolve(_scan("gaussian", 1e6), like=plain)
    assert m.prior_recipe == "plain" and m.prior_step_scale == 1.0 and why is None
    m, why = _resolve(_scan("disk", 1e6), like=featureless)
    assert m == featureless and "as the bundle fine-tuning starts from" in why
