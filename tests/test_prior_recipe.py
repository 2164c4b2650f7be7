"""``model.prior_recipe``: the 'featureless' recipe and 'auto' resolved when training
starts (`models.prior_recipe`)."""

from __future__ import annotations

import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.config.schema import FEATURELESS_RECIPE


def _probe(kind: str) -> torch.Tensor:
    from ptychopinn.simulation.probes import disk_probe, gaussian_probe

    make = {"gaussian": gaussian_probe, "disk": disk_probe}[kind]
    return torch.from_numpy(make(32, 12.8, 4.0))


def _resolve(kind: str, model: ModelConfig | None = None, like: ModelConfig | None = None):
    from ptychopinn.models.pinn import normalise_probe
    from ptychopinn.models.prior_recipe import resolve_prior_recipe

    model = model or ModelConfig(N=32)
    probe_n, _ = normalise_probe(_probe(kind), model.probe_scale)
    return resolve_prior_recipe(model, probe_n, like=like)


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


def test_auto_chooses_the_featureless_recipe_under_a_gaussian_beam() -> None:
    m, why = _resolve("gaussian")
    assert m.prior_recipe == "featureless"
    assert {k: getattr(m, k) for k in FEATURELESS_RECIPE} == FEATURELESS_RECIPE
    assert "below 0.001" in why and "prior_step_scale 3" in why
    # everything else is as it was
    keep = {"prior_recipe", *FEATURELESS_RECIPE}
    assert m.model_dump(exclude=keep) == ModelConfig(N=32).model_dump(exclude=keep)


def test_auto_keeps_the_plain_prior_elsewhere_unchanged() -> None:
    """Under the disk probe (quietly) and with the prior set by hand (said), 'auto'
    becomes 'plain' with the values it had; a recipe given is kept, silently."""
    for kind, model, said in [("disk", ModelConfig(N=32), None),
                              ("gaussian", ModelConfig(N=32, prior_batch_size=16),
                               "set by hand"),
                              ("gaussian", ModelConfig(N=32, prior_iterations=8),
                               "set by hand"),
                              ("gaussian", ModelConfig(N=32, prior_iterations=0), None)]:
        m, why = _resolve(kind, model)
        assert m == model.model_copy(update={"prior_recipe": "plain"})
        assert (why is None) if said is None else (said in why), why
    for recipe in ("plain", "featureless"):
        model = ModelConfig(N=32, prior_recipe=recipe)
        assert _resolve("gaussian", model) == (model, None)


def test_the_signal_is_the_probe_the_physics_uses() -> None:
    """A Gaussian beam cut by the small-probe mask (``probe_big=False``) has edges: its far
    field is no longer a spot, so 'auto' stays plain."""
    m, why = _resolve("gaussian", ModelConfig(N=32, probe_big=False))
    assert m.prior_recipe == "plain" and why is None


def test_fine_tuning_keeps_the_recipe_of_the_bundle_it_starts_from() -> None:
    """With ``init_from`` the network was trained on its bundle's prior: 'auto' takes that
    recipe, whatever the new scan's probe."""
    featureless = ModelConfig(N=32, prior_recipe="featureless")
    plain = ModelConfig(N=32, prior_recipe="plain")
    m, why = _resolve("gaussian", like=plain)
    assert m.prior_recipe == "plain" and m.prior_step_scale == 1.0 and why is None
    m, why = _resolve("disk", like=featureless)
    assert m == featureless and "as the bundle fine-tuning starts from" in why
