"""Stitching with phase synchronisation: true patches with random per-group
global phases (what a network trained on magnitudes may produce) must stitch
back into the true object."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.grouping import group_neighbors
from ptychopinn.inference.stitching import radial_order, stitch_groups
from ptychopinn.metrics import evaluate
from ptychopinn.physics.geometry import accumulate_patches, extract_patches, place_patches


def _source(true, idx, pos, rot, chunk=50):
    def source():
        for s in range(0, len(idx), chunk):
            sl = slice(s, min(s + chunk, len(idx)))
            yield torch.arange(sl.start, sl.stop), true[idx[sl]] * rot[sl].view(-1, 1, 1, 1), pos[
                idx[sl]
            ]

    return source


@pytest.mark.parametrize("gridsize", [1, 2])
def test_phase_sync_recovers_object(small_scan, gridsize):
    scan = small_scan
    n = scan.patch_size
    g = group_neighbors(scan.positions_px, gridsize, neighbor_count=6, seed=0)
    idx = torch.from_numpy(g.indices[radial_order(g.centers_px)])
    pos = torch.from_numpy(scan.positions_px)
    true = extract_patches(torch.from_numpy(scan.object), pos, n)
    rng = np.random.default_rng(1)
    rot = torch.from_numpy(np.exp(1j * rng.uniform(-np.pi, np.pi, len(idx))).astype(np.complex64))
    weight = torch.ones(n, n)
    src = _source(true, idx, pos, rot)
    obj, _, _ = stitch_groups(src, len(idx), scan.object.shape, weight, phase_sync=True)
    m = evaluate(obj.numpy(), scan.object, positions_px=scan.positions_px, patch_size=n)
    # bilinear extraction + placement at sub-pixel positions blurs slightly: not exactly 1
    assert m["amp_ssim"] > 0.9 and m["phase_ssim"] > 0.9, m
    bad, _, _ = stitch_groups(src, len(idx), scan.object.shape, weight, phase_sync=False)
    mb = evaluate(bad.numpy(), scan.object, positions_px=scan.positions_px, patch_size=n)
    assert mb["phase_ssim"] < 0.5  # without synchronisation the phases cancel


def test_accumulate_matches_place():
    gen = torch.Generator().manual_seed(0)
    canvas = torch.zeros(30, 27, dtype=torch.complex128)
    p = torch.randn(5, 8, 8, dtype=torch.complex128, generator=gen)
    pos = torch.rand(5, 2, dtype=torch.float64, generator=gen) * 12 + 7
    accumulate_patches(canvas, p, pos)
    accumulate_patches(canvas, p, pos)
    assert torch.allclose(canvas, 2 * place_patches(p, pos, (30, 27)))
