"""``model.prior_recipe``: the 'featureless' recipe and 'auto' resolved when training
starts (`models.prior_recipe`)."""

from __future__ import annotations

import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.config.schema import FEATURELESS_RECIPE
from ptychopinn.physics.probe import FEATURELESS_TAIL


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


def _resolve_on_scan(kind: str, diameter: float, positions: int = 225,
                     fresnel: float | None = 4.0, with_scan: bool = False):
    """``(model config, why, normalised probe)``: 'auto' resolved with the overshoot check
    on a simulated scan of ``positions`` patterns under a ``kind`` probe ``diameter`` px
    wide, defocused to Fresnel number ``fresnel`` (and the scan, ``with_scan``)."""
    import math

    from ptychopinn.models.pinn import initial_log_scale, normalise_probe
    from ptychopinn.models.prior_recipe import resolve_prior_recipe
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(n_positions=positions, seed=0, probe_kind=kind,
                                          probe_diameter_px=diameter,
                                          defocus_fresnel_number=fresnel))
    model = ModelConfig()
    probe_n, factor = normalise_probe(torch.from_numpy(scan.probe), model.probe_scale)
    amps = torch.from_numpy(scan.diffraction).float()
    log_s = initial_log_scale(float(amps.square().sum((-2, -1)).mean()), probe_n,
                              "sqrt_counts", factor)
    m, why = resolve_prior_recipe(model, probe_n, amplitudes=amps,
                                  positions_px=scan.positions_px,
                                  amplitude_scale=math.exp(log_s))
    return (m, why, probe_n, scan) if with_scan else (m, why, probe_n)


def test_featureless_recipe_fills_what_is_not_given() -> None:
    m = ModelConfig(prior_recipe="featureless")
    assert (m.prior_step_scale, m.prior_batch_size, m.prior_iterations,
            m.prior_object_momentum) == (2.0, 32, 12, 0.8)
    assert m.prior_frc_filter and m.subpixel == "probe_shift"  # still the scan prior's
    m = ModelConfig(prior_recipe="featureless", prior_batch_size=16, prior_iterations=None)
    assert (m.prior_step_scale, m.prior_batch_size, m.prior_iterations) == (2.0, 16, 12)
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
    assert f"below {FEATURELESS_TAIL:g}" in why and "prior_step_scale 2" in why
    assert "prior_object_momentum 0.8" in why
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
                              ("gaussian", ModelConfig(N=32, prior_settle_passes=2),
                               "set by hand"),
                              ("gaussian", ModelConfig(N=32, prior_iterations=0), None)]:
        m, why = _resolve(kind, model)
        assert m == model.model_copy(update={"prior_recipe": "plain"})
        assert (why is None) if said is None else (said in why), why
    for recipe in ("plain", "featureless"):
        model = ModelConfig(N=32, prior_recipe=recipe)
        assert _resolve("gaussian", model) == (model, None)


def test_the_signal_is_the_probe_the_physics_uses(monkeypatch) -> None:
    """A Gaussian beam cut by the small-probe mask (``probe_big=False``) has edges: its far
    field's tail rises from 5e-6 to 6.8e-3, which the choice reads (shown with a threshold
    between the two: 'auto' then stays plain for the masked beam only)."""
    import ptychopinn.physics.probe as physics_probe

    monkeypatch.setattr(physics_probe, "FEATURELESS_TAIL", 1e-3)
    m, why = _resolve("gaussian", ModelConfig(N=32, probe_big=False))
    assert m.prior_recipe == "plain" and why is None
    assert _resolve("gaussian")[0].prior_recipe == "featureless"


def test_fine_tuning_keeps_the_recipe_of_the_bundle_it_starts_from() -> None:
    """With ``init_from`` the network was trained on its bundle's prior: 'auto' takes that
    recipe, whatever the new scan's probe."""
    featureless = ModelConfig(N=32, prior_recipe="featureless")
    plain = ModelConfig(N=32, prior_recipe="plain")
    m, why = _resolve("gaussian", like=plain)
    assert m.prior_recipe == "plain" and m.prior_step_scale == 1.0 and why is None
    m, why = _resolve("disk", like=featureless)
    assert m == featureless and "as the bundle fine-tuning starts from" in why
    # a bundle from before the settling passes keeps its values (none), not today's recipe
    older = ModelConfig(N=32, prior_recipe="featureless", prior_settle_passes=0)
    m, why = _resolve("gaussian", like=older)
    assert m == older and m.prior_settle_passes == 0


def test_auto_checks_that_the_over_relaxation_does_not_overshoot() -> None:
    """With the training scan, 'auto' runs the recipe's passes and plain ones: under the
    simulator's Gaussian beam (25.6 px) the over-relaxed ones fit the data about as well
    (1.02 times the plain misfit) and converge further, so 'featureless'; under a 40 px
    beam on a 225-pattern scan they overshoot (misfit about 67 times the plain one's,
    amplitude error 0.20 against 0.024), so 'plain'."""
    from ptychopinn.models.prior_recipe import OVERSHOOT_LIMIT

    m, why, _ = _resolve_on_scan("gaussian", 25.6)
    assert m.prior_recipe == "featureless" and "times the plain prior's misfit" in why
    ratio = float(why.split("leaves ")[1].split(" times")[0])
    assert ratio < 1.2, why
    m, why, _ = _resolve_on_scan("gaussian", 40.0)
    assert m.prior_recipe == "plain" and "overshoots" in why, why
    assert float(why.split("leaves ")[1].split(" times")[0]) > 10 * OVERSHOOT_LIMIT, why
    assert m == ModelConfig(prior_recipe="plain")


def test_overshoot_check_runs_on_the_central_patterns_of_a_large_scan(monkeypatch) -> None:
    """Above `CHECK_PATTERNS` patterns the check runs on the ones nearest the scan's centre
    (a contiguous block), in the scan's order: the same numbers as that block alone."""
    import numpy as np

    import ptychopinn.models.prior_recipe as pr
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=36, seed=0, probe_kind="gaussian"))
    amps = torch.from_numpy(scan.diffraction).float()
    probe, pos = torch.from_numpy(scan.probe), scan.positions_px
    model = ModelConfig(N=32)
    full = pr.overshoot_check(model, probe, amps, pos)
    monkeypatch.setattr(pr, "CHECK_PATTERNS", 16)
    part = pr.overshoot_check(model, probe, amps, pos)
    centre = np.sort(np.argsort(np.square(pos - pos.mean(0)).sum(1), kind="stable")[:16])
    monkeypatch.setattr(pr, "CHECK_PATTERNS", 10_000)
    assert part == pr.overshoot_check(model, probe, amps[torch.from_numpy(centre)], pos[centre])
    assert part != full
    span = pos[centre].max(0) - pos[centre].min(0)
    assert np.all(span < 0.8 * (pos.max(0) - pos.min(0)))  # a block, not a spread


def test_auto_takes_narrower_beams_and_the_check_keeps_wide_disks_plain() -> None:
    """Below the far-field threshold (3.2e-2) lie Gaussian beams of 14 and 16 px (2.9e-2,
    9.7e-3), whose prior the recipe converges about twice as far (a 14 px beam's network:
    0.775 with it, 0.564 without, recorded), and disks of 42-56 px, under which it
    overshoots: 'auto' takes the recipe for the beams and the overshoot check keeps the
    disk plain (misfit ratio measured 1.07 and 4.2 on 625 patterns, 0.94 and 168 on 225);
    train's featureless-probe advice stays quiet where the check decided, and speaks where
    the prior was set by hand. A 40 px disk (3.5e-2) stays plain by its tail, silently."""
    from ptychopinn.models.prior_recipe import featureless_probe_advice
    from ptychopinn.physics.probe import far_field_tail

    for width in (14.0, 16.0):
        m, why, beam = _resolve_on_scan("gaussian", width)
        assert far_field_tail(beam) < FEATURELESS_TAIL
        assert m.prior_recipe == "featureless" and f"below {FEATURELESS_TAIL:g}" in why, why
    m, why, disk = _resolve_on_scan("disk", 40.0)
    assert far_field_tail(disk) > FEATURELESS_TAIL
    assert m.prior_recipe == "plain" and why is None
    m, why, disk = _resolve_on_scan("disk", 48.0)
    assert far_field_tail(disk) < FEATURELESS_TAIL
    assert m.prior_recipe == "plain" and "overshoots" in why, why
    assert featureless_probe_advice(m, disk, asked=ModelConfig()) is None
    by_hand = ModelConfig(prior_batch_size=16)
    assert "prior_recipe=featureless" in featureless_probe_advice(by_hand, disk, asked=by_hand)


def test_auto_takes_the_recipe_under_a_strongly_defocused_wide_disk_where_it_helps() -> None:
    """A 48 px disk defocused to Fresnel number 1 has a far-field tail of 1.1e-2, and on
    625 patterns the over-relaxed passes fit the data about as well as plain ones (misfit
    ratio 1.2-1.4 for 40-56 px on two objects, recorded): 'auto' takes the recipe, and its
    prior (with its plain passes) is closer to the true object than the plain default's
    (rms amplitude error over the well-lit pixels 0.0075 against 0.0128 here)."""
    import numpy as np

    from ptychopinn.config.schema import DEFAULT_PRIOR_ITERATIONS
    from ptychopinn.physics.geometry import extract_patches
    from ptychopinn.physics.prior_scan import canvas_frame, scan_error_reduction

    m, why, _, scan = _resolve_on_scan("disk", 48.0, positions=625, fresnel=1.0,
                                       with_scan=True)
    assert m.prior_recipe == "featureless" and f"below {FEATURELESS_TAIL:g}" in why, why
    amps, probe = torch.from_numpy(scan.diffraction).float(), torch.from_numpy(scan.probe)
    pos, n = scan.positions_px, scan.patch_size
    frame = canvas_frame(pos, n)
    ill = probe.abs().square().reshape(-1, n, n).sum(0)
    lit = ill > 0.3 * ill.max()
    truth = extract_patches(torch.from_numpy(scan.object), torch.from_numpy(pos), n)[:, lit]

    def error(cfg: ModelConfig) -> float:
        est = scan_error_reduction(amps, pos, probe, int(cfg.prior_iterations),
                                   batch_size=int(cfg.prior_batch_size),
                                   amplitude_step=float(cfg.prior_amplitude_step),
                                   step_scale=float(cfg.prior_step_scale),
                                   settle_passes=int(cfg.prior_settle_passes), frame=frame)
        got = est.patches(pos, n)[:, lit].abs()
        return float(np.sqrt(float((got - truth.abs()).square().mean())))

    plain = ModelConfig(prior_recipe="plain")
    assert plain.prior_iterations == DEFAULT_PRIOR_ITERATIONS["unet"]["scan"]
    recipe_error, plain_error = error(m), error(plain)
    assert recipe_error < 0.7 * plain_error, (recipe_error, plain_error)
