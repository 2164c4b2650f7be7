"""Figures of images: the reconstructed object, the probe modes, the scan positions.

Every figure is drawn on its own ``matplotlib.figure.Figure`` with an Agg canvas
(never pyplot, never a window, no global backend switch) and written atomically:
a temporary file in the target folder, then ``os.replace``. Images use the array
convention (row 0 at the top, pixel centres at integer coordinates) and carry a
hand-drawn scale bar in pixels, or in nm/µm/mm when the pixel size is known.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ptychopinn.atomic import atomic_open
from ptychopinn.errors import DataError

log = logging.getLogger(__name__)

DPI = 100
_NICE = (1.0, 2.0, 5.0)
_UNITS = ((1e-3, "mm"), (1e-6, "µm"), (1e-9, "nm"))


# ------------------------------------------------------------------ helpers


def new_figure(width_in: float, height_in: float) -> Any:
    """A pyplot-free figure with its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG atomically (temporary file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(p, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    log.info("wrote %s", p)
    return p


def require_complex_2d(arr: np.ndarray, name: str) -> np.ndarray:
    """``arr`` as a finite complex 2-D array, else a `DataError` naming ``name``."""
    a = np.asarray(arr)
    if not np.iscomplexobj(a):
        raise DataError(
            f"'{name}' must be a complex array (amplitude * exp(i phase)); found real "
            f"dtype {a.dtype} with shape {a.shape}."
        )
    if a.ndim != 2 or min(a.shape) < 2:
        raise DataError(f"'{name}' must be a 2-D (H, W) array; found shape {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise DataError(f"'{name}' holds NaN/Inf values.")
    return a


def nice_scale_bar(width_px: float, pixel_size_m: float | None = None) -> tuple[float, str]:
    """Length in pixels and label of a round scale bar about a quarter of ``width_px``.

    The length is the largest 1, 2 or 5 times a power of ten (in pixels, or in
    metres shown as mm/µm/nm when ``pixel_size_m`` is given) not above a quarter
    of the image width.
    """
    if pixel_size_m is not None and not (np.isfinite(pixel_size_m) and pixel_size_m > 0):
        raise DataError(f"'pixel_size_m' must be a positive number; found {pixel_size_m!r}.")
    unit = 1.0 if pixel_size_m is None else float(pixel_size_m)
    target = width_px / 4.0 * unit
    if pixel_size_m is None:
        target = max(target, 1.0)  # never a bar shorter than one pixel
    exp = math.floor(math.log10(target))
    value = max(m * 10.0**exp for m in _NICE if m * 10.0**exp <= target * (1 + 1e-9))
    length_px = value / unit
    if pixel_size_m is None:
        return length_px, f"{value:g} px"
    for scale, name in _UNITS:
        if value >= scale * (1 - 1e-9):
            return length_px, f"{value / scale:.3g} {name}"
    return length_px, f"{value / 1e-12:.3g} pm"


def add_scale_bar(ax: Any, shape: tuple[int, int], pixel_size_m: float | None = None) -> None:
    """Draw a white, black-edged scale bar in the lower right corner of an image axes."""
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle

    h, w = shape
    length, label = nice_scale_bar(w, pixel_size_m)
    bar_h = max(h * 0.015, 0.6)
    x0 = w - 0.5 - 0.05 * w - length
    y0 = h - 0.5 - 0.05 * h - bar_h
    ax.add_patch(Rectangle((x0, y0), length, bar_h, facecolor="white", edgecolor="black",
                           linewidth=0.6, zorder=5))
    txt = ax.text(x0 + length / 2, y0 - 0.01 * h, label, color="white", ha="center",
                  va="bottom", fontsize=8, zorder=6)
    txt.set_path_effects([patheffects.withStroke(linewidth=2, foreground="black")])


def robust_limits(values: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    """Percentile colour limits that ignore a few outliers (never equal)."""
    v = np.asarray(values, dtype=np.float64)
    a, b = (float(x) for x in np.percentile(v, [lo, hi]))
    if b <= a:
        a, b = a - 0.5, b + 0.5
    return a, b


def show_image(fig: Any, ax: Any, img: np.ndarray, *, title: str, cbar_label: str,
               cmap: str = "gray", limits: tuple[float, float] | None = None,
               pixel_size_m: float | None = None, scale_bar: bool = True) -> Any:
    """``imshow`` with colour bar, axis labels in pixels and a scale bar."""
    vmin, vmax = limits if limits is not None else robust_limits(img)
    im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    cb = fig.colorbar(im, ax=ax, shrink=0.85)
    cb.set_label(cbar_label)
    if scale_bar:
        add_scale_bar(ax, img.shape, pixel_size_m)
    return im


def phase_display(phase: np.ndarray) -> tuple[str, tuple[float, float]]:
    """Colour map and limits for a phase map: cyclic over (-pi, pi] when it wraps."""
    lo, hi = robust_limits(phase)
    if hi - lo > 0.75 * 2 * np.pi:
        return "twilight", (-np.pi, np.pi)
    return "viridis", (lo, hi)


def _image_size(shape: tuple[int, int], n_cols: int = 1, n_rows: int = 1) -> tuple[float, float]:
    h, w = shape
    aspect = h / w
    width = min(5.5 * n_cols, 16.0)
    height = min(max(width / n_cols * aspect * n_rows + 0.4 * n_rows, 2.5), 14.0)
    return width, height


# ----------------------------------------------------------------- figures


def save_object_figures(
    obj: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    prefix: str = "reconstruction",
    pixel_size_m: float | None = None,
    positions_px: np.ndarray | None = None,
) -> list[Path]:
    """Write ``{prefix}_amplitude.png`` and ``{prefix}_phase.png`` of a complex object.

    Parameters
    ----------
    obj
        Complex ``(H, W)`` object.
    out_dir
        Folder for the PNGs (created).
    prefix
        File-name prefix.
    pixel_size_m
        Object pixel size; the scale bar is then in nm/µm/mm, else in pixels.
    positions_px
        Optional ``(n, 2)`` probe centres ``[y, x]``: their bounding box is outlined.

    Returns
    -------
    list of Path
        The amplitude and phase figure paths.
    """
    o = require_complex_2d(obj, "obj")
    box = None
    if positions_px is not None:
        pos = np.asarray(positions_px, dtype=np.float64)
        if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
            raise DataError(f"'positions_px' must be an (n, 2) array of [y, x]; found {pos.shape}.")
        box = (pos.min(axis=0), pos.max(axis=0))
    out = Path(out_dir)
    amp, phase = np.abs(o), np.angle(o)
    cmap, lim = phase_display(phase)
    panels = (
        ("amplitude", amp, "amplitude", "gray", None),
        ("phase", phase, "phase (rad)", cmap, lim),
    )
    paths = []
    for name, img, label, cm, limits in panels:
        fig = new_figure(*_image_size(o.shape))
        ax = fig.add_subplot()
        show_image(fig, ax, img, title=f"{prefix}: {name}", cbar_label=label, cmap=cm,
                   limits=limits, pixel_size_m=pixel_size_m)
        if box is not None:
            _outline_box(ax, box)
        paths.append(save_figure(fig, out / f"{prefix}_{name}.png"))
    return paths


def _outline_box(ax: Any, box: tuple[np.ndarray, np.ndarray]) -> None:
    from matplotlib.patches import Rectangle

    (y0, x0), (y1, x1) = box
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="tab:red",
                           linestyle="--", linewidth=0.8, label="probe centres"))
    ax.legend(loc="upper right", fontsize=7, framealpha=0.6)


def plot_probe(probe: np.ndarray, path: str | os.PathLike, *,
               pixel_size_m: float | None = None) -> Path:
    """Amplitude (top) and phase (bottom) of each probe mode, with power fractions.

    ``probe`` is a complex ``(N, N)`` or ``(M, N, N)`` array. The phase is blanked
    where the amplitude is below 2 % of the mode's maximum.
    """
    p = np.asarray(probe)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3:
        raise DataError(f"'probe' must be (N, N) or (M, N, N); found shape {p.shape}.")
    for m in range(p.shape[0]):
        require_complex_2d(p[m], "probe")
    power = np.sum(np.abs(p) ** 2, axis=(1, 2))
    frac = power / max(float(power.sum()), 1e-300)
    n_modes = p.shape[0]
    fig = new_figure(3.3 * n_modes + 0.6, 6.2)
    axes = fig.subplots(2, n_modes, squeeze=False)
    for m in range(n_modes):
        amp = np.abs(p[m])
        phase = np.where(amp >= 0.02 * max(amp.max(), 1e-300), np.angle(p[m]), np.nan)
        show_image(fig, axes[0, m], amp, title=f"mode {m} amplitude ({100 * frac[m]:.1f} %)",
                   cbar_label="amplitude", cmap="magma", limits=(0.0, float(amp.max()) or 1.0),
                   pixel_size_m=pixel_size_m)
        show_image(fig, axes[1, m], phase, title=f"mode {m} phase", cbar_label="phase (rad)",
                   cmap="twilight", limits=(-np.pi, np.pi), pixel_size_m=pixel_size_m)
    return save_figure(fig, path)


def plot_positions(positions_px: np.ndarray, path: str | os.PathLike,
                   object_shape: tuple[int, int] | None = None) -> Path:
    """Scatter of the probe centres coloured by scan order (y down, equal axes).

    With ``object_shape`` the object's ``(H, W)`` frame is outlined.
    """
    from matplotlib.patches import Rectangle

    pos = np.asarray(positions_px, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise DataError(f"'positions_px' must be an (n, 2) array of [y, x]; found {pos.shape}.")
    if not np.all(np.isfinite(pos)):
        raise DataError("'positions_px' holds NaN/Inf values.")
    fig = new_figure(6.0, 5.2)
    ax = fig.add_subplot()
    sc = ax.scatter(pos[:, 1], pos[:, 0], c=np.arange(len(pos)), cmap="viridis", s=8)
    ax.plot(pos[:, 1], pos[:, 0], color="0.7", linewidth=0.3, zorder=0)
    cb = fig.colorbar(sc, ax=ax)
    cb.set_label("scan index")
    if object_shape is not None:
        h, w = (int(v) for v in object_shape)
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor="black",
                               linewidth=1.0, label=f"object {h} x {w}"))
        ax.legend(loc="upper right", fontsize=7)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(f"{len(pos)} scan positions", fontsize=9)
    return save_figure(fig, path)
