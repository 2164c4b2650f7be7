"""Independent prior estimates at once (`physics.at_once`) and the whole scan's estimate
averaged over mini-batch orders (`physics.prior_orders`, `ScanPrior`'s ``orders``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from ptychopinn.config import InferenceConfig, ModelConfig
from ptychopinn.models.scan_prior import OVERRELAXED_ORDERS, ScanPrior, default_orders
from ptychopinn.physics.at_once import at_once
from ptychopinn.physics.prior_frc import half_split
from ptychopinn.physics.prior_orders import MAX_ORDERS, order_averaged_estimate
from ptychopinn.physics.prior_scan import ScanEstimate, canvas_frame, scan_error_reduction
from ptychopinn.simulation import SimulationConfig, simulate_scan
from test_prior_scan import _amp_error  # rms amplitude error over the well-lit pixels

# the featureless recipe's passes (over-relaxed, object momentum, settling), small
RECIPE = dict(batch_size=8, amplitude_step=0.5, com_correction=True, step_scale=2.0,
              object_momentum=0.8, settle_passes=2)


@pytest.fixture(scope="module")
def gaussian_scan():
    """A small low-dose scan under a Gaussian beam that overlaps little (covered 1.42 times,
    below the featureless recipe's ``prior_frc_min_coverage``): the noise the orders
    average."""
    return simulate_scan(SimulationConfig(N=32, n_positions=64, step_px=6, seed=5,
                                          probe_kind="gaussian", photons_per_pattern=1e5))


WHOLE_SCAN_RECIPE = ModelConfig(N=32, prior_recipe="featureless", prior_frc_filter=False,
                                prior_iterations=2, prior_settle_passes=0)
"""A small featureless-recipe model config whose prior runs on the whole scan."""


def _built(scan, model_cfg: ModelConfig, **kw) -> ScanPrior:  # noqa: ANN001, ANN003
    """`ScanPrior.for_config` of ``model_cfg`` on ``scan`` (its probe, unit scales)."""
    return ScanPrior.for_config(model_cfg, torch.from_numpy(scan.diffraction).float(),
                                scan.positions_px, torch.from_numpy(scan.probe),
                                prior_amplitude_scale=1.0, train_input_scale=0.0, **kw)


def _with_threads(n: int, fn):  # noqa: ANN001, ANN202
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(n)
        return fn()
    finally:
        torch.set_num_threads(before)


def test_at_once_runs_tasks_in_worker_threads_in_the_callers_modes() -> None:
    """On the CPU with 2+ intra-op threads the tasks run in ``min(tasks, threads)`` worker
    threads with that many times fewer intra-op threads each, in the caller's inference
    mode, the caller's thread count unchanged; with one thread they run in turn in the
    caller's thread; tasks of unequal argument lists are refused."""
    seen = []
    meet = [None]  # a barrier the tasks must reach together: they ran at once, or it times out

    def fn(x: int, t: torch.Tensor) -> int:
        t.add_(1)  # in place on an inference tensor: only allowed in inference mode
        seen.append((threading.get_ident(), torch.get_num_threads(),
                     torch.is_inference_mode_enabled()))
        if meet[0] is not None and x < 2:  # the first two tasks meet; a third does not wait
            meet[0].wait()
        return x + int(t)

    cpu = torch.device("cpu")

    def run(tasks: int, threads: int, barrier: int | None) -> list:
        seen.clear()
        meet[0] = None if barrier is None else threading.Barrier(barrier, timeout=30)
        with torch.inference_mode():
            ts = [torch.zeros(()) for _ in range(tasks)]
            out = _with_threads(threads, lambda: (at_once(fn, list(range(tasks)), ts, device=cpu),
                                                  torch.get_num_threads()))
        assert out[1] == threads  # the caller's count is unchanged
        return out[0]

    assert run(2, 2, 2) == [1, 2]
    assert [t for _, t, _ in seen] == [1, 1] and all(mode for _, _, mode in seen)
    assert len({who for who, _, _ in seen}) == 2
    assert threading.get_ident() not in {who for who, _, _ in seen}
    assert run(2, 4, 2) == [1, 2] and [t for _, t, _ in seen] == [2, 2]
    # three tasks on two threads: two workers of one thread each (the third waits for one)
    assert run(3, 2, 2) == [1, 2, 3]
    assert len({who for who, _, _ in seen}) == 2 and [t for _, t, _ in seen] == [1, 1, 1]
    assert run(2, 1, None) == [1, 2]
    assert {who for who, _, _ in seen} == {threading.get_ident()}
    with pytest.raises(ValueError):
        at_once(fn, [1, 2], [torch.zeros(())], device=cpu)


def test_at_once_gives_the_estimates_run_in_turn_on_one_thread() -> None:
    """The scan prior's halves at once (two threads, one intra-op thread each) are bit for
    bit the halves run in turn on one thread: the thread count, not the concurrency, sets
    them."""
    scan = simulate_scan(SimulationConfig(N=32, n_positions=36, seed=2, probe_kind="gaussian"))
    amps, probe = torch.from_numpy(scan.diffraction).float(), torch.from_numpy(scan.probe)
    pos = scan.positions_px
    subsets = half_split(len(pos), 0)
    kw = dict(RECIPE, frame=canvas_frame(pos, 32))

    def half(rows: np.ndarray) -> ScanEstimate:
        return scan_error_reduction(amps, pos, probe, 3, subset=rows, **kw)

    together = _with_threads(2, lambda: at_once(half, subsets, device=torch.device("cpu")))
    in_turn = _with_threads(1, lambda: [half(rows) for rows in subsets])
    for a, b in zip(together, in_turn, strict=True):
        assert torch.equal(a.canvas, b.canvas)


def test_one_order_is_the_plain_estimate_and_two_are_the_mean_of_two_seeds(gaussian_scan) -> None:
    """``orders=1`` is `scan_error_reduction` (seed 0) bit for bit; ``orders=2`` is the mean
    of the seed-0 and seed-1 estimates, each run on one intra-op thread (2 threads: at once,
    one each; 1 thread: in turn), with their frame, illumination and passes; the two seeds
    differ (else there is nothing to average). (On some CPUs the FFTs round differently on
    two threads than on one, so the seeds are computed on one.)"""
    s = gaussian_scan
    amps, probe, pos = torch.from_numpy(s.diffraction).float(), torch.from_numpy(s.probe), s.positions_px
    one = order_averaged_estimate(amps, pos, probe, 4, 1, **RECIPE)
    assert torch.equal(one.canvas, scan_error_reduction(amps, pos, probe, 4, **RECIPE).canvas)
    seeds = _with_threads(1, lambda: [scan_error_reduction(amps, pos, probe, 4, seed=k, **RECIPE)
                                      for k in (0, 1)])
    assert not torch.allclose(seeds[0].canvas, seeds[1].canvas, atol=1e-3)
    mean = (seeds[0].canvas.clone().add_(seeds[1].canvas)).div_(2)
    for threads in (1, 2):
        two = _with_threads(threads, lambda: order_averaged_estimate(amps, pos, probe, 4, 2,
                                                                     **RECIPE))
        assert torch.equal(two.canvas, mean)
        np.testing.assert_array_equal(two.origin_px, seeds[0].origin_px)
        assert torch.equal(two.illumination, seeds[0].illumination) and two.passes == 4


def test_averaged_orders_are_closer_to_the_truth_at_low_dose(gaussian_scan) -> None:
    """Where over-relaxed passes carry the photon noise into the canvas, the mean of more
    orders has a smaller amplitude error inside the well-lit region than one order, and
    four smaller than two."""
    s = gaussian_scan
    amps, probe, pos = torch.from_numpy(s.diffraction).float(), torch.from_numpy(s.probe), s.positions_px

    def error(orders: int) -> float:
        return _amp_error(order_averaged_estimate(amps, pos, probe, 8, orders, **RECIPE), s)

    e1, e2, e4 = error(1), error(2), error(4)
    assert e2 < e1 and e4 < e2


def test_order_averaged_estimate_refuses_bad_orders_and_its_own_arguments(gaussian_scan) -> None:
    s = gaussian_scan
    amps, probe, pos = torch.from_numpy(s.diffraction).float(), torch.from_numpy(s.probe), s.positions_px
    for bad in (0, MAX_ORDERS + 1, 1.5, True, -1):
        with pytest.raises(ValueError, match="orders must be an integer"):
            order_averaged_estimate(amps, pos, probe, 1, bad)
    for name, value in (("seed", 3), ("frame", canvas_frame(pos, 32)), ("terms", None)):
        with pytest.raises(ValueError, match=f"chooses {name} itself"):
            order_averaged_estimate(amps, pos, probe, 1, 2, **{name: value})


def test_scan_prior_averages_two_orders_for_overrelaxed_whole_scan_passes(gaussian_scan) -> None:
    """`ScanPrior`: over-relaxed passes on the whole scan (no FRC filter) average
    `OVERRELAXED_ORDERS` orders unless told, and read the predicted centres of mass off the
    passes; plain passes and the FRC filter's halves one, centres predicted afresh; a given
    count is kept; the neighbourhood scope refuses more than one."""
    s = gaussian_scan
    amps, probe, pos = torch.from_numpy(s.diffraction).float(), torch.from_numpy(s.probe), s.positions_px
    assert default_orders(2.0) == OVERRELAXED_ORDERS == 2 and default_orders(1.0) == 1
    kw = dict(scope="scan", batch_size=8, amplitude_step=0.5)

    def prior(**extra) -> ScanPrior:  # noqa: ANN003
        return ScanPrior(amps, pos, probe, 1.0, 3, 4, **{**kw, **extra})

    over = prior(step_scale=2.0)
    assert over.orders == 2 and over.orders_filter
    expected = order_averaged_estimate(amps, pos, probe, 3, 2, batch_size=8, amplitude_step=0.5,
                                       step_scale=2.0, device="cpu", frc_filter=True)
    assert torch.equal(over.estimate.canvas, expected.canvas)
    assert over.orders_agreement == expected.orders_agreement is not None
    unfiltered = prior(step_scale=2.0, orders_filter=False)
    assert not unfiltered.orders_filter and unfiltered.orders_agreement is None
    expected = order_averaged_estimate(amps, pos, probe, 3, 2, batch_size=8, amplitude_step=0.5,
                                       step_scale=2.0, device="cpu")
    assert torch.equal(unfiltered.estimate.canvas, expected.canvas)
    assert not prior(step_scale=2.0, orders=1).orders_filter  # one order: nothing to filter
    with pytest.raises(ValueError, match="orders filter must be True, False or None"):
        prior(step_scale=2.0, orders_filter="yes")
    assert prior(step_scale=2.0, orders=1).orders == 1
    assert not torch.equal(prior(step_scale=2.0, orders=1).estimate.canvas, over.estimate.canvas)
    assert prior(step_scale=2.0, orders=3).orders == 3
    assert prior().orders == 1 and prior(orders=2).orders == 2  # plain passes: as given
    assert prior(step_scale=2.0, frc_filter=True).orders == 1  # the halves ignore it
    # with the centre-of-mass correction the over-relaxed whole scan reads the predicted
    # centres off its passes; the halves, plain passes and no correction predict afresh
    assert not over.com_from_passes
    read = prior(step_scale=2.0, com_correction=True)
    assert read.com_from_passes
    expected = order_averaged_estimate(amps, pos, probe, 3, 2, batch_size=8, amplitude_step=0.5,
                                       step_scale=2.0, com_correction=True,
                                       com_from_passes=True, device="cpu", frc_filter=True)
    assert torch.equal(read.estimate.canvas, expected.canvas)
    assert not prior(step_scale=2.0, com_correction=True, frc_filter=True).com_from_passes
    assert not prior(com_correction=True).com_from_passes
    with pytest.raises(ValueError, match="needs scope 'scan'"):
        ScanPrior(amps, pos, probe, 1.0, 3, 4, scope="neighbourhood", orders=2)
    with pytest.raises(ValueError, match="prior orders must be an integer"):
        prior(orders=0)


def test_prior_orders_options_are_validated_and_reach_the_prior(gaussian_scan) -> None:
    """``model.prior_orders`` and ``InferenceConfig.prior_orders``: 1-8 or None; the model's
    needs the scan scope; `ScanPrior.for_config` takes the model's unless inference gives
    one; inference refuses more than one for a model without the scan prior."""
    from ptychopinn.errors import ConfigError
    from ptychopinn.inference.reconstruct import check_prior_options

    for bad in (0, 9):
        with pytest.raises(ValueError, match="prior_orders"):
            ModelConfig(prior_orders=bad)
        with pytest.raises(ValueError, match="prior_orders"):
            InferenceConfig(prior_orders=bad)
    with pytest.raises(ValueError, match="model.prior_orders above 1 needs prior_scope 'scan'"):
        ModelConfig(prior_scope="neighbourhood", prior_orders=2)
    assert ModelConfig().prior_orders is None
    neighbourhood = ModelConfig(prior_scope="neighbourhood")
    with pytest.raises(ConfigError, match="prior_orders=2 needs a model with the scan prior"):
        check_prior_options(neighbourhood, InferenceConfig(prior_orders=2), "m")
    check_prior_options(neighbourhood, InferenceConfig(prior_orders=1), "m")

    cfg = WHOLE_SCAN_RECIPE

    def built(model_cfg: ModelConfig, **kw) -> ScanPrior:  # noqa: ANN003
        return _built(gaussian_scan, model_cfg, **kw)

    assert built(cfg).orders == 2
    assert built(cfg.model_copy(update={"prior_orders": 3})).orders == 3
    assert built(cfg.model_copy(update={"prior_orders": 3}), orders=1).orders == 1


def test_orders_filter_option_reaches_the_prior_and_is_refused_without_the_scan_prior(
        gaussian_scan) -> None:
    """``model.prior_orders_filter`` (default on; bundles without it: on) and
    ``InferenceConfig.prior_orders_filter`` (None: the model's) reach `ScanPrior`;
    inference refuses it for a model without the scan prior."""
    from ptychopinn.errors import ConfigError
    from ptychopinn.inference.reconstruct import check_prior_options

    assert ModelConfig().prior_orders_filter is True
    assert InferenceConfig().prior_orders_filter is None
    with pytest.raises(ConfigError, match="prior_orders_filter=true needs a model with the scan"):
        check_prior_options(ModelConfig(prior_scope="neighbourhood"),
                            InferenceConfig(prior_orders_filter=True), "m")
    cfg = WHOLE_SCAN_RECIPE

    def built(model_cfg: ModelConfig, **kw) -> ScanPrior:  # noqa: ANN003
        return _built(gaussian_scan, model_cfg, **kw)

    assert built(cfg).orders_filter and built(cfg).orders_agreement is not None
    off = cfg.model_copy(update={"prior_orders_filter": False})
    assert not built(off).orders_filter
    assert built(off, orders_filter=True).orders_filter  # inference's choice wins
    assert not built(cfg, orders_filter=False).orders_filter


def _two_orders(scan, iterations: int = 8):  # noqa: ANN001, ANN202
    amps, probe = torch.from_numpy(scan.diffraction).float(), torch.from_numpy(scan.probe)
    return _with_threads(1, lambda: [scan_error_reduction(
        amps, scan.positions_px, probe, iterations, seed=k, **RECIPE) for k in (0, 1)])


def test_filter_orders_keeps_agreeing_orders_and_the_phase(gaussian_scan) -> None:
    """Orders that agree (the same estimate twice) have an FRC of 1 at every ring: the
    filter keeps the amplitude (to float rounding) and reports full agreement; on orders
    that differ it changes only the amplitude (the phase is the mean's) and reports less."""
    from dataclasses import replace

    from ptychopinn.physics.prior_orders import filter_orders

    a, b = _two_orders(gaussian_scan)
    same = filter_orders(a, [a, a])
    np.testing.assert_allclose(same.canvas.abs().numpy(), a.canvas.abs().numpy(), atol=2e-4)
    assert same.orders_agreement == pytest.approx(1.0, abs=1e-6)
    mean = replace(a, canvas=(a.canvas + b.canvas) / 2)
    got = filter_orders(mean, [a, b])
    assert got.orders_agreement < 0.99
    lit = mean.illumination.numpy() > 0.3 * float(mean.illumination.max())
    assert not np.allclose(got.canvas.abs().numpy()[lit], mean.canvas.abs().numpy()[lit],
                           atol=1e-3)
    np.testing.assert_allclose(np.angle(got.canvas.numpy())[lit],
                               np.angle(mean.canvas.numpy())[lit], atol=1e-5)
    assert filter_orders(mean, [a]) is mean  # one order: nothing to compare


def test_filtered_mean_of_orders_is_closer_to_the_truth_at_low_dose(gaussian_scan) -> None:
    """Where over-relaxed passes carry the photon noise into the canvas, the orders' FRC
    filter lowers the amplitude error of the mean of two orders inside the well-lit region
    (the property the default rests on; at 1e5 photons under a Gaussian beam)."""
    s = gaussian_scan
    amps, probe, pos = torch.from_numpy(s.diffraction).float(), torch.from_numpy(s.probe), s.positions_px

    def error(frc_filter: bool) -> float:
        return _amp_error(order_averaged_estimate(amps, pos, probe, 8, 2, frc_filter=frc_filter,
                                                  **RECIPE), s)

    assert error(True) < error(False)


def test_prior_records_no_filter_where_the_orders_frc_could_not_be_read(gaussian_scan,
                                                                       monkeypatch) -> None:
    """Where the orders light too little of the object together to read their FRC,
    `filter_orders` returns the mean unfiltered (no agreement), and `ScanPrior` records
    that the filter did not run rather than that it was asked for."""
    import ptychopinn.models.scan_prior as scan_prior_mod

    real = scan_prior_mod.order_averaged_estimate
    monkeypatch.setattr(scan_prior_mod, "order_averaged_estimate",
                        lambda *a, **kw: real(*a, **{**kw, "frc_filter": False}))
    prior = _built(gaussian_scan, WHOLE_SCAN_RECIPE)
    assert prior.orders == 2 and not prior.orders_filter and prior.orders_agreement is None
