"""`SimulationConfig`: every choice of a simulated scan, validated and immutable.

Sizes that scale with the patch size ``N`` default to ``None`` and are resolved
by the ``effective_*`` properties, so that changing ``N`` (e.g. through
`ptychopinn.config.with_overrides`) keeps the geometry consistent:

* probe diameter 0.4 N (N / 2.5),
* scan step N / 8, which gives a linear overlap of 1 - 8 / (0.4 * 64) ~ 69 %
  between neighbouring probe disks for every N,
* object margin N / 2 around the scanned region.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ptychopinn.data.scan import MAX_CANVAS_PX
from ptychopinn.simulation.objects import BUNDLED_IMAGES
from ptychopinn.simulation.patterns import pattern_extent
from ptychopinn.simulation.probes import MAX_FRESNEL_GRID, MAX_LAMBDA_Z

ObjectKind = Literal["textured", "lines", "grf", "image", "file"]
ProbeKind = Literal["disk", "gaussian", "zoneplate", "file"]
PatternKind = Literal["raster", "fermat", "random"]
SubpixelKind = Literal["bilinear", "probe_shift"]

PROBE_DIAMETER_FRACTION = 0.4
STEP_FRACTION = 1.0 / 8.0
MAX_SIMULATION_BYTES = 32 * 2**30
"""Largest scan `simulate_scan` makes: diffraction (n N^2 float32) plus a generated
object (complex64), 32 GiB."""
JITTER_SIGMAS = 6
"""How far (in jitter_px) the canvas estimate allows a position to stray each way."""


class SimulationConfig(BaseModel):
    """How to simulate a far-field ptychographic scan (see `simulate_scan`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    N: int = Field(
        64, description="Patch and diffraction-pattern size in pixels (32, 64, 128, 256)."
    )
    object_kind: ObjectKind = Field(
        "textured",
        description="Object: 'textured' (two scikit-image pictures + random fields, amplitude "
        "and phase), 'lines', 'grf', 'image' (see object_image) or 'file' (see object_file).",
    )
    object_image: str | None = Field(
        None,
        description="scikit-image test image for object_kind='image' (e.g. 'camera'); with "
        "'textured' it forces the amplitude picture.",
    )
    object_file: str | None = Field(
        None, description="NPZ with 'objectGuess' or .npy complex array, for object_kind='file'."
    )
    amplitude_range: tuple[float, float] = Field(
        (0.5, 1.0), description="(min, max) object amplitude (transmission) of generated objects."
    )
    phase_range_rad: tuple[float, float] = Field(
        (-1.0, 1.0), description="(min, max) object phase in radians of generated objects."
    )
    probe_kind: ProbeKind = Field(
        "disk",
        description="Probe: 'disk' (soft-edged aperture, Fresnel-propagated), 'gaussian', "
        "'zoneplate' (defocused zone-plate focus) or 'file' (see probe_file).",
    )
    probe_file: str | None = Field(
        None, description="NPZ with 'probeGuess' or .npy complex array, for probe_kind='file'."
    )
    probe_diameter_px: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Probe diameter in pixels; None = 0.4 N (about 70 % overlap)."
    )
    defocus_fresnel_number: float | None = Field(
        4.0,
        gt=0,
        allow_inf_nan=False,
        description="Defocus of 'disk'/'gaussian' probes as the Fresnel number (D/2)^2/(lambda z) "
        "of the propagation; smaller = more defocus; None = in focus (no propagation).",
    )
    pattern: PatternKind = Field(
        "raster", description="Scan pattern: 'raster' (grid), 'fermat' (spiral) or 'random'."
    )
    jitter_px: float = Field(
        0.5, ge=0, le=64, description="Standard deviation in pixels of random position errors."
    )
    subpixel: SubpixelKind = Field(
        "probe_shift",
        description="How a fractional scan position is imaged: 'probe_shift' takes the nearest "
        "whole-pixel object window and shifts the probe by the remainder with the Fourier "
        "shift theorem (exact for a band-limited probe; the object is not smoothed; the model "
        "of pty-chi's default Fourier patch interpolation up to the patch edge); 'bilinear' "
        "interpolates the object at the shifted grid (the earlier default; it low-passes the "
        "object, to zero at the Nyquist frequency for a half-pixel shift).",
    )
    n_positions: int = Field(625, ge=1, le=10_000_000, description="Number of scan positions.")
    step_px: float | None = Field(
        None, gt=0, allow_inf_nan=False, description="Mean distance between neighbouring positions; None = N / 8."
    )
    photons_per_pattern: float | None = Field(
        1e6,
        ge=1,
        le=1e12,
        allow_inf_nan=False,
        description="Mean expected photon count per pattern; None = noise-free, arbitrary scale.",
    )
    poisson_noise: bool = Field(
        True,
        description="Draw Poisson counts (needs photons_per_pattern; when photons_per_pattern "
        "is null and poisson_noise is not given, it defaults to false).",
    )
    seed: int = Field(
        0, ge=0, description="Seed of every random choice (object, probe, scan, noise)."
    )
    object_margin_px: int | None = Field(
        None, ge=0, description="Object pixels beyond the scanned region; None = N / 2."
    )

    @field_validator("N")
    @classmethod
    def _check_n(cls, v: int) -> int:
        allowed = (32, 64, 128, 256)
        if v not in allowed:
            raise ValueError(f"N must be one of {allowed}; found {v}")
        return v

    @field_validator("amplitude_range")
    @classmethod
    def _check_amplitude(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi and hi > 0):
            raise ValueError(f"amplitude_range must satisfy 0 <= min <= max, max > 0; found {v}")
        return v

    @field_validator("phase_range_rad")
    @classmethod
    def _check_phase(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"phase_range_rad must be finite with min <= max; found {v}")
        if hi - lo > 2 * math.pi:
            raise ValueError(f"phase_range_rad must span at most 2 pi (no wrapping); found {v}")
        return v

    @field_validator("object_image")
    @classmethod
    def _check_image(cls, v: str | None) -> str | None:
        if v is not None and v not in BUNDLED_IMAGES:
            raise ValueError(
                f"object_image must be a scikit-image test image bundled with the package, one "
                f"of {sorted(BUNDLED_IMAGES)}; found {v!r}"
            )
        return v

    @model_validator(mode="before")
    @classmethod
    def _implied_choices(cls, data: object) -> object:
        """A probe_file or object_file given without its kind selects the kind that reads it
        ('file'); photons_per_pattern null without poisson_noise means noise-free data."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("probe_file") and data.get("probe_kind") is None:
            data["probe_kind"] = "file"
        if data.get("object_file") and data.get("object_kind") is None:
            data["object_kind"] = "file"
        if "photons_per_pattern" in data and data["photons_per_pattern"] is None:
            data.setdefault("poisson_noise", False)
        return data

    @model_validator(mode="after")
    def _check_combinations(self) -> SimulationConfig:
        for key, kind_key, kind in (("probe_file", "probe_kind", "file"),
                                    ("object_file", "object_kind", "file")):
            found = getattr(self, kind_key)
            if getattr(self, key) and found != kind:
                raise ValueError(
                    f"{key} is given ({getattr(self, key)!r}) but {kind_key} is {found!r}, which "
                    f"does not read it; expected {kind_key}='{kind}' (--{kind_key[:-5]} {kind}) "
                    f"with {key}, or no {key}"
                )
        if self.object_image is not None and self.object_kind not in ("image", "textured"):
            raise ValueError(
                f"object_image is given ({self.object_image!r}) but object_kind is "
                f"{self.object_kind!r}, which does not use it; expected object_kind='image' "
                "(--object image) or 'textured' with object_image, or no object_image"
            )
        if self.poisson_noise and self.photons_per_pattern is None:
            raise ValueError(
                "poisson_noise is true but photons_per_pattern is null (no photon budget); "
                "expected photons_per_pattern (e.g. 1e6) for Poisson counts, or "
                "poisson_noise: false for noise-free data"
            )
        if self.object_kind == "image" and self.object_image is None:
            raise ValueError("object_kind='image' needs object_image (e.g. 'camera')")
        if self.object_kind == "file" and not self.object_file:
            raise ValueError("object_kind='file' needs object_file (NPZ or .npy path)")
        if self.probe_kind == "file" and not self.probe_file:
            raise ValueError("probe_kind='file' needs probe_file (NPZ or .npy path)")
        if self.effective_probe_diameter_px > self.N:
            raise ValueError(
                f"probe_diameter_px must be at most N={self.N}; found {self.probe_diameter_px}"
            )
        self._check_size()
        return self

    def _check_size(self) -> None:
        """Refuse, before anything is allocated, a scan whose object canvas, output or
        probe propagation would be too large (the sizes are estimated from the config)."""
        d = self.effective_probe_diameter_px
        f = self.defocus_fresnel_number
        if self.probe_kind in ("disk", "gaussian") and f is not None:
            if (d / 2) ** 2 / f > MAX_LAMBDA_Z:
                raise ValueError(
                    f"defocus_fresnel_number={f:g} with a probe diameter of {d:g} px needs a "
                    f"Fresnel propagation grid of more than {MAX_FRESNEL_GRID} px per side; expected "
                    f"defocus_fresnel_number >= {(d / 2) ** 2 / MAX_LAMBDA_Z:.3g} for this "
                    "probe_diameter_px (or a smaller probe_diameter_px)"
                )
        step = self.effective_step_px
        extent = pattern_extent(self.pattern, self.n_positions, step)
        pad = self.N + 2 * JITTER_SIGMAS * self.jitter_px
        if self.object_kind != "file":
            pad += 2 * self.effective_margin_px
        h, w = (math.ceil(e + pad) for e in extent)
        if max(h, w) > MAX_CANVAS_PX:
            raise ValueError(
                f"n_positions={self.n_positions} {self.pattern} positions at step_px={step:g} "
                f"(with N={self.N}, object_margin_px={self.effective_margin_px}, "
                f"jitter_px={self.jitter_px:g}) need an object of about {h} x {w} px; expected "
                f"at most {MAX_CANVAS_PX} px per side (what the readers accept). Use a smaller "
                "step_px, fewer n_positions or a smaller object_margin_px"
            )
        n_bytes = 4 * self.n_positions * self.N**2
        if self.object_kind != "file":
            n_bytes += 8 * h * w
        if n_bytes > MAX_SIMULATION_BYTES:
            raise ValueError(
                f"n_positions={self.n_positions}, N={self.N}: the simulated scan would take "
                f"about {n_bytes / 2**30:.3g} GiB (diffraction n_positions * N^2 * 4 bytes plus "
                f"a {h} x {w} complex64 object); expected at most "
                f"{MAX_SIMULATION_BYTES / 2**30:g} GiB. Use fewer n_positions or a smaller N "
                "(several scans with different seeds)"
            )

    # ------------------------------------------------------------ resolved sizes
    @property
    def effective_probe_diameter_px(self) -> float:
        """Probe diameter in pixels (``probe_diameter_px`` or 0.4 N)."""
        if self.probe_diameter_px is not None:
            return float(self.probe_diameter_px)
        return PROBE_DIAMETER_FRACTION * self.N

    @property
    def effective_step_px(self) -> float:
        """Scan step in pixels (``step_px`` or N / 8)."""
        return float(self.step_px) if self.step_px is not None else STEP_FRACTION * self.N

    @property
    def effective_margin_px(self) -> int:
        """Object margin beyond the scanned region (``object_margin_px`` or N / 2)."""
        return int(self.object_margin_px) if self.object_margin_px is not None else self.N // 2

    @property
    def noisy(self) -> bool:
        """Whether Poisson counts are drawn."""
        return self.poisson_noise and self.photons_per_pattern is not None

    def resolved(self) -> dict:
        """The sizes actually used (stored next to the config in scan metadata)."""
        d = self.effective_probe_diameter_px
        s = self.effective_step_px
        return {
            "probe_diameter_px": d,
            "step_px": s,
            "object_margin_px": self.effective_margin_px,
            "linear_overlap": max(0.0, 1.0 - s / d),
        }
