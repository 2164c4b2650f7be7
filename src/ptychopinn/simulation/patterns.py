"""Scan patterns: raster grid, Fermat spiral, uniform random; with jitter.

Positions are ``(n, 2)`` float64 ``[y, x]`` in pixels around the origin (the
simulation later shifts them into the object frame). Every pattern has about
one position per ``step_px**2`` of area, so ``step_px`` is the typical
neighbour distance for all of them.
"""

from __future__ import annotations

import math

import numpy as np

from ptychopinn.errors import ConfigError

GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))


def raster(n: int, step_px: float) -> np.ndarray:
    """Row-major grid of ``n`` positions, ``ceil(sqrt(n))`` per row."""
    cols = int(np.ceil(np.sqrt(n)))
    k = np.arange(n)
    return np.stack([(k // cols) * step_px, (k % cols) * step_px], axis=1).astype(np.float64)


def fermat(n: int, step_px: float) -> np.ndarray:
    """Fermat spiral ``r = c sqrt(k)``, golden-angle turns; ``c = step / sqrt(pi)``
    gives one position per ``step**2`` of area."""
    k = np.arange(n, dtype=np.float64)
    r = step_px / np.sqrt(np.pi) * np.sqrt(k)
    t = k * GOLDEN_ANGLE
    return np.stack([r * np.sin(t), r * np.cos(t)], axis=1)


def uniform_random(n: int, step_px: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` positions uniform in a square of side ``step * sqrt(n)``."""
    side = step_px * np.sqrt(n)
    return rng.uniform(0.0, side, size=(n, 2))


def pattern_extent(kind: str, n: int, step_px: float) -> tuple[float, float]:
    """Rows x columns spanned by the pattern's ``n`` positions before jitter (an upper
    bound for 'fermat' and 'random'), computed without making them."""
    if kind == "raster":
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        return (rows - 1) * step_px, (cols - 1) * step_px
    if kind == "fermat":
        side = 2 * step_px / math.sqrt(math.pi) * math.sqrt(max(n - 1, 0))
    else:
        side = step_px * math.sqrt(n)
    return side, side


def make_positions(
    kind: str, n: int, step_px: float, jitter_px: float, rng: np.random.Generator
) -> np.ndarray:
    """Positions of the given pattern plus Gaussian jitter of std ``jitter_px``."""
    if kind == "raster":
        pos = raster(n, step_px)
    elif kind == "fermat":
        pos = fermat(n, step_px)
    elif kind == "random":
        pos = uniform_random(n, step_px, rng)
    else:
        raise ConfigError(f"pattern: expected 'raster', 'fermat' or 'random'; found {kind!r}.")
    if jitter_px > 0:
        pos = pos + rng.normal(0.0, jitter_px, size=pos.shape)
    return pos
