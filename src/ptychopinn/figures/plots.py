"""Figures of results: training loss curves and the truth-vs-reconstruction panel.

Drawn on pyplot-free Agg figures and written atomically (see `figures.images`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.errors import DataError
from ptychopinn.figures.images import (
    new_figure,
    phase_display,
    require_complex_2d,
    robust_limits,
    save_figure,
    show_image,
)

log = logging.getLogger(__name__)

#: History keys that are not losses (x axes, schedules, timings).
NON_LOSS_KEYS = frozenset(
    {"epoch", "step", "global_step", "lr", "learning_rate", "time", "time_s", "wall_s"}
)
_PREFIXES = ("train_", "train/", "val_", "val/", "valid_", "validation_")
_SUFFIXES = ("_epoch", "_step")


def _series(history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, Any]]):
    """``(x, {name: values})`` from a dict of lists or a list of per-epoch dicts."""
    if isinstance(history, Mapping):
        try:
            data = {str(k): list(np.ravel(v)) for k, v in history.items()}
        except (TypeError, ValueError) as exc:
            raise DataError(f"'history' values must be lists of numbers ({exc}).") from exc
        n = max((len(v) for v in data.values()), default=0)
        x = data.get("epoch") or list(range(n))
    elif isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        rows = list(history)
        if not all(isinstance(r, Mapping) for r in rows):
            raise DataError("'history' as a list must hold one dict of losses per epoch.")
        keys = sorted({k for r in rows for k in r})
        data = {k: [r.get(k, float("nan")) for r in rows] for k in keys}
        x = data.get("epoch") or list(range(len(rows)))
    else:
        raise DataError(
            f"'history' must be a dict of lists or a list of per-epoch dicts; "
            f"found {type(history).__name__}."
        )
    out: dict[str, np.ndarray] = {}
    for k, v in data.items():
        if k in NON_LOSS_KEYS:
            continue
        try:
            arr = np.asarray(v, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            log.debug("history key %r is not numeric; not plotted.", k)
            continue
        if np.any(np.isfinite(arr)):
            out[k] = arr
    if not out:
        raise DataError(f"'history' holds no numeric loss values; keys found: {sorted(data)}.")
    return np.asarray(x, dtype=np.float64), out


def _base_name(key: str) -> str:
    name = key
    for p in _PREFIXES:
        if name.startswith(p):
            name = name[len(p):]
            break
    for s in _SUFFIXES:
        if name.endswith(s):
            name = name[: -len(s)]
    return name


def plot_loss_curve(
    history: Mapping[str, Sequence[float]] | Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str = "training history",
) -> Path:
    """Plot each named loss against the epoch (log y when all values are positive).

    ``history`` is a dict of per-epoch lists (``{"train_loss": [...],
    "val_loss": [...]}``) or a list of per-epoch dicts; an ``epoch`` entry, when
    present, is the x axis. A training curve and its validation twin
    (``train_X`` / ``val_X``) share a colour; validation curves are dashed.
    """
    x_all, series = _series(history)
    fig = new_figure(6.4, 4.2)
    ax = fig.add_subplot()
    colours: dict[str, str] = {}
    positive = True
    for key, vals in series.items():
        base = _base_name(key)
        colour = colours.setdefault(base, f"C{len(colours) % 10}")
        x = x_all[: len(vals)] if len(x_all) >= len(vals) else np.arange(len(vals))
        ok = np.isfinite(vals)
        positive &= bool(np.all(vals[ok] > 0))
        is_val = key.startswith(("val", "valid"))
        ax.plot(x[ok], vals[ok], color=colour, linestyle="--" if is_val else "-",
                marker="o" if ok.sum() < 30 else None, markersize=3, label=key)
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss" + (" (log scale)" if positive else ""))
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _frc_data(truth: np.ndarray, recon: np.ndarray, metrics: Mapping | None) -> dict:
    if metrics is not None and isinstance(metrics.get("frc"), Mapping):
        f = dict(metrics["frc"])
        if "freq" in f and "values" in f:
            return f
    from ptychopinn.metrics import frc as frc_mod

    freq, values = frc_mod.fourier_ring_correlation(recon, truth)
    n = frc_mod.ring_pixel_counts(truth.shape)
    return {"freq": freq, "values": values, "n_per_ring": n,
            **frc_mod.resolution_cutoffs(freq, values, n)}


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x, ".3g") for x in v) + "]"
    if isinstance(v, (int, float, np.floating)) and math.isfinite(float(v)):
        return format(float(v), spec)
    return str(v)


def _metrics_text(metrics: Mapping | None, frc: Mapping) -> str:
    m = metrics or {}
    lines = [
        f"amplitude SSIM  {_fmt(m.get('amp_ssim'))}",
        f"phase SSIM      {_fmt(m.get('phase_ssim'))}",
        f"amplitude PSNR  {_fmt(m.get('amp_psnr'))} dB",
        f"phase PSNR      {_fmt(m.get('phase_psnr'))} dB",
        f"phase MAE       {_fmt(m.get('phase_mae'))} rad",
        f"complex NRMSE   {_fmt(m.get('complex_nrmse'))}",
        f"FRC half-bit    {_fmt(frc.get('frc_half_bit'))} cyc/px",
        f"FRC 0.5         {_fmt(frc.get('frc_0.5'))} cyc/px",
        f"shift (y, x)    {_fmt(m.get('shift_px'))} px",
    ]
    return "\n".join(lines)


def plot_comparison(
    truth: np.ndarray,
    recon: np.ndarray,
    metrics: Mapping | None,
    path: str | os.PathLike,
) -> Path:
    """Truth | reconstruction | difference for amplitude and phase, plus the FRC.

    ``truth`` and ``recon`` are aligned complex crops of one shape, e.g. from
    ``evaluate(..., return_aligned=True)``; ``metrics`` is that call's dict (its
    FRC is drawn, and recomputed from the images when absent). The phase
    difference is wrapped into (-pi, pi].
    """
    t = require_complex_2d(truth, "truth")
    r = require_complex_2d(recon, "recon")
    if t.shape != r.shape:
        raise DataError(
            f"'truth' and 'recon' must be aligned crops of one shape; found {t.shape} and "
            f"{r.shape}. Use evaluate(..., return_aligned=True) to get them."
        )
    h, w = t.shape
    fig = new_figure(13.0, min(max(2 * 4.0 * h / w + 3.6, 7.0), 16.0))
    gs = fig.add_gridspec(3, 3, height_ratios=[1.0, 1.0, 0.8])
    amp_t, amp_r = np.abs(t), np.abs(r)
    amp_lim = robust_limits(np.concatenate([amp_t.ravel(), amp_r.ravel()]))
    d_amp = amp_r - amp_t
    ph_t = np.angle(t)
    d_ph = np.angle(r * np.conj(t))
    ph_r = np.angle(np.exp(1j * (ph_t + d_ph)))
    ph_cmap, ph_lim = phase_display(ph_t)
    panels = [
        (0, 0, amp_t, "truth amplitude", "amplitude", "gray", amp_lim, True),
        (0, 1, amp_r, "reconstruction amplitude", "amplitude", "gray", amp_lim, False),
        (0, 2, d_amp, "amplitude difference (recon - truth)", "amplitude", "RdBu_r",
         _symmetric(d_amp), False),
        (1, 0, ph_t, "truth phase", "phase (rad)", ph_cmap, ph_lim, True),
        (1, 1, ph_r, "reconstruction phase", "phase (rad)", ph_cmap, ph_lim, False),
        (1, 2, d_ph, "phase difference (wrapped)", "phase (rad)", "RdBu_r",
         _symmetric(d_ph), False),
    ]
    for row, col, img, title, label, cmap, lim, bar in panels:
        ax = fig.add_subplot(gs[row, col])
        show_image(fig, ax, img, title=title, cbar_label=label, cmap=cmap, limits=lim,
                   scale_bar=bar)

    frc = _frc_data(t, r, metrics)
    ax = fig.add_subplot(gs[2, 0:2])
    freq = np.asarray(frc["freq"], dtype=np.float64)
    ax.plot(freq, np.asarray(frc["values"], dtype=np.float64), color="C0", label="FRC")
    if "half_bit_threshold" in frc:
        ax.plot(freq, np.asarray(frc["half_bit_threshold"]), "--", color="C3",
                label="half-bit threshold")
    elif "n_per_ring" in frc:
        from ptychopinn.metrics.frc import half_bit_threshold

        ax.plot(freq, half_bit_threshold(np.asarray(frc["n_per_ring"])), "--", color="C3",
                label="half-bit threshold")
    ax.axhline(0.5, linestyle=":", color="C2", label="0.5 threshold")
    for key, colour in (("frc_half_bit", "C3"), ("frc_0.5", "C2")):
        if frc.get(key):
            ax.axvline(float(frc[key]), color=colour, alpha=0.5, linewidth=0.8)
    ax.set_xlim(0, 0.5)
    ax.set_ylim(min(-0.1, float(np.nanmin(frc["values"])) - 0.05), 1.05)
    ax.set_xlabel("spatial frequency (cycles/pixel)")
    ax.set_ylabel("Fourier ring correlation")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")

    tax = fig.add_subplot(gs[2, 2])
    tax.axis("off")
    tax.text(0.0, 1.0, _metrics_text(metrics, frc), family="monospace", fontsize=8.5,
             va="top", ha="left", transform=tax.transAxes)
    return save_figure(fig, path)


def _symmetric(d: np.ndarray) -> tuple[float, float]:
    m = float(np.percentile(np.abs(d), 99.5))
    m = m if m > 0 else 1e-6
    return -m, m


def plot_spoke_modulation(
    results: Mapping[str, Any], path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Siemens-star spoke contrast against radius, one curve per labelled
    `ptychopinn.metrics.SpokeResolution` (``{label: result}``), each with its
    resolved radius (dotted) and the threshold (dashed)."""
    if not results:
        raise DataError("plot_spoke_modulation: no results to plot.")
    fig = new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    first = next(iter(results.values()))
    for label, r in results.items():
        (line,) = ax.plot(r.radii, r.modulation, label=f"{label}: {r.resolved_radius_px:.1f} px")
        ax.axvline(r.resolved_radius_px, color=line.get_color(), ls=":", lw=1)
    ax.axhline(first.threshold, color="k", lw=0.8, ls="--")
    ax.set_xlabel(f"radius from the star's centre (px); {first.n_spokes} spoke periods")
    ax.set_ylabel("spoke modulation / outer median")
    ax.set_title(title or "Siemens star: spoke contrast vs radius (resolved where >= threshold)",
                 fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
