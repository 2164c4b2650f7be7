"""``model.prior_recipe='auto'`` resolved when training starts: 'featureless' or 'plain'.

Under a probe whose far field is a small spot (a Gaussian beam) the plain scan prior's
passes converge slowly and a network trained on it fails; over-relaxed passes
(`config.schema.FEATURELESS_RECIPE`) converge much further, but overshoot under the
default disk probe (docs/benchmarks.md, eighteenth and nineteenth sessions). Since the
twenty-fifth session the recipe over-relaxes twice (three times before) and carries each
pass's change on with object momentum 0.8 (`physics.prior_scan`'s ``object_momentum``):
after the same 12 passes the prior alone's amplitude SSIM rose on every Gaussian-beam scan
measured, most where the scan overlaps less (0.791 -> 0.814 with steps of 10 px, 0.485 ->
0.571 at 12 px, 0.747 -> 0.829 under a 14 px beam, 0.829 -> 0.895 on a lines object, 0.611
-> 0.656 at 1e4 photons; `benchmarks/bench_prior_step_scale.py --object-momenta`,
docs/benchmarks.md); momentum at step 3 diverged on three of them. The signal
that separates them is the probe's far-field energy beyond 4 px of its centroid
(`physics.probe.far_field_tail`): 5e-6 for a Gaussian beam, 8e-2 for the simulator's disk,
about 1 for a zone plate or the real X-ray-laser probe; below
`physics.probe.FEATURELESS_TAIL` (3.2e-2; 1e-3 until the twentieth session, 2e-2 until
the twenty-first) the probe is featureless; disks of 42-56 px come below it too, and the
check keeps most of them plain. Trained at each dose, the recipe's network beat the plain
prior's at 1e6, 1e5 and 1e4 photons per pattern (amplitude SSIM 0.895 / 0.685 / 0.547 against 0.564 / 0.536 / 0.358), so the dose does not
enter the choice. But the over-relaxation can overshoot under a featureless probe too (a
wide Gaussian beam on a small scan), so `overshoot_check` runs the recipe's passes and
plain ones on the training scan and compares how well each explains the data.

The recipe ends the whole scan's estimate with 4 plain passes (``prior_settle_passes``):
each over-relaxed update writes its batch's photon noise into the canvas several times
over, and plain passes at the end average it out again. Twentieth session, the prior
alone on the hidden Gaussian-probe scans (`benchmarks/bench_prior_step_scale.py --settle-passes`,
docs/benchmarks.md): amplitude / phase SSIM 0.890 / 0.952 -> 0.901 / 0.980 at 1e6
photons, 0.683 / 0.757 -> 0.732 / 0.894 at 1e5, 0.538 / 0.560 -> 0.612 / 0.798 at 1e4,
and on the lines object 0.718 / 0.888 -> 0.731 / 0.930. Replacing the last over-relaxed
passes by plain ones instead (the same time) lowered the lines object, and settling the
half-scan estimates instead lowered the 1e5 scan (exploration, docs/benchmarks.md);
`overshoot_check` runs the over-relaxed passes alone, as measured.

'auto' becomes 'featureless' under such a probe when the scan prior is on, its step
scale, patterns per update, passes and settling passes are at their defaults (anything
set by hand is kept) and the over-relaxed passes leave at most `OVERSHOOT_LIMIT` times the
plain ones' misfit; else 'plain', with the same values as before, bit for bit. A fine-tuning
(``init_from``) takes its bundle's recipe instead: its network was trained on that prior.
The resolved configuration is what training saves in config.yaml and the bundle, so
inference needs no signal. `featureless_probe_advice` is training's warning where a
featureless probe still gets the plain prior ('plain' given, or the prior set by hand).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ptychopinn.config.schema import DEFAULT_PRIOR_ITERATIONS, FEATURELESS_RECIPE, ModelConfig

OVERSHOOT_LIMIT = 2.0
"""'auto' keeps the plain prior when the over-relaxed passes leave more than this many times
the plain passes' misfit (`overshoot_check`). Measured in the nineteenth session
(`benchmarks/bench_prior_overshoot.py`, `bench_probe_features.py`, docs/benchmarks.md):
0.65-1.45 on Gaussian-probe scans where the recipe converged the prior further or trained
a better network (beams 20-40 px wide on 625 patterns, the hidden Gaussian-probe scans at
1e6, 1e5 and 3e4 photons), 1.53 at 1e4 photons (whose recipe network was better too);
2.5-91 where it overshot (Gaussian beams 12 px wide, or 32-40 px on 225 or 400 patterns;
disks on 225 patterns). It catches strong overshoots only: under the 40 px disk on 625
patterns the recipe is worse at 1.33-1.57, and the far-field tail is what keeps that disk
plain (`benchmarks/bench_prior_overshoot.py`). The twentieth session's disks of 48-56 px,
below the raised tail threshold, overshoot more and score 4.2-17 on 625 patterns, 131-222
on 225 (recorded): kept plain by this limit. Twenty-first session: 1.97 under a lines
object's 48 px disk (let through; the recipe's prior with its plain passes was the better
one there, as it was at 1e6 photons on 625 patterns under every wide disk the limit
refused and under the 40 px disk above), 1.2-1.4 under disks defocused to Fresnel number
1, whose prior the recipe improves."""
CHECK_STEP_SCALE = 3.0
CHECK_PASSES = 12
CHECK_BATCH_SIZE = 32
"""`overshoot_check`'s over-relaxation, passes and patterns per update: the featureless
recipe's until the twenty-fifth session, with which `OVERSHOOT_LIMIT` was measured. The
recipe has since run its passes over-relaxed twice with object momentum 0.8; run that way
(16 passes) the check left 0.72-0.76 times the plain misfit under Gaussian beams of 12-16
px alike, while with these passes it gives 3.09 at 12-13 px, where that prior scored below
16 plain passes' (amplitude SSIM 0.553 / 0.738 against 0.685 / 0.850), and 1.05-1.50 at
14-16 px, where it scored above. So the check keeps its own passes and 'auto' chooses as
before (exploration, docs/benchmarks.md, twenty-fifth session)."""
CHECK_PATTERNS = 2048
"""`overshoot_check` runs on at most this many patterns, the ones nearest the scan's centre."""


def _recipe_words() -> str:
    """`FEATURELESS_RECIPE` as the messages name it."""
    return ", ".join(f"{k} {v:g}" for k, v in FEATURELESS_RECIPE.items())


def _at_defaults(m: ModelConfig) -> bool:
    default_passes = DEFAULT_PRIOR_ITERATIONS.get(m.architecture, {}).get("scan")
    return (float(m.prior_step_scale) == 1.0 and int(m.prior_batch_size) == 64
            and m.prior_iterations == default_passes and int(m.prior_settle_passes) == 0
            and float(m.prior_object_momentum) == 0.0)


def overshoot_check(model_cfg: ModelConfig, probe: Tensor, amplitudes: Tensor,
                    positions_px, *, valid: Tensor | None = None) -> tuple[float, float]:  # noqa: ANN001
    """``(plain, over-relaxed)``: the amplitude misfit (`physics.prior_misfit`) the scan
    prior leaves after `CHECK_PASSES` passes of `CHECK_BATCH_SIZE` patterns per update, at
    step scale 1 and at `CHECK_STEP_SCALE`, on the central `CHECK_PATTERNS` patterns of the scan
    (all of a smaller one). ``probe`` in the amplitudes' scale, as the prior divides them."""
    from ptychopinn.physics.prior_misfit import amplitude_misfit
    from ptychopinn.physics.prior_scan import canvas_frame, scan_error_reduction

    amps = torch.as_tensor(amplitudes).detach()
    pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
    if len(pos) > CHECK_PATTERNS:  # a contiguous block: the scan's overlap, less work
        keep = np.argsort(np.square(pos - pos.mean(0)).sum(1), kind="stable")[:CHECK_PATTERNS]
        keep.sort()
        amps, pos = amps[torch.from_numpy(keep)], pos[keep]
    frame = canvas_frame(pos, amps.shape[-1])
    fits = []
    for scale in (1.0, CHECK_STEP_SCALE):
        est = scan_error_reduction(
            amps, pos, probe, CHECK_PASSES, valid=valid, batch_size=CHECK_BATCH_SIZE,
            amplitude_step=float(model_cfg.prior_amplitude_step), step_scale=scale,
            frame=frame)
        fits.append(amplitude_misfit(est, amps, pos, probe, valid=valid))
    return fits[0], fits[1]


def resolve_prior_recipe(
    model_cfg: ModelConfig, probe: Tensor, *, like: ModelConfig | None = None,
    amplitudes: Tensor | None = None, positions_px=None, amplitude_scale: float = 1.0,  # noqa: ANN001
    valid: Tensor | None = None,
) -> tuple[ModelConfig, str | None]:
    """``(model_cfg with a concrete prior_recipe, what was chosen and why, or None)``.

    ``probe``: the model's normalised probe before the physics' preparation (mask, small
    probe and smoothing are applied here as `physics.forward.ForwardModel` applies them);
    ``like``: the model section of the bundle a fine-tuning starts from (``init_from``),
    whose recipe is taken instead; ``amplitudes``, ``positions_px``, ``valid``: the training
    scan as the prior sees it, with ``amplitude_scale`` the model's initial one (the prior
    divides the amplitudes by it), for `overshoot_check` (skipped without them). A recipe
    other than 'auto' is returned as it is, with None; so is the choice when it changes
    nothing worth a word (no scan prior, a probe with features).
    """
    if model_cfg.prior_recipe != "auto":
        return model_cfg, None
    from ptychopinn.physics.probe import (
        FEATURELESS_TAIL,
        TAIL_RADIUS_PX,
        far_field_tail,
        prepare_probe,
    )

    def settle(choice: str, why: str | None, values: dict | None = None,
               ) -> tuple[ModelConfig, str | None]:
        if values is None:
            values = FEATURELESS_RECIPE if choice == "featureless" else {}
        cfg = ModelConfig.model_validate(
            {**model_cfg.model_dump(mode="json"), **values, "prior_recipe": choice})
        return cfg, (None if why is None else f"prior recipe 'auto': {choice!r} ({why})")

    if not (model_cfg.prior_scope == "scan" and model_cfg.prior_iterations):
        return settle("plain", None)
    if like is not None:
        if like.prior_recipe == "featureless" and _at_defaults(model_cfg):
            # its values, not today's recipe: a bundle from before prior_settle_passes ran 0
            return settle("featureless", "as the bundle fine-tuning starts from",
                          {k: getattr(like, k) for k in FEATURELESS_RECIPE})
        return settle("plain", None)
    physics_probe = prepare_probe(probe.detach(), probe_mask=model_cfg.probe_mask,
                                  probe_big=model_cfg.probe_big,
                                  smoothing_sigma=model_cfg.gaussian_smoothing_sigma)[0]
    tail = far_field_tail(physics_probe)
    if tail >= FEATURELESS_TAIL:
        return settle("plain", None)
    spot = (f"the probe's far-field energy beyond {TAIL_RADIUS_PX:g} px of its centre is "
            f"{tail:.1e}, below {FEATURELESS_TAIL:g}")
    if not _at_defaults(model_cfg):
        return settle("plain", f"{spot}, but the prior's step scale, patterns per update, "
                               "passes or settling passes are set by hand; they are kept")
    recipe = _recipe_words()
    if amplitudes is None or positions_px is None:
        return settle("featureless", f"{spot}: {recipe}")
    plain, relaxed = overshoot_check(model_cfg, physics_probe * float(amplitude_scale),
                                     amplitudes, positions_px, valid=valid)
    fits = (f"after {CHECK_PASSES} passes at step scale {CHECK_STEP_SCALE:g} the prior "
            f"leaves {relaxed / max(plain, 1e-30):.2f} times the plain prior's misfit")
    if not relaxed <= OVERSHOOT_LIMIT * plain:
        return settle("plain", f"{spot}, but {fits}, above {OVERSHOOT_LIMIT:g}: it overshoots "
                               "under this probe and scan")
    return settle("featureless", f"{spot} and {fits}: {recipe}")


def featureless_probe_advice(model_cfg, probe: Tensor, *, asked=None) -> str | None:  # noqa: ANN001
    """Advice for a model that would run the plain scan prior (``model_cfg`` a `ModelConfig`
    with the scan prior, ``prior_step_scale`` 1 and ``prior_recipe`` not 'featureless';
    after `resolve_prior_recipe` kept 'plain') under a featureless probe
    (`physics.probe.far_field_tail` below `physics.probe.FEATURELESS_TAIL`), else None.

    Under such probes the plain prior converges slowly and the network trained on it
    fails (docs/benchmarks.md, sixteenth and eighteenth sessions); the over-relaxed recipe
    of docs/usage.md's "Featureless probes" narrows that on well-exposed scans. ``asked``: the
    model section as given, before `resolve_prior_recipe`; where it was 'auto' at the
    defaults, 'plain' was the overshoot check's verdict (logged) and no advice is given."""
    from ptychopinn.physics.probe import FEATURELESS_TAIL, TAIL_RADIUS_PX, far_field_tail

    if not model_cfg.prior_iterations or model_cfg.prior_scope != "scan":
        return None
    if float(model_cfg.prior_step_scale) != 1.0 or model_cfg.prior_recipe == "featureless":
        return None
    if asked is not None and asked.prior_recipe == "auto" and _at_defaults(asked):
        return None  # the over-relaxed recipe overshot on this scan: 'plain' is right
    tail = far_field_tail(probe)
    if tail >= FEATURELESS_TAIL:
        return None
    return (f"the probe's far field is a small spot (energy beyond {TAIL_RADIUS_PX:g} px of its "
            f"centre: {tail:.1e}, below {FEATURELESS_TAIL:g}; a smooth beam such as a Gaussian). "
            "Under such probes the plain scan prior converges slowly and the network may fail. "
            f"Train with --set model.prior_recipe=featureless ({_recipe_words()}; 'auto', the "
            "default, chooses it unless the prior's step scale, batch size, passes, plain "
            "passes or object momentum are set by hand, or the recipe overshoots on the scan; "
            "docs/usage.md, "
            "'Featureless probes').")
