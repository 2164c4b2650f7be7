"""Heavy-ball momentum of the scan prior's passes on the complex object
(``object_momentum`` / ``model.prior_object_momentum``), part of the featureless recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn.config import ModelConfig
from ptychopinn.physics.prior_scan import scan_error_reduction
from ptychopinn.physics.prior_update import push_on
from test_prior_scan import _amp_error  # rms amplitude error over the well-lit pixels
from test_prior_settle import _inputs, _scan


def test_push_on_is_heavy_ball_momentum_chunk_by_chunk() -> None:
    g = torch.Generator().manual_seed(3)
    before = torch.randn(10, dtype=torch.complex64, generator=g)
    after = torch.randn(10, dtype=torch.complex64, generator=g)
    velocity = torch.randn(10, dtype=torch.complex64, generator=g)
    want_v = 0.7 * velocity + (after - before)
    want = after + 0.7 * want_v
    for chunk in (3, 1 << 20):  # chunks that do and do not divide the canvas
        flat, v = after.clone(), velocity.clone()
        push_on(flat, before, v, 0.7, chunk=chunk)
        torch.testing.assert_close(v, want_v)
        torch.testing.assert_close(flat, want)


def test_momentum_off_changes_nothing_and_never_pushes_the_last_pass() -> None:
    scan = _scan(49)
    amps, probe = _inputs(scan)
    pos = scan.positions_px
    kw = dict(batch_size=16, amplitude_step=0.5, com_correction=True, step_scale=2.0)
    plain = scan_error_reduction(amps, pos, probe, 3, settle_passes=1, **kw)
    assert torch.equal(scan_error_reduction(amps, pos, probe, 3, settle_passes=1,
                                            object_momentum=0.0, **kw).canvas, plain.canvas)
    # one pass has no pass after it to push on: the same as without momentum
    assert torch.equal(scan_error_reduction(amps, pos, probe, 1, object_momentum=0.8, **kw).canvas,
                       scan_error_reduction(amps, pos, probe, 1, **kw).canvas)
    # two passes: the first pass's change is carried on once, before the second
    pushed = scan_error_reduction(amps, pos, probe, 2, object_momentum=0.8, **kw)
    assert not torch.allclose(pushed.canvas, scan_error_reduction(amps, pos, probe, 2, **kw).canvas,
                              atol=1e-4)
    # the settling passes run without it: n passes with it, then k plain ones continuing
    head = scan_error_reduction(amps, pos, probe, 3, object_momentum=0.8, **kw)
    frame = (head.origin_px, tuple(head.canvas.shape))
    tail = scan_error_reduction(amps, pos, probe, 2, frame=frame, start=head.canvas,
                                illumination=head.illumination, first_pass=3,
                                **{**kw, "step_scale": 1.0})
    settled = scan_error_reduction(amps, pos, probe, 3, settle_passes=2, object_momentum=0.8, **kw)
    assert torch.equal(settled.canvas, tail.canvas)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="object_momentum must be in"):
            scan_error_reduction(amps, pos, probe, 2, object_momentum=bad, **kw)


def test_momentum_converges_a_gaussian_beam_scan_further_in_the_same_passes() -> None:
    """Under a Gaussian beam (slow passes) the momentum lowers the amplitude error after
    the same passes, over-relaxed or plain."""
    scan = _scan(100, seed=1)
    amps, probe = _inputs(scan)
    pos = scan.positions_px
    kw = dict(batch_size=16, amplitude_step=0.5, com_correction=True)
    for scale in (1.0, 2.0):
        without = _amp_error(scan_error_reduction(amps, pos, probe, 8, step_scale=scale, **kw),
                             scan)
        with_it = _amp_error(scan_error_reduction(amps, pos, probe, 8, step_scale=scale,
                                                  object_momentum=0.8, **kw), scan)
        assert with_it < 0.9 * without, (scale, with_it, without)


def test_object_momentum_config_bundle_and_prior() -> None:
    from ptychopinn.bundle.format import manifest_config
    from ptychopinn.config import TrainingConfig
    from ptychopinn.models.scan_prior import ScanPrior

    assert ModelConfig().prior_object_momentum == 0.0
    assert ModelConfig(prior_recipe="featureless").prior_object_momentum == 0.8
    assert ModelConfig(prior_recipe="featureless",
                       prior_object_momentum=0.0).prior_object_momentum == 0.0
    for bad in (1.0, -0.5):
        with pytest.raises(ValueError, match="prior_object_momentum"):
            ModelConfig(prior_object_momentum=bad)
    with pytest.raises(ValueError, match="prior_object_momentum above 0 needs prior_scope 'scan'"):
        ModelConfig(prior_scope="neighbourhood", prior_object_momentum=0.5)
    # bundles written before the option ran without it, whatever their recipe (a
    # 'featureless' one would otherwise take today's 0.8)
    for recipe in ("plain", "featureless"):
        raw = TrainingConfig(model=ModelConfig(prior_recipe=recipe)).model_dump(mode="json")
        del raw["model"]["prior_object_momentum"]
        m = manifest_config({"config": raw}, "old.bundle").model
        assert m.prior_object_momentum == 0.0 and m.prior_recipe == recipe
    # the prior takes it from the model's config, with or without the FRC filter
    scan = _scan(25)
    amps, probe = _inputs(scan)
    kw = dict(prior_amplitude_scale=1.0, train_input_scale=0.0)
    for frc in (False, True):
        cfg = ModelConfig(prior_recipe="featureless", prior_iterations=3, prior_frc_filter=frc)
        pushed = ScanPrior.for_config(cfg, amps, scan.positions_px, probe, **kw)
        still = ScanPrior.for_config(cfg.model_copy(update={"prior_object_momentum": 0.0}),
                                     amps, scan.positions_px, probe, **kw)
        assert pushed.object_momentum == 0.8 and still.object_momentum == 0.0
        assert not np.allclose(pushed.estimate.canvas.numpy(), still.estimate.canvas.numpy(),
                               atol=1e-4)
    with pytest.raises(ValueError, match="object momentum must be in"):
        ScanPrior(amps, scan.positions_px, probe, 1.0, 2, 1, scope="scan", object_momentum=1.0)
    with pytest.raises(ValueError, match="needs scope 'scan'"):
        ScanPrior(amps, scan.positions_px, probe, 1.0, 2, 1, object_momentum=0.5)
