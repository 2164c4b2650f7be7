"""Stitching with phase synchronisation: true patches with random per-group
global phases (what a network trained on magnitudes may produce) must stitch
back into the true object."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.grouping import group_neighbors
from ptychopinn.inference.stitching import (
    PROBE_WEIGHT_FLOOR,
    probe_weight,
    radial_order,
    stitch_groups,
)
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


@pytest.mark.parametrize("sync", ["global", "waves"])
@pytest.mark.parametrize("gridsize", [1, 2])
def test_phase_sync_recovers_object(small_scan, gridsize, sync):
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
    obj, _, _ = stitch_groups(src, len(idx), scan.object.shape, weight, phase_sync=True,
                              sync=sync)
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


def test_probe_weight_is_flat_above_the_threshold_and_floored():
    ill = torch.tensor([1.0, 0.5, 0.02, 0.005, 1e-4, 0.0])
    w = probe_weight(ill, 0.01)
    torch.testing.assert_close(w, torch.tensor([1.0, 1.0, 1.0, 0.5, PROBE_WEIGHT_FLOOR,
                                                PROBE_WEIGHT_FLOOR]))
    # flat_above = 1: the intensity itself (floored), the weighting before 2026-11-28
    torch.testing.assert_close(probe_weight(ill, 1.0), ill.clamp_min(PROBE_WEIGHT_FLOOR))
    np.testing.assert_allclose(probe_weight(ill.numpy(), 0.01), w.numpy())  # numpy too
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="flat_above"):
            probe_weight(ill, bad)


def test_flat_probe_weight_averages_patch_errors_better(small_scan):
    """Patches with independent errors (what a network's patches carry): weighing every
    lit pixel the same averages more overlapping patches per object pixel, so the
    stitched object is closer to the truth than with intensity weights."""
    scan = small_scan
    n = scan.patch_size
    g = group_neighbors(scan.positions_px, 1, neighbor_count=6, seed=0)
    idx = torch.from_numpy(g.indices[radial_order(g.centers_px)])
    pos = torch.from_numpy(scan.positions_px)
    true = extract_patches(torch.from_numpy(scan.object), pos, n)
    gen = torch.Generator().manual_seed(3)
    noisy = true + 0.3 * torch.randn(true.shape, dtype=true.dtype, generator=gen)
    p = torch.from_numpy(scan.probe if scan.probe.ndim == 2 else scan.probe[0])
    ill = p.abs().square()
    ill = ill / ill.max()
    rot = torch.ones(len(idx), dtype=torch.complex64)
    amp_ssim = {}
    for flat in (1.0, 0.01):
        obj, _, _ = stitch_groups(_source(noisy, idx, pos, rot), len(idx), scan.object.shape,
                                  probe_weight(ill, flat), phase_sync=False)
        m = evaluate(obj.numpy(), scan.object, positions_px=scan.positions_px, patch_size=n)
        amp_ssim[flat] = m["amp_ssim"]
    assert amp_ssim[0.01] > amp_ssim[1.0] + 0.02, amp_ssim


@pytest.mark.parametrize("subpixel", ["bilinear", "probe_shift"])
def test_uniform_stitch_weight_is_the_coverage_of_the_patches(tmp_path, small_scan, subpixel):
    """``InferenceConfig.stitch_weight='uniform'``: every patch pixel weighs 1, so the
    weight map is the adjoint of extraction applied to ones (how many patches cover
    each pixel; with 'probe_shift' the patches are the whole-pixel windows nearest the
    positions); 'probe' weighs by the illumination instead."""
    from ptychopinn import api
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.config import InferenceConfig, TrainingConfig
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    cfg = TrainingConfig(model={"N": 32, "gridsize": 1, "n_filters_scale": 0.25,
                                "subpixel": subpixel})
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), cfg.model.probe_scale)
    torch.manual_seed(0)
    save_pinn(tmp_path, PtychoPINN(cfg.model, probe).eval(), cfg)
    recs = {w: api.reconstruct(tmp_path, small_scan,
                               InferenceConfig(stitch_weight=w, figures=False))
            for w in ("uniform", "probe")}
    uni = recs["uniform"]
    ones = torch.ones(small_scan.n_patterns, 32, 32, dtype=torch.float64)
    at = torch.from_numpy(uni.positions_px)
    if subpixel == "probe_shift":
        from ptychopinn.physics.geometry import whole_pixel_windows

        at, _ = whole_pixel_windows(at, 32)
        assert not torch.equal(at, torch.from_numpy(uni.positions_px))
    coverage = place_patches(ones, at, uni.weight.shape)
    np.testing.assert_allclose(uni.weight, coverage.numpy(), rtol=1e-5, atol=1e-5)
    assert uni.weight.max() > 4  # overlapping patches
    assert not np.allclose(recs["probe"].weight, uni.weight)


def test_auto_stitch_weight_is_uniform_only_for_an_over_relaxed_whole_scan_prior() -> None:
    """'auto' (the default) follows the physics prior: 'uniform' where its passes are
    over-relaxed and ran without the FRC filter's halves, 'probe' otherwise (no prior, a
    plain prior, the halves ran, a neighbourhood prior); explicit choices are kept."""
    from types import SimpleNamespace

    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.stitching import resolved_stitch_weight

    assert InferenceConfig().stitch_weight == "auto"

    def prior(step_scale=2.0, frc_filter=False, scope="scan"):
        return SimpleNamespace(step_scale=step_scale, frc_filter=frc_filter, scope=scope)

    assert resolved_stitch_weight("auto", prior()) == "uniform"
    for other in (None, prior(step_scale=1.0), prior(frc_filter=True),
                  prior(scope="neighbourhood")):
        assert resolved_stitch_weight("auto", other) == "probe", other
    assert resolved_stitch_weight("probe", prior()) == "probe"
    assert resolved_stitch_weight("uniform", None) == "uniform"
    with pytest.raises(ValueError, match="stitch_weight"):
        resolved_stitch_weight("flat", None)
    with pytest.raises(ValueError, match="stitch_weight"):
        InferenceConfig(stitch_weight="flat")
