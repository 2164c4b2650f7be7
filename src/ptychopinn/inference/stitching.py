"""Stitching predicted patches into one object, memory-bounded.

Stitching is the adjoint of extraction divided by the (weighted) overlap:
``O = E^T(w p) / E^T(w)``, accumulated in place chunk by chunk, so a scan of
any size needs memory for one chunk plus the object.

The network sees only diffraction magnitudes, so each group's patches carry an
arbitrary global phase. Phase synchronisation removes it. With
``sync='global'`` every group's rotation comes at once from the leading
eigenvector of the groups' overlap matrix (`phase_sync`), computed in a first
pass over the groups and applied in a second. ``sync='waves'`` (this function's default, as it
needs no memory that grows with the scan; `InferenceConfig.phase_sync_method` defaults
to 'global' and `sync_method` falls back to 'waves' for scans too large for the overlap
matrix) does it greedily in one pass: groups arrive in an order that grows outwards from
one group (see `radial_order`); each small wave of groups is rotated by the phase
of its correlation with what is already stitched, then added. Optional polishing
passes re-align every group to the finished object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from ptychopinn.inference.phase_sync import SYNC_FACTOR, bin_windows, sync_fits, synchronise
from ptychopinn.physics.geometry import gather_windows, scatter_windows, window_taps

# A source yields (group_ids, patches (g, C, N, N) complex, positions (g, C, 2)).
PatchSource = Callable[[], Iterator[tuple[Tensor, Tensor, Tensor]]]

# the least weight of a patch pixel under the "probe" weighting, so that pixels lit
# only by a probe's tail keep a value
PROBE_WEIGHT_FLOOR = 0.02


def resolved_stitch_weight(choice: str, prior=None) -> str:  # noqa: ANN001 (a ScanPrior)
    """`InferenceConfig.stitch_weight` for a reconstruction whose physics prior is
    ``prior`` (a `models.scan_prior.ScanPrior`, or None): 'probe' and 'uniform' as given;
    'auto' is 'uniform' where the prior's passes are over-relaxed (step scale other than 1)
    and ran on the whole scan without the FRC filter's halves, else 'probe'."""
    if choice not in ("auto", "probe", "uniform"):
        raise ValueError(f"stitch_weight must be 'auto', 'probe' or 'uniform'; found {choice!r}")
    if choice != "auto":
        return choice
    whole = (prior is not None and prior.scope == "scan"
             and float(prior.step_scale) != 1.0 and not prior.frc_filter)
    return "uniform" if whole else "probe"


def probe_weight(illumination, flat_above: float = 0.01):
    """The "probe" stitching weight of a patch pixel from the probe intensity
    ``illumination`` (normalised to max 1; numpy array or tensor).

    ``min(illumination / flat_above, 1)``, floored at `PROBE_WEIGHT_FLOOR`: every
    pixel the probe lights with at least ``flat_above`` of its peak intensity
    counts the same, and dimmer pixels in proportion to their intensity.
    ``flat_above=1`` weighs every pixel by its intensity (the weighting before
    2026-11-28). A network's patch is about as good wherever the probe reaches,
    so a flatter weight averages more overlapping patches per object pixel and
    their errors: on N=64 simulated scans 0.01 raised the network's amplitude /
    phase SSIM by 0.02-0.09 / 0.02-0.05 with the default probe and by up to
    0.006 in phase with a real X-ray-laser probe (docs/benchmarks.md).
    """
    if not 0 < flat_above <= 1:
        raise ValueError(f"probe_weight: flat_above must be in (0, 1]; found {flat_above!r}.")
    return (illumination / flat_above).clip(PROBE_WEIGHT_FLOOR, 1.0)


def sync_method(phase_sync: bool, method: str, n_windows: int, n: int) -> str:
    """The phase synchronisation `stitch_groups` is to run for ``n_windows`` windows of
    ``n x n`` (groups x patterns per group): ``'off'``, ``method``, or ``'waves'`` where
    ``'global'``'s overlap matrix would exceed `phase_sync.SYNC_ENTRIES_LIMIT` (about
    11,000 patterns of 64 x 64 with gridsize 2)."""
    if method not in ("global", "waves"):
        raise ValueError(f"phase_sync_method must be 'global' or 'waves'; found {method!r}")
    if not phase_sync:
        return "off"
    if method == "global" and not sync_fits(n_windows, n):
        return "waves"
    return method


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
    sync: str = "waves",
    sync_factor: int = SYNC_FACTOR,
    polish_passes: int | None = None,
    wave: int = 4,
    eps: float = 1e-3,
    device: torch.device | str = "cpu",
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
    sync
        How: ``'global'`` (all groups at once from their overlap matrix binned by
        ``sync_factor``, `phase_sync.synchronise`; the source is read once more),
        ``'waves'`` (greedy, in waves of ``wave`` groups in the source's order) or
        ``'off'`` (as ``phase_sync=False``; `sync_method`'s answers pass as they are).
    polish_passes
        Extra passes re-aligning each group to the finished object (None: 1 with
        ``'waves'``, 0 with ``'global'``, whose rotations are already their limit).
    wave
        Groups aligned together in the sequential pass of ``'waves'``.
    device
        Where the canvases live and the arithmetic runs (patches are moved
        there); the results are on this device.
    """
    if sync not in ("global", "waves", "off"):
        raise ValueError(f"stitch_groups: sync must be 'global', 'waves' or 'off'; found "
                         f"{sync!r}")
    if sync == "off":
        phase_sync, sync = False, "waves"
    if polish_passes is None:
        polish_passes = 1 if sync == "waves" else 0
    if polish_passes < 0 or wave < 1:
        raise ValueError(f"stitch_groups: polish_passes must be >= 0 and wave >= 1; found "
                         f"{polish_passes} and {wave}")
    greedy = phase_sync and sync == "waves"
    dev = torch.device(device)
    weight = weight.float().to(dev)
    h, w = shape
    # one real canvas with three channels (numerator re, im; weight): a wave reads
    # and writes all three through one set of bilinear taps
    acc = torch.zeros(h * w, 3, device=dev)
    rotation = torch.ones(n_groups, dtype=torch.complex64, device=dev)
    wc = weight.to(torch.complex64)
    floor = eps * float(weight.max().clamp_min(1e-12))
    if phase_sync and sync == "global":
        rotation = _global_rotations(source, n_groups, shape, weight, sync_factor).to(dev)
    for gid, patches, pos in source():
        patches = patches.to(dev, torch.complex64)
        gid = gid.to(dev)
        g, c, n, _ = patches.shape
        pos = pos.to(dev, torch.float64)
        step = wave if greedy else g
        chunk_taps = window_taps(pos.reshape(1, -1, 2), n, (h, w), torch.float32)
        for s in range(0, g, step):
            p = patches[s : s + step]
            k = p.shape[0]
            taps = chunk_taps.members(s * c, (s + k) * c)
            if phase_sync and not greedy:
                p = p * rotation[gid[s : s + step]].view(-1, 1, 1, 1)
            elif greedy:
                seen = gather_windows(acc, taps).view(k, c, n, n, 3)
                ref_den = seen[..., 2]
                ref_num = torch.complex(seen[..., 0], seen[..., 1])
                ref = torch.where(ref_den > floor, ref_num / ref_den.clamp_min(floor), 0)
                rot = _unit((ref * p.conj() * wc).sum(dim=(1, 2, 3)))
                p = p * rot.view(-1, 1, 1, 1)
                rotation[gid[s : s + step]] = rot
            vals = torch.cat(
                [torch.view_as_real(p * wc), weight.expand(k, c, n, n).unsqueeze(-1)], dim=-1
            )
            scatter_windows(acc, taps, vals.reshape(1, k * c, n, n, 3))
    num = torch.view_as_complex(acc[:, :2].contiguous()).view(h, w)
    den = acc[:, 2].contiguous().view(h, w)
    obj = _normalise(num, den, floor)
    for _ in range(polish_passes if phase_sync else 0):
        num_r = torch.zeros(h * w, 2, device=dev)
        obj_r = torch.view_as_real(obj).reshape(h * w, 2)
        for gid, patches, pos in source():
            patches = patches.to(dev, torch.complex64)
            g, c, n, _ = patches.shape
            taps = window_taps(pos.to(dev, torch.float64).reshape(1, -1, 2), n, (h, w),
                               torch.float32)
            ref = torch.view_as_complex(gather_windows(obj_r, taps).contiguous()).view(g, c, n, n)
            rot = _unit((ref * patches.conj() * wc).sum(dim=(1, 2, 3)))
            rotation[gid.to(dev)] = rot
            turned = torch.view_as_real(patches * rot.view(-1, 1, 1, 1) * wc)
            scatter_windows(num_r, taps, turned.reshape(1, g * c, n, n, 2))
        obj = _normalise(torch.view_as_complex(num_r).view(h, w), den, floor)
    return obj, den, rotation


def _global_rotations(source: PatchSource, n_groups: int, shape: tuple[int, int],
                      weight: Tensor, factor: int) -> Tensor:
    """Every group's rotation from one pass over ``source`` (`phase_sync.synchronise` of
    the weighted patches binned by ``factor``)."""
    binned = positions = None
    wc = weight.to(torch.complex64)
    for gid, patches, pos in source():
        b = bin_windows(patches.to(weight.device, torch.complex64) * wc, factor).cpu()
        if binned is None:
            binned = torch.zeros(n_groups, *b.shape[1:], dtype=torch.complex64)
            positions = torch.zeros(n_groups, b.shape[1], 2, dtype=torch.float64)
        binned[gid.cpu()] = b
        positions[gid.cpu()] = pos.cpu().to(torch.float64)
    if binned is None:
        return torch.ones(n_groups, dtype=torch.complex64)
    n = weight.shape[-1]
    return synchronise(binned, positions, bin_windows(weight.cpu(), factor), n, shape, factor)
