"""Stitching predicted patches into one object, memory-bounded.

Stitching is the adjoint of extraction divided by the (weighted) overlap:
``O = E^T(w p) / E^T(w)``, accumulated in place chunk by chunk, so a scan of
any size needs memory for one chunk plus the object.

The network sees only diffraction magnitudes, so each group's patches carry an
arbitrary global phase. Phase synchronisation removes it while stitching:
groups arrive in an order that grows outwards from one group (see
`radial_order`); each small wave of groups is rotated by the phase of its
correlation with what is already stitched, then added. Optional polishing
passes re-align every group to the finished object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from ptychopinn.physics.geometry import accumulate_patches, extract_patches

# A source yields (group_ids, patches (g, C, N, N) complex, positions (g, C, 2)).
PatchSource = Callable[[], Iterator[tuple[Tensor, Tensor, Tensor]]]


def radial_order(centers_px: np.ndarray) -> np.ndarray:
    """Group order growing outwards from the group nearest the scan's centre."""
    c = np.median(centers_px, axis=0)
    return np.argsort(np.linalg.norm(centers_px - c, axis=1), kind="stable")


def _unit(z: Tensor) -> Tensor:
    mag = z.abs()
    return torch.where(mag > 0, z / mag.clamp_min(1e-30), torch.ones_like(z))


def _normalise(num: Tensor, den: Tensor, eps: float) -> Tensor:
    obj = num / den.clamp_min(eps)
    return torch.where(den > eps, obj, torch.zeros_like(obj))


def stitch_groups(
    source: PatchSource,
    n_groups: int,
    shape: tuple[int, int],
    weight: Tensor,
    *,
    phase_sync: bool = True,
    polish_passes: int = 1,
    wave: int = 4,
    eps: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor]:
    """Stitch all groups; returns ``(object, weight_map, group_rotation)``.

    Parameters
    ----------
    source
        Callable returning a fresh iterator over chunks (called once, plus
        once per polishing pass).
    n_groups
        Total number of groups the source yields (ids ``0..n_groups-1``).
    shape
        ``(H, W)`` of the object canvas.
    weight
        ``(N, N)`` per-pixel weight of every patch (probe intensity or ones).
    phase_sync
        Synchronise the global phase of the groups (see module docstring).
    polish_passes
        Extra passes re-aligning each group to the finished object.
    wave
        Groups aligned together in the sequential pass.
    """
    weight = weight.float().cpu()
    h, w = shape
    num = torch.zeros(h, w, dtype=torch.complex64)
    den = torch.zeros(h, w, dtype=torch.float32)
    rotation = torch.ones(n_groups, dtype=torch.complex64)
    wc = weight.to(torch.complex64)
    floor = eps * float(weight.max().clamp_min(1e-12))
    for gid, patches, pos in source():
        patches = patches.cpu().to(torch.complex64)
        g, c, n, _ = patches.shape
        pos = pos.cpu().to(torch.float64)
        step = wave if phase_sync else g
        for s in range(0, g, step):
            p = patches[s : s + step]
            q = pos[s : s + step].reshape(-1, 2)
            k = p.shape[0]
            if phase_sync:
                ref_num = extract_patches(num, q, n).view(k, c, n, n)
                ref_den = extract_patches(den, q, n).view(k, c, n, n)
                ref = torch.where(ref_den > floor, ref_num / ref_den.clamp_min(floor), 0)
                rot = _unit((ref * p.conj() * wc).sum(dim=(1, 2, 3)))
                p = p * rot.view(-1, 1, 1, 1)
                rotation[gid[s : s + step]] = rot
            accumulate_patches(num, (p * wc).reshape(-1, n, n), q)
            accumulate_patches(den, weight.expand(k * c, n, n).contiguous(), q)
    obj = _normalise(num, den, floor)
    for _ in range(polish_passes if phase_sync else 0):
        num.zero_()
        for gid, patches, pos in source():
            patches = patches.cpu().to(torch.complex64)
            g, c, n, _ = patches.shape
            q = pos.cpu().to(torch.float64).reshape(-1, 2)
            ref = extract_patches(obj, q, n).view(g, c, n, n)
            rot = _unit((ref * patches.conj() * wc).sum(dim=(1, 2, 3)))
            rotation[gid] = rot
            accumulate_patches(num, (patches * rot.view(-1, 1, 1, 1) * wc).reshape(-1, n, n), q)
        obj = _normalise(num, den, floor)
    return obj, den, rotation
