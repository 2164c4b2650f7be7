"""How many times over a scan lights its object (the overlap of its patterns).

Each PIE pass of the scan prior (`physics.prior_scan`) moves a pixel by the updates of
the patterns that light it: where the patterns overlap less, every pass moves the
estimate less and more passes are needed for the same convergence. `scan_coverage`
measures the overlap as the probe intensity the whole scan sums on the pixels it
lights, in units of the probe's peak intensity: about 4.8 for the simulator's default
(a disk of 0.4 N, steps of N / 8, linear overlap ~69 %), 2.3 at steps of 12 px (~57 %)
and 1.3 at 16 px (~42 %) for N = 64, 3.4 for the real X-ray-laser probe's Fermat scan.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import oaconvolve
from torch import Tensor

COVERAGE_LIT_FRACTION = 0.1
"""`scan_coverage` averages over the pixels lit with at least this fraction of the
scan's largest summed intensity."""


def scan_coverage(positions_px: Tensor | np.ndarray, probe: Tensor) -> float:
    """The mean, over the pixels the scan lights (`COVERAGE_LIT_FRACTION`), of the probe
    intensity summed over every pattern's window, in units of the probe's peak intensity
    (modes summed): how many probe footprints cover a lit pixel. ``positions_px`` ``(n, 2)``
    probe centres ``[y, x]``; ``probe`` ``(N, N)`` or ``(M, N, N)``. Whole-pixel windows
    (the nearest to each position): the sub-pixel remainder does not change the overlap."""
    p = torch.as_tensor(probe).detach().cpu()
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"scan_coverage: probe must be (N, N) or (M, N, N); found "
                         f"{tuple(p.shape)}")
    pos = np.asarray(torch.as_tensor(positions_px).cpu().numpy(), dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or len(pos) == 0 or not np.all(np.isfinite(pos)):
        raise ValueError(f"scan_coverage: positions must be (n, 2), n >= 1, finite; found "
                         f"{pos.shape}")
    n = int(p.shape[-1])
    inten = (p.real.square() + p.imag.square()) if p.is_complex() else p.square()
    inten = inten.sum(0).to(torch.float64).numpy()
    peak = float(inten.max())
    if not peak > 0:
        raise ValueError("scan_coverage: the probe has no intensity")
    # the summed intensity is the windows' top-left pixels (counted) convolved with the
    # probe intensity: one overlap-add convolution, whatever the number of patterns
    # (10^5 windows of 64 x 64 one at a time took seconds)
    corner = np.round(pos - n / 2.0).astype(np.int64)
    corner -= corner.min(axis=0)
    hits = np.zeros(tuple(corner.max(axis=0) + 1), dtype=np.float32)
    np.add.at(hits, (corner[:, 0], corner[:, 1]), 1.0)
    canvas = oaconvolve(hits, (inten / peak).astype(np.float32), mode="full")
    lit = canvas >= COVERAGE_LIT_FRACTION * float(canvas.max())
    return float(canvas[lit].mean(dtype=np.float64))
