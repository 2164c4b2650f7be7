"""The one validated configuration tree.

Every section is an immutable pydantic model: unknown keys, bad ranges and bad
choices are errors naming the field and the allowed values. Configs travel
explicitly into the functions that need them and are saved in every bundle.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Backend = Literal["pytorch", "tensorflow"]
BACKENDS: tuple[str, ...] = ("pytorch", "tensorflow")
ALLOWED_N: tuple[int, ...] = (32, 64, 128, 256)
"""The pattern sizes ``model.N`` takes (powers of two)."""
PriorScope = Literal["scan", "neighbourhood"]
PriorRecipe = Literal["auto", "plain", "featureless"]
FEATURELESS_RECIPE: dict[str, float | int] = {
    "prior_step_scale": 2.0, "prior_batch_size": 32, "prior_iterations": 12,
    "prior_settle_passes": 4, "prior_object_momentum": 0.8}
"""The ``model.prior_recipe='featureless'`` values: the scan prior's passes over-relaxed
twice with object momentum 0.8 between passes (twenty-fifth session; until then three
times without momentum: eighteenth session), 32 patterns per update, 12 passes, the whole
scan's estimate ending with 4 plain passes (twentieth session)."""
DEFAULT_PRIOR_ITERATIONS: dict[str, dict[str, int]] = {
    "unet": {"scan": 4, "neighbourhood": 20},
    "cnn": {"scan": 0, "neighbourhood": 0},
}
"""Default ``ModelConfig.prior_iterations`` per architecture and prior scope ('cnn' keeps
the original input)."""
DEFAULT_PRIOR_AMPLITUDE_STEP: dict[str, float] = {"scan": 0.5, "neighbourhood": 1.0}
"""Default ``ModelConfig.prior_amplitude_step`` per prior scope."""

_KEEP_LINEAR = (
    "Keep a global scale, rotation or shear of the position corrections (a scan whose step "
    "size itself is miscalibrated, e.g. by a wrong detector distance). Default: removed "
    "after every epoch, as their mean is; with a refined probe a global scale is nearly "
    "ambiguous and drifts (docs/benchmarks.md)."
)


def _as_int(v: object) -> int:
    """``v`` as an int for resolving defaults (0 when it is not one; validation reports it)."""
    try:
        return int(v)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def _off_or_at_least_3(name: str, v: int, why: str) -> int:
    """Epoch counts of refinements whose probe updates start at the third epoch."""
    if 0 < v < 3:
        raise ValueError(f"{name} must be 0 (off) or >= 3 ({why}); found {v}")
    return v


class _Section(BaseModel):
    # a NaN or infinite number is never a setting: "Input should be a finite number"
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              allow_inf_nan=False)


class ModelConfig(_Section):
    """What the network and the physics look like (saved in every bundle)."""

    N: int = Field(64, description="Patch and diffraction size in pixels (power of two, 32..256).")
    gridsize: int = Field(
        2, ge=1, le=4, description="Groups hold C = gridsize**2 neighbouring patterns."
    )
    n_filters_scale: float = Field(1.0, gt=0, le=8, description="Multiplier of the filter counts.")
    model_type: Literal["pinn", "supervised"] = Field(
        "pinn",
        description="pinn: self-supervised through the physics; supervised: on true patches.",
    )
    architecture: Literal["unet", "cnn"] = Field(
        "unet", description="Generator: 'unet' (improved, skip connections) or 'cnn' (original)."
    )
    amp_activation: Literal["sigmoid", "softplus", "exp", "relu"] = Field(
        "sigmoid", description="Activation of the amplitude head."
    )
    object_big: bool = Field(
        True, description="Merge the C patches of a group on one canvas before diffraction."
    )
    probe_big: bool = Field(
        True, description="Use the whole N x N probe; if false, only its central N/2 disk."
    )
    probe_mask: bool = Field(
        False, description="Apply a soft circular mask of diameter N to the probe."
    )
    pad_object: bool = Field(
        False, description="Decoders predict the central N/2 of each patch, zero-padded to N."
    )
    probe_scale: float = Field(
        4.0,
        gt=0,
        description="Inside the model the probe is normalised to max amplitude probe_scale/4 "
        "(the intensity scale absorbs the rest).",
    )
    gaussian_smoothing_sigma: float = Field(
        0.0,
        ge=0,
        le=16,
        description="Sigma (px) of a Gaussian smoothing of the probe illumination.",
    )
    n_probe_modes: int = Field(1, ge=1, le=16, description="Incoherent probe modes in the physics.")
    prior_iterations: int | None = Field(
        None,
        ge=0,
        le=100,
        description="Projections with the known probe (passes over the scan for prior_scope "
        "'scan', per pattern for 'neighbourhood') whose estimate (real, imaginary) is the "
        "generator's input instead of the raw diffraction; 0: raw diffraction (the original "
        f"PtychoPINN input); None: the default per architecture and scope "
        f"({DEFAULT_PRIOR_ITERATIONS}).",
    )
    prior_amplitude_step: float | None = Field(
        None,
        gt=0,
        le=1,
        description="prior_scope 'scan': the fraction of each PIE update's amplitude part "
        "that the physics prior applies (its phase part is applied whole): 1 is plain PIE; "
        "smaller steps keep phase errors from being written into the amplitude while the "
        "phase converges (physics.prior_scan). None: 0.5 for scope 'scan', 1 for "
        "'neighbourhood' (which has no other value). Bundles without it used 1.",
    )
    prior_batch_size: int = Field(
        64,
        ge=1,
        le=4096,
        description="prior_scope 'scan': patterns per update of the physics prior's PIE "
        "passes (physics.prior_scan). Smaller batches update the canvas more often per pass "
        "and converge further: 16 raised the prior's amplitude / phase SSIM by up to 0.02 / "
        "0.05 on simulated scans (seed 5's network 0.890 -> 0.909) but costs ~0.4 s more per "
        "625-pattern scan on 2 CPU cores (+25-30% of inference; docs/benchmarks.md, "
        "bench_prior_batch.py), so the default stays 64.",
    )
    prior_step_scale: float = Field(
        1.0,
        gt=0,
        le=4,
        description="prior_scope 'scan': over-relaxation of the physics prior's PIE updates: "
        "each mini-batch's update is applied this many times over (physics.prior_scan; 1: "
        "plain PIE). Under a probe whose far field is a small spot (a Gaussian beam) the "
        "passes converge slowly and 3 converges them much further (the prior alone after 4 "
        "passes on a textured object 0.54 -> 0.71 amplitude SSIM); under the default disk "
        "probe 3 makes them diverge (0.95 -> 0.72) and 2 costs 0.006 (docs/benchmarks.md, "
        "bench_prior_step_scale.py). Train and infer with the same value. Bundles without "
        "it: 1.",
    )
    prior_object_momentum: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="prior_scope 'scan': heavy-ball momentum of the physics prior's passes "
        "on the whole complex object: after every pass but the last of prior_iterations, each "
        "pixel's change over the pass feeds a velocity v <- m v + dO and the object moves on "
        "by m v (physics.prior_scan; 0: none). Under a Gaussian beam the passes converge "
        "slowly at every spatial frequency; with 0.8 and prior_step_scale 2 (the featureless "
        "recipe) instead of 3 without it, the prior alone's amplitude SSIM after the same 12 "
        "passes rose on every Gaussian-beam scan measured, e.g. 0.791 -> 0.814 with steps of "
        "10 px and 0.747 -> 0.829 under a 14 px beam (docs/benchmarks.md, twenty-fifth "
        "session). Train and infer with the same value. Bundles without it: 0.",
    )
    prior_settle_passes: int = Field(
        0,
        ge=0,
        le=64,
        description="prior_scope 'scan': plain passes (step scale 1, no phase momentum) the "
        "physics prior's whole-scan estimate ends with, after its prior_iterations "
        "(physics.prior_scan). Over-relaxed passes (prior_step_scale > 1) carry each "
        "batch's photon noise into the prior several times over; 4 plain passes after them "
        "raised the prior alone's amplitude / phase SSIM on Gaussian-probe scans from 0.683 / "
        "0.757 to 0.732 / 0.894 at 1e5 photons and 0.890 / 0.952 to 0.901 / 0.980 at 1e6, "
        "for 0.1-0.5 s per 625 patterns of 64x64 on 2 CPU cores (docs/benchmarks.md, "
        "bench_prior_step_scale.py --settle-passes). Train and infer with the same value. Bundles without it: 0.",
    )
    prior_orders: int | None = Field(
        None,
        ge=1,
        le=8,
        description="prior_scope 'scan': mini-batch orders whose estimates the physics "
        "prior's whole-scan estimate averages where it runs without the FRC filter's halves "
        "(physics.prior_orders; they run at once on the CPU, one per thread; the halves "
        "ignore it). None (default): 2 for over-relaxed passes (prior_step_scale other than "
        "1), 1 for plain ones (models.scan_prior.default_orders). Over-relaxed passes write "
        "each batch's photon noise into the canvas several times over, and how depends on "
        "the order: where the featureless recipe ran on the whole scan (coverage below "
        "prior_frc_min_coverage) two orders raised the prior alone's amplitude SSIM on every "
        "Gaussian-beam scan measured (steps of 12 px: 0.672 -> 0.718 at 1e5 photons, 0.723 "
        "-> 0.762 at 3e5, 0.829 -> 0.848 at 1e6) in about the same time on 2 CPU cores; 4 "
        "gained more (0.727, 0.787, 0.859) in about twice the time (docs/benchmarks.md, "
        "twenty-eighth session). Bundles without it: None (the default, so models trained "
        "before it average two orders at inference too).",
    )
    prior_orders_filter: bool = Field(
        True,
        description="Where the physics prior's whole-scan estimate averages 2 or more "
        "mini-batch orders (prior_orders), filter its amplitude per ring by 2F/(1+F) of the "
        "Fourier ring correlation F of the even- and odd-numbered orders' estimates "
        "(physics.prior_orders.filter_orders, the rule of the FRC filter's halves): the "
        "orders share the photon noise and differ by what the over-relaxed passes wrote "
        "into the canvas in their order, so the filter smooths the rings that noise fills. "
        "Where the featureless recipe ran on the whole scan (Gaussian beams, steps of 12 px "
        "and wider beams) it raised the network's amplitude SSIM at inference alone by "
        "0.009-0.043 on 8 of 11 scans and left 3 level (networks trained without it), and "
        "with networks trained with it the 1e5-photon scan of seed 251 rose from 0.698 to "
        "0.744 against pty-chi LSQML-100's 0.777, the 3e5 one from 0.753 to 0.794 against "
        "0.764 (docs/benchmarks.md, thirty-first session, bench_orders_filter.py); the phase "
        "is left as estimated. Bundles without it: on.",
    )
    prior_coverage_passes: bool = Field(
        True,
        description="prior_scope 'scan', plain passes (prior_step_scale 1): run more of the "
        "physics prior's passes on scans whose patterns overlap less, at training and at "
        "inference alike, so the network sees priors converged about as far on any scan. "
        "Where the scan's coverage (physics.coverage.scan_coverage: probe footprints per lit "
        "pixel; 4.8 for the simulator's default raster, 3.4 for the real-probe Fermat scan, "
        "2.3 at steps of 12 px, 1.3 at 16 px) is below 3, prior_iterations times "
        "(3 / coverage)^2, rounded up, at most 16, and the half-scan agreement its extra "
        "passes and phase momentum need at inference is 0.45 times coverage / 3 "
        "(models.scan_prior.coverage_passes, coverage_agreement; on "
        "steps of 16 px a model trained with 4 passes scored amplitude SSIM 0.647, one with "
        "16 0.904, pty-chi LSQML-100 0.830: docs/benchmarks.md). An explicit infer "
        "--prior-iterations is not scaled. Bundles without it: off.",
    )
    prior_train_converge: bool = Field(
        True,
        description="prior_scope 'scan', plain passes (prior_step_scale 1) with the FRC "
        "filter: the prior the network trains on adds the converge blocks inference adds "
        "(infer's prior_converge_passes: up to 16 passes, 4 at a time, each kept where it "
        "raised the half-scan agreement by more than 0.025 or, after a block so kept, lowered "
        "the halves' held-out misfit by more than 10 %) on the scans where inference "
        "adds them: where the halves run with inference's phase momentum (0.7) do not agree; "
        "the blocks continue those halves with it, as inference's "
        "(models.scan_prior.ScanPrior.for_config, physics.prior_frc.frc_filtered_estimate's "
        "gate_momentum). Where they agree, or where every block is dropped, the training "
        "passes run without the momentum and the prior is the same as without the option. "
        "On objects with a strong phase, whose priors inference converges further, a "
        "network trained on 4-pass priors lowered the amplitude of its 12-pass input "
        "(amplitude SSIM 0.740 from a prior alone of 0.769 on a -2.5..2.5 rad scan, 0.790 "
        "trained with plain blocks, 0.864 with the momentum's; docs/benchmarks.md, fortieth "
        "session). Bundles without it: off.",
    )
    prior_frc_min_coverage: float = Field(
        2.0,
        ge=0,
        description="prior_scope 'scan', over-relaxed passes (prior_step_scale > 1, as the "
        "featureless recipe sets it) with the FRC filter: on a scan whose coverage "
        "(physics.coverage.scan_coverage) is below this, the filter's two half-scan estimates "
        "are left out (below 2 each half covers the object less than once) and the whole "
        "scan's estimate runs 8 more passes from the flat start instead (models.scan_prior."
        "LOW_COVERAGE_EXTRA_PASSES), at training and at inference alike. Under the default "
        "Gaussian beam with steps of 12 px (coverage 1.65) the network scored amplitude SSIM "
        "0.871 this way and 0.709 with the halves (pty-chi LSQML-100 0.843); with steps of 10 "
        "px (coverage 2.33) the halves' network was the better, 0.829 against 0.818 "
        "(docs/benchmarks.md, twenty-sixth session). Plain passes are unaffected "
        "(prior_coverage_passes scales them). 0: the halves on any scan. An explicit infer "
        "--prior-frc-filter or --prior-iterations is kept. Bundles without it: 0.",
    )
    prior_recipe: PriorRecipe = Field(
        "auto",
        description="prior_scope 'scan': how the physics prior's passes are set. 'plain': "
        "as prior_step_scale, prior_batch_size, prior_iterations, prior_settle_passes and "
        "prior_object_momentum say. 'featureless': for "
        "a probe whose far field is a small spot (a Gaussian beam), under which plain passes "
        f"converge slowly: {FEATURELESS_RECIPE} for those of the five not given. 'auto' "
        "(default): chosen when training starts, 'featureless' when the scan prior is on "
        "with those five at their defaults, the probe's far-field energy beyond 4 px of "
        "its centre is below 3.2e-2 (physics.probe.far_field_tail) and, on the training scan, "
        "the recipe's passes fit the data no worse than twice as badly as plain ones (they "
        "can overshoot: models.prior_recipe.overshoot_check), else 'plain'; a fine-tuning "
        "(init_from) takes its bundle's recipe. The bundle records the choice and "
        "the values (models.prior_recipe, docs/benchmarks.md). Bundles without it: 'plain'.",
    )
    prior_frc_filter: bool | None = Field(
        None,
        description="prior_scope 'scan': filter the physics prior's amplitude by the Fourier "
        "ring correlation of two estimates from random halves of the scan (physics."
        "prior_frc): fine amplitude that the halves do not agree on (unconverged) is smoothed, "
        "textured amplitude is kept; the whole scan's estimate continues from the halves' "
        "(about 1.5x the plain prior's work). None: on with a scan prior (prior_scope 'scan' "
        "and prior_iterations > 0), else off. Bundles without it: off.",
    )
    prior_com_correction: bool | None = Field(
        None,
        description="With the scan prior (prior_scope 'scan', prior_iterations > 0): between "
        "every two passes of the physics prior, turn its phase by half the integrated "
        "difference of the measured and the predicted patterns' centres of mass "
        "(physics.prior_scan): the low spatial frequencies of the phase, which the passes "
        "move about a probe width per pass, at once, under any probe (unlike prior_start "
        "'com'); a turn is applied only where it lowers the estimate's misfit to the "
        "measured patterns (at low dose under a curved probe the unchecked turns wrecked the "
        "phase: bench_com_check.py). Models trained with it (before the check) scored higher "
        "phase SSIM on every simulated scan then measured (1e5-1e6 photons), the real-probe "
        "scan included (amplitude -0.001 to +0.048), for 7-37 % more "
        "prior time on 625 to 10^4 N=64 patterns (docs/benchmarks.md, "
        "bench_com_correction.py, bench_prior_start.py, bench_large_scans.py). None: on with a "
        "scan prior, else off. Bundles without it: off.",
    )
    prior_start: Literal["flat", "com", "auto"] = Field(
        "flat",
        description="With the scan prior (prior_scope 'scan', prior_iterations > 0): the phase "
        "its passes start from: 'flat' (0 everywhere) or 'com' (the object's low-frequency "
        "phase integrated from the diffraction patterns' centres of mass, physics.com_phase). "
        "The passes move the phase about a probe width per pass, so from a flat start the low "
        "spatial frequencies of the phase are far from converged after a few passes, the more "
        "so the larger the scan; 'com' gives them at once, but only under a probe whose phase "
        "is nearly flat where it is bright: under a curved (defocused) probe the object's "
        "amplitude reads as phase (the scan prior logs a warning above "
        "physics.com_phase.COM_CURVATURE_LIMIT). 'auto': 'com' under a probe whose phase "
        "curvature (physics.com_phase.probe_phase_curvature) is at most that limit, else "
        "'flat' (and 'flat' without the scan prior). Measured in docs/benchmarks.md "
        "(bench_prior_start.py, bench_large_scans.py). Bundles without it: 'flat'.",
    )
    prior_residual: bool = Field(
        True,
        description="With a physics prior, the generator corrects it: amplitude = |prior| x "
        "head / 0.6 (the heads' initial value), phase = arg(prior) + phase head, so an "
        "untrained network returns the prior itself. False: the heads give the patch directly.",
    )
    prior_residual_gate: bool = Field(
        True,
        description="With prior_residual, scale the correction by the probe's normalised "
        "intensity g: amplitude |prior| x (head / 0.6)**g, phase arg(prior) + g x head, so "
        "where the probe is dark (the likelihood sees nothing) the prior is kept.",
    )
    prior_scope: PriorScope = Field(
        "scan",
        description="What the physics prior of a pattern is estimated from: 'scan': every "
        "pattern of the scan jointly on one object canvas (mini-batch PIE passes, "
        "physics.prior_scan); 'neighbourhood': the pattern and its prior_neighbors - 1 "
        "nearest neighbours on a small canvas of its own (physics.prior).",
    )
    prior_neighbors: int = Field(
        4,
        ge=1,
        le=16,
        description="prior_scope 'neighbourhood': patterns the physics prior of each pattern is "
        "estimated from jointly, itself and its nearest scan neighbours (1: the pattern alone).",
    )

    subpixel: Literal["bilinear", "probe_shift"] | None = Field(
        None,
        description="What a network patch of a pattern at a fractional position means. "
        "'bilinear': the object at the exact position (training's group consistency and "
        "inference's stitching interpolate bilinearly). 'probe_shift': the object's whole-pixel "
        "window nearest the position; training's physics shifts the probe by the remainder "
        "(as the simulator, the scan prior and the refinement do), so nothing is interpolated. "
        "With a physics prior it needs prior_scope 'scan'. None: 'probe_shift' with a scan "
        "prior (prior_scope 'scan' and prior_iterations > 0), else 'bilinear'. Saved in the "
        "bundle; bundles without it are 'bilinear'. Both backends.",
    )

    @model_validator(mode="after")
    def _subpixel_needs_scan_prior(self) -> ModelConfig:
        if self.subpixel == "probe_shift" and self.prior_iterations and (
            self.prior_scope != "scan"
        ):
            raise ValueError(
                "model.subpixel 'probe_shift' needs prior_scope 'scan' (or prior_iterations 0); "
                f"found prior_scope {self.prior_scope!r}"
            )
        return self

    @model_validator(mode="after")
    def _frc_filter_needs_scan_prior(self) -> ModelConfig:
        if self.prior_frc_filter and self.prior_scope != "scan":
            raise ValueError(
                "model.prior_frc_filter needs prior_scope 'scan' (the halves are halves of the "
                f"scan); found prior_scope {self.prior_scope!r}"
            )
        return self

    @model_validator(mode="after")
    def _scan_prior_options_need_scan_prior(self) -> ModelConfig:
        if self.prior_scope == "scan" and self.prior_iterations:
            return self
        for asked, option, why in (
                (self.prior_com_correction, "prior_com_correction true",
                 " (the neighbourhood prior starts flat and is not corrected)"),
                (self.prior_start == "com", "prior_start 'com'",
                 " (the neighbourhood prior starts flat and is not corrected)"),
                (self.prior_recipe == "featureless", "prior_recipe 'featureless'", "")):
            if asked:
                raise ValueError(
                    f"model.{option} needs the scan prior, prior_scope 'scan' with "
                    f"prior_iterations > 0{why}; found prior_scope {self.prior_scope!r}, "
                    f"prior_iterations {self.prior_iterations}")
        return self

    @model_validator(mode="after")
    def _step_options_need_scan_scope(self) -> ModelConfig:
        if self.prior_scope == "scan":
            return self
        for field, value, default, what, why in (
                ("prior_step_scale", self.prior_step_scale, 1, "other than 1", ""),
                ("prior_settle_passes", self.prior_settle_passes, 0, "above 0", ""),
                ("prior_object_momentum", self.prior_object_momentum, 0, "above 0", ""),
                ("prior_orders", self.prior_orders or 1, 1, "above 1", ""),
                ("prior_amplitude_step", self.prior_amplitude_step, 1, "below 1",
                 " (the neighbourhood prior takes whole steps)")):
            if value != default:
                raise ValueError(f"model.{field} {what} needs prior_scope 'scan'{why}; found "
                                 f"{value} with prior_scope {self.prior_scope!r}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_prior(cls, data: object) -> object:
        """Fill the prior fields ``prior_recipe='featureless'`` sets and that are not given
        with `FEATURELESS_RECIPE`'s values; resolve ``prior_iterations=None`` to the
        architecture's and scope's default,
        ``prior_amplitude_step=None`` to the scope's, and ``subpixel=None`` /
        ``prior_frc_filter=None`` and ``prior_com_correction=None`` to 'probe_shift' / on /
        on with a scan prior (scope 'scan' and passes > 0), else 'bilinear' / off / off."""
        if isinstance(data, dict) and data.get("prior_recipe") == "featureless":
            data = {**FEATURELESS_RECIPE, **{k: v for k, v in data.items() if v is not None}}
        if isinstance(data, dict) and data.get("prior_iterations") is None:
            per_scope = DEFAULT_PRIOR_ITERATIONS.get(data.get("architecture", "unet"), {})
            iters = per_scope.get(data.get("prior_scope", "scan"), 0)
            data = {**data, "prior_iterations": iters}
        if isinstance(data, dict) and data.get("prior_amplitude_step") is None:
            step = DEFAULT_PRIOR_AMPLITUDE_STEP.get(data.get("prior_scope", "scan"), 1.0)
            data = {**data, "prior_amplitude_step": step}
        if isinstance(data, dict):
            scan_prior = data.get("prior_scope", "scan") == "scan" and bool(
                _as_int(data.get("prior_iterations")))
            if data.get("subpixel") is None:
                data = {**data, "subpixel": "probe_shift" if scan_prior else "bilinear"}
            if data.get("prior_frc_filter") is None:
                data = {**data, "prior_frc_filter": scan_prior}
            if data.get("prior_com_correction") is None:
                data = {**data, "prior_com_correction": scan_prior}
        return data

    @field_validator("N")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        allowed = ALLOWED_N
        if v not in allowed:
            raise ValueError(
                f"N must be one of {allowed} (a power of two from 32 to 256); found {v}"
            )
        return v

    @property
    def n_channels(self) -> int:
        """C, the number of patterns per group."""
        return self.gridsize * self.gridsize

    @property
    def input_channels(self) -> int:
        """Generator input channels: C (diffraction) or 2C (prior estimate, re and im)."""
        return self.n_channels * (2 if self.prior_iterations else 1)


class ExecutionConfig(_Section):
    """Where and how the computation runs."""

    accelerator: Literal["cpu", "gpu", "cuda", "mps", "auto"] = Field(
        "auto", description="Device type."
    )
    devices: int | Literal["auto"] = Field(1, description="Number of devices (or 'auto').")
    strategy: Literal["auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true", "fsdp"] = (
        Field("auto", description="Distribution strategy (DDP for several devices or processes).")
    )
    num_nodes: int = Field(1, ge=1, description="Nodes for multi-node training.")
    # no '64-true': the physics and the data are single precision (it failed in the
    # first training step before 2026-12-03)
    precision: Literal["auto", "32-true", "16-mixed", "bf16-mixed"] = Field(
        "auto",
        description="Numerical precision. 'auto': training in '32-true'; inference runs the "
        "network in 'bf16-mixed' on a CPU with AMX-BF16 units (its forward pass 1.7-1.9x "
        "as fast, scores unchanged on the benchmark models) and in '32-true' elsewhere. Inference takes "
        "'auto', '32-true', 'bf16-mixed' or '16-mixed' (the network only: the physics stays "
        "float32); in training 'auto' means '32-true'.",
    )
    deterministic: bool = Field(False, description="Ask torch for deterministic algorithms.")
    logger: Literal["csv", "tensorboard", "mlflow", "none"] = Field(
        "csv", description="Training logger."
    )
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default a local file store in the run directory."
    )
    progress_bar: bool = Field(True, description="Show a progress bar.")
    num_threads: int | None = Field(
        None, ge=1, description="CPU threads for torch (None: torch's default)."
    )

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"devices must be >= 1 or 'auto'; found {v}")
        return v


MAX_GROUPS_PER_PATTERN = 8
"""Most groups per scan pattern ``InferenceConfig.n_groups`` may ask for (each group
holds gridsize^2 patterns: beyond this, every pattern is predicted dozens of times)."""


MAX_TIME_MINUTES = 365 * 24 * 60.0
"""Largest ``max_time_minutes`` (one year): a larger or infinite budget overflows the
trainer's `datetime.timedelta`; None is "no limit"."""


class TrainingConfig(_Section):
    """A training run: data, model, optimisation and outputs."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The model section.")
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Execution section."
    )
    backend: Backend = Field("pytorch", description="Framework: 'pytorch' or 'tensorflow'.")
    train_data_file: str | None = Field(None, description="Training scan (NPZ contract).")
    test_data_file: str | None = Field(
        None, description="Optional held-out scan scored after training."
    )
    output_dir: str = Field("ptychopinn_run", description="Run directory.")
    batch_size: int = Field(16, ge=1, le=65536, description="Groups per optimisation step.")
    nepochs: int = Field(60, ge=1, le=100000, description="Maximum epochs.")
    max_time_minutes: float | None = Field(
        8.0, gt=0, le=MAX_TIME_MINUTES, allow_inf_nan=False,
        description="Stop training after this many minutes, at most one year (None: no limit).",
    )
    nll_weight: float = Field(
        1.0, ge=0, description="Weight of the Poisson negative log-likelihood."
    )
    mae_weight: float = Field(0.0, ge=0, description="Weight of the MAE on amplitudes.")
    realspace_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the real-space MAE against true patches (needs an object).",
    )
    nphotons: float | None = Field(
        None,
        gt=0,
        description="If set, rescale data to this mean photons/pattern (arbitrary units).",
    )
    n_groups: int | None = Field(
        None, ge=1, description="Groups sampled per epoch (None: one per pattern)."
    )
    n_subsample: int | None = Field(
        None, ge=1, description="Use at most this many patterns of the scan."
    )
    seed: int = Field(0, ge=0, description="Seed of everything random in training.")
    subsample_seed: int | None = Field(None, ge=0, description="Seed of subsampling (None: seed).")
    neighbor_count: int = Field(
        6, ge=1, le=64, description="K nearest neighbours groups are drawn from."
    )
    probe_trainable: bool = Field(False, description="Refine the probe during training.")
    probe_refine_epochs: int = Field(
        0,
        ge=0,
        le=200,
        description="Before training, refine the scan's probe jointly with an object from a flat "
        "start for this many epochs of physics refinement (probe updates from the third "
        "epoch) and train with the refined probe: for measured scans whose probe guess is "
        "rough. 0: the scan's probe as given.",
    )
    probe_refine_positions: bool = Field(
        False,
        description="With probe_refine_epochs > 0: also correct the scan positions in that "
        "refinement and train at the corrected positions (measured scans with position "
        "errors).",
    )
    position_keep_linear: bool = Field(
        False, description="With probe_refine_positions: " + _KEEP_LINEAR
    )
    intensity_scale_trainable: bool = Field(True, description="Learn the global intensity scale.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="Optimizer.")
    learning_rate: float = Field(2e-3, gt=0, le=10, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    scheduler: Literal["none", "plateau", "cosine"] = Field("cosine", description="LR schedule.")
    gradient_clip_val: float | None = Field(
        1.0, gt=0, description="Gradient-norm clip (None: off)."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without validation gain (None: off)."
    )
    val_fraction: float = Field(
        0.05, ge=0, lt=0.9, description="Fraction of groups held out for validation."
    )
    save_reconstruction: bool = Field(
        True, description="Stitch and save the training scan's reconstruction."
    )
    init_from: str | None = Field(None, description="Bundle or run directory to fine-tune from.")

    @field_validator("probe_refine_epochs")
    @classmethod
    def _probe_epochs(cls, v: int) -> int:
        return _off_or_at_least_3("probe_refine_epochs", v, "the probe is refined from the "
                                  "third epoch")

    @model_validator(mode="after")
    def _positions_need_retrieval(self):
        if self.probe_refine_positions and self.probe_refine_epochs == 0:
            raise ValueError(
                "probe_refine_positions needs probe_refine_epochs >= 3 (the positions are "
                "corrected in that refinement); found probe_refine_epochs 0"
            )
        if self.position_keep_linear and not self.probe_refine_positions:
            raise ValueError(
                "position_keep_linear applies to position corrections: set "
                "probe_refine_positions (with probe_refine_epochs >= 3) or leave it off"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _supervised_defaults(cls, data: object) -> object:
        """Supervised mode defaults to the real-space loss alone (PtychoNN-style)."""
        if isinstance(data, dict):
            model = data.get("model")
            mt = (
                model.get("model_type")
                if isinstance(model, dict)
                else getattr(model, "model_type", None)
            )
            if mt == "supervised" and not data.get("realspace_weight"):
                data = dict(data)
                data["realspace_weight"] = 1.0
                if "nll_weight" not in data or data["nll_weight"] == 1.0:
                    data["nll_weight"] = 0.0
        return data

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.nll_weight + self.mae_weight + self.realspace_weight <= 0:
            raise ValueError(
                "at least one of nll_weight, mae_weight, realspace_weight must be > 0; "
                "found all zero"
            )
        return self


class InferenceConfig(_Section):
    """Reconstruct a scan with a trained model."""

    model_path: str | None = Field(None, description="Bundle file or run directory.")
    data_file: str | None = Field(None, description="Scan to reconstruct (NPZ contract).")
    output_dir: str = Field("ptychopinn_recon", description="Output directory.")
    backend: Backend = Field("pytorch", description="Framework: 'pytorch' or 'tensorflow'.")
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Execution section."
    )
    n_groups: int | None = Field(
        None, ge=1, le=10_000_000,
        description="Groups to predict, seeded at random (None: see group_cover); at most "
        f"{MAX_GROUPS_PER_PATTERN} per pattern of the scan.",
    )
    group_cover: bool = Field(
        True,
        description="With n_groups None: predict about 1.3 n / C groups that together hold "
        "every pattern (each about once); false: one group per pattern (every pattern "
        "predicted ~C times and averaged; slower).",
    )
    neighbor_count: int = Field(
        6, ge=1, le=64, description="K nearest neighbours groups are drawn from."
    )
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto", description="Groups per forward pass of the network (the objects do not depend "
        "on it). 'auto': 64 on GPUs and where the network runs in bfloat16 on a CPU with AMX "
        "(where 64 was chosen); where it runs in float32 on a CPU, 32 at N=64, 16 at N=128 "
        "(inversely proportional to N), which ran the network 1.04-1.6x as fast as 64 on a "
        "2-core AMD EPYC (inference.precision.network_batch_size; docs/benchmarks.md)."
    )
    seed: int = Field(0, ge=0, description="Seed of group sampling.")
    stitch_weight: Literal["auto", "probe", "uniform"] = Field(
        "auto",
        description="Weight of each patch pixel when stitching: 'probe' (by the probe "
        "intensity, flat above stitch_flat_above of its peak), 'uniform' (1 everywhere) or "
        "'auto' (default): 'uniform' where the physics prior is over-relaxed "
        "(model.prior_step_scale > 1, the featureless recipe) and ran on the whole scan "
        "without the FRC filter's halves (below model.prior_frc_min_coverage), else 'probe'. "
        "There the network never beat its own prior, and uniform weights, which average each "
        "patch over its whole window, raised it on all nine scans measured (by up to 0.04 "
        "amplitude SSIM at 1e5-3e5 photons); where the halves run they lowered three of five "
        "(docs/benchmarks.md, twenty-seventh session; inference.stitching.resolved_stitch_weight).",
    )
    stitch_flat_above: float = Field(
        0.01, gt=0, le=1,
        description="With stitch_weight 'probe': patch pixels lit with at least this fraction "
        "of the probe's peak intensity weigh the same, dimmer ones in proportion (1: weight = "
        "intensity, the behaviour before 2026-11-28). Flatter weights average more "
        "overlapping patches: +0.02-0.09 amplitude SSIM of the network's object on simulated "
        "scans (docs/benchmarks.md).",
    )
    phase_sync: bool = Field(True, description="Align the global phase of overlapping patches.")
    phase_sync_method: Literal["global", "waves"] = Field(
        "global",
        description="How phase_sync aligns the groups' phases: 'global' (every group's "
        "rotation at once from the leading eigenvector of the groups' overlap matrix, "
        "inference.phase_sync) or 'waves' (greedy: small waves of groups aligned to what is "
        "stitched, growing out from the scan's centre, then one polishing pass; the default "
        "before 2026-12-04). Against 'waves' the network's phase SSIM moved by -0.009 to "
        "+0.025 (mean +0.007; higher on 15 of 21 simulated scans, equal on 2, lower on 4; "
        "amplitude the same or up to +0.006) and "
        "the Siemens star's spokes did not move (docs/benchmarks.md, bench_phase_sync.py). "
        "Scans too large for the overlap matrix (about 11,000 patterns of 64x64 with "
        "gridsize 2; ~0.1 GB at that size) use 'waves'; reconstruction.npz records which ran "
        "(phase_sync).",
    )
    phase_sync_polish: int | None = Field(
        None, ge=0, le=100,
        description="Polishing passes after phase_sync: each re-aligns every group to the "
        "stitched object and stitches again (power iterations towards the 'global' "
        "rotations). None: 1 after 'waves', 0 after 'global'.",
    )
    prior_iterations: int | None = Field(
        None, ge=1, le=1000,
        description="Passes of the physics prior at inference (None: the model's "
        "model.prior_iterations, as trained, scaled by the scan's coverage where "
        "model.prior_coverage_passes is on; a value given is not scaled). More passes give the network a better "
        "converged first guess and a better output, ~0.1 s per 625 patterns of 64x64 per "
        "pass on 2 CPU cores; ignored for models without a prior.",
    )
    prior_extra_iterations: int | None = Field(
        None, ge=0, le=100,
        description="Passes the physics prior adds at inference when the two half-scan "
        "estimates of its FRC filter agree (the mean FRC weight of their amplitudes, "
        "physics.prior_frc.agreement, at least 0.45): there the data support more detail than "
        "the passes reached, and 2 more raised the network's amplitude SSIM by 0.003-0.018 on "
        "eight simulated scans at 1e6 photons (~0.2 s per 625 patterns of 64x64 on 2 CPU "
        "cores); at low dose and on the measured Siemens star the halves disagree (0.17-0.31) "
        "and nothing changes (docs/benchmarks.md); where plain halves agree only marginally "
        "(within 0.10 of it) the converge blocks run first and these passes only where no "
        "block is kept. None: 2 for plain passes, 0 for "
        "over-relaxed ones (a prior step scale other than 1, the featureless recipe), which "
        "end with their own plain passes (models.scan_prior.inference_pass_options). 0: "
        "none (with prior_converge_passes 0 too, exactly the model's passes). Models without "
        "the FRC filter ignore it.",
    )
    prior_converge_passes: int | None = Field(
        None, ge=0, le=100,
        description="At most this many passes the physics prior adds at inference, 4 at a "
        "time, for as long as each block raises the agreement of the two half-scan estimates "
        "of its FRC filter at all (a block that does not is dropped; "
        "physics.prior_frc.frc_filtered_estimate): "
        "independent halves of the data agree more while the passes converge on the object "
        "and less where they fit noise or overshoot. None: 4 for over-relaxed passes (a "
        "prior step scale other than 1, the featureless recipe, whose 12 passes are far from "
        "converged on some scans under Gaussian beams and diverge with more on others; ~0.5 s "
        "per block of 4 on 625 patterns of 64x64 on 2 CPU cores, paid also where the block is "
        "dropped), 16 for plain ones, tried only where their halves did not agree, or agreed "
        "only marginally (physics.prior_frc.MARGINAL_AGREEMENT), and kept "
        "where a block raised the agreement by more than 0.025 or, after a block so kept, "
        "lowered the halves' held-out misfit (each half's estimate against the other half's "
        "patterns) by more than 10 % (physics.prior_frc.PLAIN_CONVERGE_MISFIT_FALL), their "
        "blocks updating 4 "
        "patterns at a time (physics.prior_frc.PLAIN_CONVERGE_BATCH) without the "
        "centre-of-mass correction (PLAIN_CONVERGE_COM) and continuing the "
        "halves run with prior_phase_momentum with it (objects with a strong "
        "phase converge slowly under the default disk; models.scan_prior."
        "inference_pass_options; docs/benchmarks.md, twenty-second, thirty-eighth to "
        "forty-second sessions). 0: none (with "
        "prior_extra_iterations 0 too, exactly the "
        "model's passes). Models "
        "without the FRC filter ignore it.",
    )
    prior_phase_momentum: float | None = Field(
        None, ge=0, lt=1,
        description="Phase momentum of the physics prior's passes at inference, where the two "
        "half-scan estimates of its FRC filter agree (as for prior_extra_iterations): after "
        "each pass every pixel is turned on by this times its phase velocity (the running sum "
        "of its phase changes, each earlier pass's weighted by this once more; mPIE's "
        "momentum, on the phase only; physics.prior_scan), so the prior's phase, which starts "
        "flat, converges in fewer passes. 0.7 changed the network's amplitude / phase SSIM "
        "by -0.001 to +0.019 / -0.005 to +0.073 on ten simulated scans (+0.006 / +0.044 on a "
        "real-probe scan) at no cost in time; where the halves disagree (low dose, the "
        "measured Siemens star, where it cost resolution) the halves are estimated again "
        "without it and the result is the one without it, for ~0.1-0.4 s more per 625 "
        "patterns of 64x64 on 2 CPU cores (docs/benchmarks.md), unless a plain converge "
        "block (prior_converge_passes) continuing its halves with it is kept: then the "
        "blocks and the whole scan's passes run with it; with over-relaxed passes "
        "(model.prior_step_scale other than 1) the plain halves come first and the momentum's "
        "only where they agree (physics.prior_frc). None: 0.7 for plain passes, 0 for "
        "over-relaxed ones (as for prior_extra_iterations). 0: off. Models without the FRC "
        "filter ignore it.",
    )
    prior_step_scale: float | None = Field(
        None, gt=0, le=4,
        description="Over-relaxation of the physics prior's updates at inference (None: as "
        "the model was trained, model.prior_step_scale; see there). Best left as trained; "
        "models without a scan prior refuse values other than 1.",
    )
    prior_settle_passes: int | None = Field(
        None, ge=0, le=64,
        description="Plain passes the physics prior's whole-scan estimate ends with at "
        "inference (None: as the model was trained, model.prior_settle_passes; see there). "
        "Models trained with the over-relaxed recipe before it existed (0) gain from 4 "
        "(docs/benchmarks.md); models without a scan prior refuse values above 0.",
    )
    prior_orders: int | None = Field(
        None, ge=1, le=8,
        description="Mini-batch orders whose estimates the physics prior's whole-scan "
        "estimate averages at inference where it runs without the FRC filter's halves (None: "
        "as the model was trained, model.prior_orders; see there). More orders lower the "
        "prior's noise for more time: on 2 CPU cores two run in the time of one, four in "
        "twice that; models without a scan prior refuse values above 1.",
    )
    prior_orders_filter: bool | None = Field(
        None,
        description="Filter the amplitude of the physics prior's mean of mini-batch orders "
        "by the orders' Fourier ring correlation at inference (None: as the model was "
        "trained, model.prior_orders_filter; see there). Only where 2 or more orders run.",
    )
    prior_start: Literal["flat", "com", "auto"] | None = Field(
        None,
        description="The phase the physics prior's passes start from at inference: 'flat', "
        "'com' or 'auto' (model.prior_start; None: as the model was trained). Models without "
        "a scan prior ignore 'auto' and refuse 'com'.",
    )
    prior_com_correction: bool | None = Field(
        None,
        description="The physics prior's centre-of-mass phase correction at inference (None: "
        "as the model was trained, model.prior_com_correction; best left as trained). Models "
        "without a scan prior refuse true.",
    )
    prior_frc_filter: bool | None = Field(
        None,
        description="The physics prior's half-scan FRC filter of its amplitude at inference "
        "(None: as the model was trained, model.prior_frc_filter, left out on scans below "
        "model.prior_frc_min_coverage for over-relaxed passes; a value given is kept). Off gives the network its "
        "prior unfiltered: on the measured Siemens star that resolved the spokes 1 px "
        "further in at corrected positions and 1 px less far at the measured ones "
        "(benchmarks/bench_siemens_prior.py); true needs a model with the scan prior; ignored for models "
        "without a prior.",
    )
    position_refine_epochs: int = Field(
        0,
        ge=0,
        le=200,
        description="Before the network: correct the scan positions by this many epochs of "
        "physics refinement (probe and positions from a flat object; the probe is then "
        "discarded) and predict and stitch at the corrected positions (reconstruction.npz "
        "positions_px). For measured scans with position errors; 0: off, else >= 3.",
    )

    @field_validator("position_refine_epochs")
    @classmethod
    def _position_epochs(cls, v: int) -> int:
        return _off_or_at_least_3("position_refine_epochs", v, "probe and positions are "
                                  "refined together, the probe from the third epoch")

    refine_epochs: int = Field(
        0, ge=0, le=100_000, description="Physics refinement epochs after inference (0: off)."
    )
    refine_probe: bool = Field(False, description="Also refine the probe during refinement.")
    refine_positions: bool = Field(
        False, description="Also refine the scan positions during refinement."
    )
    position_keep_linear: bool = Field(
        False, description="With position_refine_epochs or refine_positions: " + _KEEP_LINEAR
    )
    refine_learning_rate: float = Field(
        1.0, gt=0, le=4, description="Refinement step as a fraction of the full PIE step."
    )
    refine_momentum: float = Field(
        0.8, ge=0, lt=1,
        description="Epoch-level momentum of the refined object (mPIE-like; 0: plain PIE); "
        "speeds up the phase's low frequencies.",
    )
    refine_momentum_amplitude: bool = Field(
        False,
        description="Let refine_momentum move the amplitude too (the whole complex object). "
        "Off: the momentum moves the phase only. With the amplitude moved, the grf / "
        "zone-plate scan's amplitude stalled at SSIM 0.823 for 40 epochs; phase only it "
        "reached 0.848 (the default and real-probe scans unchanged; docs/benchmarks.md, "
        "seventeenth session).",
    )
    refine_phase_first: int = Field(
        20, ge=0, le=100_000,
        description="The first min(this, refine_epochs // 2) refinement epochs update only the "
        "phase and hold the network's amplitude (its low-frequency phase is what the "
        "network gets least right; amplitude updates made before the phase is right absorb "
        "phase errors and noise). 0: amplitude and phase from the first epoch.",
    )
    refine_release_restart: bool = Field(
        True,
        description="With refine_phase_first: the step schedule starts again from the full "
        "step at the first epoch that refines the amplitude (its cuts during the phase-only "
        "epochs answered the phase's stall and left the amplitude a step of 1/16-1/2). On 13 "
        "simulated scans it raised the amplitude SSIM after 40 epochs by 0.004-0.071 on "
        "seven and lowered it by 0.007-0.011 at 1e4-1e5 photons. False: the schedule "
        "carries on (the behaviour before 2026-12-07; docs/benchmarks.md, thirty-ninth "
        "session).",
    )
    refine_subpixel: Literal["bilinear", "probe_shift"] = Field(
        "probe_shift",
        description="Refinement's model of fractional scan positions: 'probe_shift' shifts the "
        "probe by the fraction (Fourier shift) on the nearest whole-pixel object window, the "
        "exact physics for a band-limited probe and our simulator's default; 'bilinear' "
        "interpolates the object (smooths it; fits scans simulated with subpixel='bilinear').",
    )
    refine_noise_floor: bool = Field(
        True,
        description="Hold the amplitude once the fit reaches the Poisson noise floor (the "
        "NLL expected of the true object under counting noise): below it the refinement fits "
        "noise. The phase keeps refining.",
    )
    refine_floor_after: int = Field(
        0, ge=0, le=100_000,
        description="With refine_noise_floor: the floor may hold the amplitude only after the "
        "amplitude has been refined this many epochs (after the phase-only ones). 0: the floor "
        "is checked from the first epoch (in the phase-only ones too: an amplitude already at "
        "the floor is then never released). On 22 simulated scans 10 changed nothing that "
        "issue 5's target measures and lowered the amplitude after 40 epochs on the 'cell' "
        "picture and the real-probe scan (docs/benchmarks.md, thirty-third session).",
    )
    refine_preconditioner: Literal["batch", "scan"] = Field(
        "scan",
        description="Illumination that divides the refinement's object step: 'scan' (the "
        "default), the whole scan's times the mini-batch's share of the positions (the "
        "illumination a batch has on average, smooth where a batch's own has the gaps and "
        "pile-ups of a few random positions), the step's length solved by least squares as "
        "LSQML does; 'batch', the batch's own positions' (rPIE, the default before "
        "2026-12-06). On 23 simulated scans 'scan' met issue 5's refinement target on 17 "
        "against 13, its amplitude SSIM after 40 epochs higher by more than 0.005 on 12 and "
        "lower on one (by 0.007), its phase SSIM nowhere lower by more than 0.001 "
        "(docs/benchmarks.md, "
        "thirty-fourth session).",
    )
    refine_sparse_counts: bool = Field(
        True,
        description="Photon-sparse rule: when the scan's counts per photon (count-weighted mean "
        "expected count of a detector pixel, sum k(k-1)/sum k) are below 3, scale the "
        "refinement step by counts_per_photon/3 (at least 0.1) and turn the momentum off: "
        "with so few photons per pixel the measured modulus is mostly noise. No effect on "
        "data that are not integer counts.",
    )
    data_consistency_patterns: int = Field(
        2000,
        ge=0,
        description="Score the reconstruction against the measured counts (no truth needed: "
        "modulus R-factor and Poisson deviance over its photon-noise floor, see ptychopinn "
        "evaluate --scan) on up to this many patterns spread evenly over the scan; written to "
        "metrics.json as data_consistency. 0: off.",
    )
    figures: bool = Field(True, description="Write PNG figures.")

    @model_validator(mode="after")
    def _keep_linear_needs_positions(self):
        if self.position_keep_linear and not (self.position_refine_epochs or
                                              self.refine_positions):
            raise ValueError(
                "position_keep_linear applies to position corrections: set "
                "position_refine_epochs (>= 3) or refine_positions, or leave it off"
            )
        return self
