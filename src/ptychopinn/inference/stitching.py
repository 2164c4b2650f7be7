"""Stitching predicted patches into one object, memory-bounded.

Stitching is the adjoint of extraction divided by the (weighted) overlap:
``O = E^T(w p) / E^T(w)``, accumulated chunk by chunk so a scan of any size
needs memory for one chunk plus the object.

The network sees only diffraction magnitudes, so each group's patches carry an
arbitrary global phase. `stitch_groups` optionally removes it by phase
synchronisation: each group is rotated by the phase of its correlation with the
current stitched object, and the object is stitched again (a few passes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ptychopinn.physics.geometry import extract_patches, place_patches

# A source yields (group_ids, patches (g, C, N, N) complex, positions (g, C, 2)).
PatchSource = Callable[[], Iterator[tuple[Tensor, Tensor, Tensor]]]


def _accumulate(
    source: PatchSource,
    shape: tuple[int, int],
    weight: Tensor,
    rotation: Tensor | None,
) -> tuple[Tensor, Tensor]:
    num = torch.zeros(shape, dtype=torch.complex64)
    den = torch.zeros(shape, dtype=torch.float32)
    for gid, patches, pos in source():
        if rotation is not None:
            patches = patches * rotation[gid].view(-1, 1, 1, 1)
        g, c, n, _ = patches.shape
        w = weight.expand(g * c, n, n)
        flat_p = (patches.reshape(g * c, n, n) * w).to(torch.complex64)
        flat_pos = pos.reshape(g * c, 2).to(torch.float64)
        num += place_patches(flat_p.cpu(), flat_pos.cpu(), shape)
        den += place_patches(w.float().cpu(), flat_pos.cpu(), shape)
    return num, den


def _normalise(num: Tensor, den: Tensor, eps: float) -> Tensor:
    obj = num / den.clamp_min(eps)
    return torch.where(den > eps, obj, torch.zeros_like(obj))


def stitch_groups(
    source: PatchSource,
    n_groups: int,
    shape: tuple[int, int],
    weight: Tensor,
    *,
    phase_sync_passes: int = 2,
    eps: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor]:
    """Stitch all groups; returns ``(object, weight_map, group_rotation)``.

    Parameters
    ----------
    source
        Callable returning a fresh iterator over chunks (called once per pass).
    n_groups
        Total number of groups the source yields.
    shape
        ``(H, W)`` of the object canvas.
    weight
        ``(N, N)`` per-pixel weight of every patch (probe intensity or ones).
    phase_sync_passes
        Passes of global-phase synchronisation (0 disables it).
    """
    weight = weight.float().cpu()
    rotation = torch.ones(n_groups, dtype=torch.complex64)
    num, den = _accumulate(source, shape, weight, None)
    obj = _normalise(num, den, eps * float(den.max().clamp_min(1e-12)))
    for _ in range(phase_sync_passes):
        corr = torch.zeros(n_groups, dtype=torch.complex64)
        for gid, patches, pos in source():
            g, c, n, _ = patches.shape
            ref = extract_patches(obj, pos.reshape(g * c, 2).to(torch.float64), n).view(g, c, n, n)
            corr[gid] = (ref * patches.conj().cpu() * weight).sum(dim=(1, 2, 3)).to(torch.complex64)
        mag = corr.abs()
        rotation = torch.where(mag > 0, corr / mag.clamp_min(1e-30), torch.ones_like(corr))
        num, den = _accumulate(source, shape, weight, rotation)
        obj = _normalise(num, den, eps * float(den.max().clamp_min(1e-12)))
    return obj, den, rotation
