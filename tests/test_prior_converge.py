"""Converge passes of the FRC-filtered scan prior (physics.prior_frc's ``converge_passes``):
blocks of passes kept while the two half-scan estimates agree more."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ptychopinn.physics.prior_frc as pf
from ptychopinn.physics.prior_frc import CONVERGE_BLOCK, frc_filtered_estimate
from ptychopinn.simulation import SimulationConfig, simulate_scan


@pytest.fixture(scope="module")
def gaussian_scan():
    """A small scan under a Gaussian beam (the featureless recipe's case)."""
    return simulate_scan(SimulationConfig(N=32, n_positions=100, seed=3, probe_kind="gaussian"))


def _args(scan, iterations):
    return (torch.from_numpy(scan.diffraction), scan.positions_px,
            torch.from_numpy(scan.probe), iterations)


# over-relaxed passes with the centre-of-mass correction and settling passes, as the
# featureless recipe runs them
RECIPE = {"step_scale": 2.0, "batch_size": 16, "com_correction": True, "settle_passes": 1}


def test_converge_blocks_continue_the_halves_and_stop_where_agreement_falls(
        monkeypatch, gaussian_scan):
    """With the agreement patched to rise twice and then fall, two blocks are kept and the
    third dropped: the estimate is bit for bit the one of 2 + 2 blocks' passes run at once
    (the blocks continue the halves' run, batch orders and corrections included), the
    recorded agreement is the last kept block's, and the passes are counted."""
    readings = iter([0.3, 0.4, 0.5, 0.45])
    monkeypatch.setattr(pf, "agreement", lambda frc: next(readings))
    est, frc = frc_filtered_estimate(*_args(gaussian_scan, 2), converge_passes=12, **RECIPE)
    assert next(readings, None) is None  # every reading taken: the third block was tried
    assert est.passes == 2 + 2 * CONVERGE_BLOCK and est.agreement == 0.5

    monkeypatch.setattr(pf, "agreement", lambda frc: 0.3)
    at_once, frc_at_once = frc_filtered_estimate(*_args(gaussian_scan, 2 + 2 * CONVERGE_BLOCK),
                                                 **RECIPE)
    assert torch.equal(est.canvas, at_once.canvas)
    np.testing.assert_array_equal(frc, frc_at_once)


def test_a_first_block_that_does_not_raise_the_agreement_changes_nothing(
        monkeypatch, gaussian_scan):
    """Equal agreement counts as no rise: the block is dropped and the estimate is bit for bit
    the one without converge passes; a cap below the block runs a shorter block; bad
    values are refused by name."""
    monkeypatch.setattr(pf, "agreement", lambda frc: 0.3)
    base, _ = frc_filtered_estimate(*_args(gaussian_scan, 3), **RECIPE)
    flat, _ = frc_filtered_estimate(*_args(gaussian_scan, 3), converge_passes=8, **RECIPE)
    assert flat.passes == base.passes == 3 and torch.equal(flat.canvas, base.canvas)

    readings = iter([0.3, 0.4])
    monkeypatch.setattr(pf, "agreement", lambda frc: next(readings))
    short, _ = frc_filtered_estimate(*_args(gaussian_scan, 3), converge_passes=1, **RECIPE)
    assert short.passes == 4
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="converge_passes must be an integer >= 0"):
            frc_filtered_estimate(*_args(gaussian_scan, 3), converge_passes=bad)


def test_converge_passes_follow_the_real_agreement_and_help_an_unconverged_prior(gaussian_scan):
    """Unpatched, on the Gaussian-beam scan after 2 over-relaxed passes (far from
    converged): the halves agree more with more passes, blocks are kept, and the estimate's
    amplitude is nearer the truth than without them."""
    base, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), **RECIPE)
    more, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), converge_passes=8, **RECIPE)
    assert more.passes > base.passes and more.agreement > base.agreement

    def amp_error(est):
        n = gaussian_scan.diffraction.shape[-1]
        truth = torch.from_numpy(np.asarray(gaussian_scan.object, np.complex64))
        patches = est.patches(gaussian_scan.positions_px, n).abs()
        true = truth_patches(truth, gaussian_scan, n).abs()
        return float(((patches - true) ** 2).mean())

    assert amp_error(more) < 0.8 * amp_error(base), (amp_error(more), amp_error(base))


def truth_patches(truth, scan, n):
    """The true object's patches at the scan's positions (the object's own frame)."""
    from ptychopinn.physics.geometry import extract_patches

    pos = torch.from_numpy(np.asarray(scan.positions_px, np.float64))
    return extract_patches(truth, pos, n)


# plain passes (step scale 1) as inference runs them: extra passes and phase momentum where
# the halves agree
PLAIN = {"batch_size": 64, "com_correction": True, "extra_iterations": 2, "phase_momentum": 0.7}


def test_plain_passes_try_blocks_only_where_the_halves_did_not_agree(monkeypatch, gaussian_scan):
    """Plain passes whose halves agree run their extra passes and no converge block (one
    agreement read, the estimate bit for bit the one without converge passes); where they
    disagree, blocks are kept while each raises the agreement by more than
    `PLAIN_CONVERGE_RISE` (a rise of less drops the block, the held-out misfit patched not
    to fall)."""
    monkeypatch.setattr(pf, "pass_misfit", lambda *a, **k: 1.0)
    reads = []

    def agreeing(frc):
        reads.append(1)
        return pf.EXTRA_PASS_AGREEMENT + 0.1

    monkeypatch.setattr(pf, "agreement", agreeing)
    base, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), **PLAIN)
    reads.clear()
    est, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), converge_passes=12, **PLAIN)
    assert len(reads) == 1 and est.passes == base.passes == 2 + PLAIN["extra_iterations"]
    assert torch.equal(est.canvas, base.canvas)

    low, rise = 0.2, pf.PLAIN_CONVERGE_RISE
    # the momentum halves, the plain halves again (no agreement read), then the blocks
    readings = iter([low, low + 2 * rise, low + 2.5 * rise])
    monkeypatch.setattr(pf, "agreement", lambda frc: next(readings))
    est, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), converge_passes=12, **PLAIN)
    assert next(readings, None) is None
    assert est.passes == 2 + CONVERGE_BLOCK and est.agreement == low + 2 * rise


def test_plain_converge_blocks_help_a_strong_phase_object():
    """Unpatched: a strong phase object (-2.5..2.5 rad) under the default disk converges
    slowly; its plain halves disagree after 4 passes, the blocks raise their agreement, are
    kept, and bring the amplitude nearer the truth (a hidden-scan kind of the thirty-eighth
    session: the network's amplitude SSIM 0.763 -> 0.950 against LSQML-100's 0.983)."""
    scan = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=5,
                                          phase_range_rad=(-2.5, 2.5)))
    base, _ = frc_filtered_estimate(*_args(scan, 4), **PLAIN)
    more, _ = frc_filtered_estimate(*_args(scan, 4), converge_passes=12, **PLAIN)
    assert base.agreement < pf.EXTRA_PASS_AGREEMENT and base.passes == 4
    assert more.passes > base.passes and more.agreement > base.agreement + pf.PLAIN_CONVERGE_RISE

    truth = torch.from_numpy(np.asarray(scan.object, np.complex64))

    def amp_error(est):
        patches = est.patches(scan.positions_px, 32).abs()
        return float(((patches - truth_patches(truth, scan, 32).abs()) ** 2).mean())

    assert amp_error(more) < 0.85 * amp_error(base), (amp_error(more), amp_error(base))


def test_inference_defaults_try_converge_blocks_for_plain_and_over_relaxed_passes():
    from ptychopinn.models.scan_prior import (
        INFERENCE_CONVERGE_PASSES,
        INFERENCE_PLAIN_CONVERGE_PASSES,
        inference_pass_options,
    )

    assert inference_pass_options(1.0, None, None, None)[2] == INFERENCE_PLAIN_CONVERGE_PASSES
    assert inference_pass_options(2.0, None, None, None)[2] == INFERENCE_CONVERGE_PASSES
    assert inference_pass_options(1.0, None, None, 0)[2] == 0
    assert INFERENCE_PLAIN_CONVERGE_PASSES % CONVERGE_BLOCK == 0


def _amp_error(est, scan):
    n = scan.diffraction.shape[-1]
    truth = torch.from_numpy(np.asarray(scan.object, np.complex64))
    patches = est.patches(scan.positions_px, n).abs()
    return float(((patches - truth_patches(truth, scan, n).abs()) ** 2).mean())


def test_plain_converge_blocks_run_small_batches_that_converge_where_the_data_agree():
    """Plain passes' blocks update by `PLAIN_CONVERGE_BATCH` patterns: on the simulator's
    strongest phase (-3..3 rad) the first block at the passes' own batch of 64 barely moves
    the halves (dropped: 4 passes), while the small batches raise their agreement past the
    gate, keep every block and more than halve the amplitude error (blocks without the
    phase momentum, as with ``--prior-phase-momentum 0``); at 1e4 photons the small-batch
    block (with the momentum, the default) is dropped, the estimate bit for bit the one
    without blocks."""
    assert pf.PLAIN_CONVERGE_BATCH < PLAIN["batch_size"]
    strong = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=5,
                                            phase_range_rad=(-3.0, 3.0)))
    unturned = {**PLAIN, "phase_momentum": 0.0}
    small, _ = frc_filtered_estimate(*_args(strong, 4), converge_passes=12, **unturned)
    large, _ = frc_filtered_estimate(*_args(strong, 4), converge_passes=12,
                                     converge_batch_size=PLAIN["batch_size"], **unturned)
    assert large.passes == 4 and small.passes == 4 + 12
    assert small.agreement > pf.EXTRA_PASS_AGREEMENT > large.agreement
    assert _amp_error(small, strong) < 0.5 * _amp_error(large, strong)

    dim = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=5,
                                         photons_per_pattern=1e4))
    base, _ = frc_filtered_estimate(*_args(dim, 4), **PLAIN)
    tried, _ = frc_filtered_estimate(*_args(dim, 4), converge_passes=12, **PLAIN)
    assert base.agreement < pf.EXTRA_PASS_AGREEMENT  # the blocks were tried
    assert tried.passes == base.passes == 4 and torch.equal(tried.canvas, base.canvas)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="converge_batch_size must be an integer >= 1"):
            frc_filtered_estimate(*_args(dim, 4), converge_batch_size=bad)


def test_plain_blocks_continue_the_momentum_halves_where_they_disagree():
    """With the phase momentum (inference's default) the halves that decided are continued
    by the blocks with the momentum, and the whole scan's passes turn the phase too where a
    block is kept: on the -3..3 rad scan every block is kept, the halves agree more than
    blocks without the momentum leave them, and the amplitude error is more than halved."""
    strong = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=5,
                                            phase_range_rad=(-3.0, 3.0)))
    base, _ = frc_filtered_estimate(*_args(strong, 4), **PLAIN)
    turned, _ = frc_filtered_estimate(*_args(strong, 4), converge_passes=12, **PLAIN)
    unturned, _ = frc_filtered_estimate(*_args(strong, 4), converge_passes=12,
                                        **{**PLAIN, "phase_momentum": 0.0})
    assert base.phase_momentum == 0.0 and base.passes == 4  # the halves disagreed
    assert turned.passes == 4 + 12 and turned.phase_momentum == PLAIN["phase_momentum"]
    assert unturned.phase_momentum == 0.0
    assert turned.agreement > unturned.agreement > pf.EXTRA_PASS_AGREEMENT
    assert _amp_error(turned, strong) < 0.5 * _amp_error(base, strong)


def test_plain_blocks_run_without_the_com_correction(monkeypatch):
    """`PLAIN_CONVERGE_COM` (False): the plain blocks' passes run without the centre-of-mass
    correction; the halves' first passes and the whole scan's passes after the blocks keep
    it, and so does every pass where the switch is on; over-relaxed blocks keep it."""
    strong = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=5,
                                            phase_range_rad=(-3.0, 3.0)))
    calls = []
    real = pf.scan_error_reduction

    def spy(*args, **kw):
        calls.append((args[3], kw.get("batch_size"), kw.get("com_correction"),
                      kw.get("start") is not None and kw.get("subset") is None))
        return real(*args, **kw)

    monkeypatch.setattr(pf, "scan_error_reduction", spy)
    off, _ = frc_filtered_estimate(*_args(strong, 4), converge_passes=8, **PLAIN)
    assert off.passes == 4 + 8  # both blocks kept
    blocks = [c for c in calls if c[1] == pf.PLAIN_CONVERGE_BATCH]
    whole = [c for c in calls if c[3]]
    halves = [c for c in calls if c[1] == PLAIN["batch_size"] and not c[3] and c[0] > 0]
    assert blocks and all(c[2] is False for c in blocks)
    assert len(whole) == 1 and whole[0][2] is True
    assert halves and all(c[2] is True for c in halves)

    calls.clear()
    monkeypatch.setattr(pf, "PLAIN_CONVERGE_COM", True)
    on, _ = frc_filtered_estimate(*_args(strong, 4), converge_passes=8, **PLAIN)
    assert all(c[2] is True for c in calls if c[0] > 0)
    assert not torch.equal(on.canvas, off.canvas)

    calls.clear()
    monkeypatch.setattr(pf, "PLAIN_CONVERGE_COM", False)
    frc_filtered_estimate(*_args(strong, 4), converge_passes=4, **RECIPE)
    assert all(c[2] is True for c in calls if c[0] > 0)  # over-relaxed: the correction stays


def test_blocks_are_kept_where_the_held_out_misfit_falls(monkeypatch, gaussian_scan):
    """After a plain block the agreement kept, a block whose agreement rose by
    `PLAIN_CONVERGE_RISE` or less is kept where the halves' held-out misfit
    (`physics.prior_scan.pass_misfit` of each half's estimate on the other half's patterns)
    fell by more than `PLAIN_CONVERGE_MISFIT_FALL`, and dropped where it fell by less
    (patched): the blocks so kept are bit for bit those the agreement keeps. A first block
    whose agreement rose too little is dropped without reading the misfit, and so are
    over-relaxed passes' blocks."""
    fall, low, rise = pf.PLAIN_CONVERGE_MISFIT_FALL, 0.2, pf.PLAIN_CONVERGE_RISE
    readings = iter([low, low + 2 * rise, low + 2 * rise, low + 2 * rise])
    monkeypatch.setattr(pf, "agreement", lambda frc: next(readings))
    # each reading is the mean of two halves': after the first block (kept by the
    # agreement), after the second (fell by more), after the third (fell by less)
    held = [1.0, 1.0 - 1.5 * fall, (1.0 - 1.5 * fall) * (1.0 - 0.5 * fall)]
    misfits = iter([v for v in held for _ in range(2)])
    monkeypatch.setattr(pf, "pass_misfit", lambda *a, **k: next(misfits))
    by_misfit, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), converge_passes=12, **PLAIN)
    assert next(readings, None) is None and next(misfits, None) is None
    assert by_misfit.passes == 2 + 2 * CONVERGE_BLOCK
    assert by_misfit.phase_momentum == PLAIN["phase_momentum"]  # blocks kept: with it
    first, second, third = by_misfit.converge_blocks  # what each block read, as recorded
    assert (first.passes, first.misfit_fall, first.kept) == (2 + CONVERGE_BLOCK, None, True)
    assert (second.rise, second.kept) == (0.0, True)
    assert second.misfit_fall == pytest.approx(1.5 * fall)
    assert (third.kept, third.misfit_fall) == (False, pytest.approx(0.5 * fall))

    monkeypatch.setattr(pf, "pass_misfit", lambda *a, **k: 1.0)  # never falls
    readings = iter([low, low + 2 * rise, low + 4 * rise, low + 4 * rise])
    monkeypatch.setattr(pf, "agreement", lambda frc: next(readings))
    by_agreement, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), converge_passes=12,
                                            **PLAIN)
    assert next(readings, None) is None and by_agreement.passes == by_misfit.passes
    assert torch.equal(by_agreement.canvas, by_misfit.canvas)

    def refused(*a, **k):
        raise AssertionError("no held-out misfit is read here")

    monkeypatch.setattr(pf, "pass_misfit", refused)
    monkeypatch.setattr(pf, "agreement", lambda frc: low)
    none_kept, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), converge_passes=12, **PLAIN)
    no_blocks, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), **PLAIN)
    assert none_kept.passes == 2 and len(none_kept.converge_blocks) == 1
    assert torch.equal(none_kept.canvas, no_blocks.canvas)
    recipe, _ = frc_filtered_estimate(*_args(gaussian_scan, 2), converge_passes=8, **RECIPE)
    assert recipe.passes == 2


def test_the_held_out_misfit_continues_blocks_where_the_agreement_stalls():
    """Unpatched, a -2..2 rad scan whose blocks update 16 patterns at a time: the first
    block raises the halves' agreement and is kept, the second raises it by
    `PLAIN_CONVERGE_RISE` or less but lowers their held-out misfit by more than
    `PLAIN_CONVERGE_MISFIT_FALL`: with the misfit it is kept, and so is the next, and the
    amplitude error falls (the hidden -3..3 rad scan of seed 421 in
    `benchmarks/bench_prior_converge.py`, forty-second session, at the defaults)."""
    scan = simulate_scan(SimulationConfig(N=32, n_positions=100, seed=9,
                                          phase_range_rad=(-2.0, 2.0)))
    kw = {**PLAIN, "converge_batch_size": 16}
    with_misfit, _ = frc_filtered_estimate(*_args(scan, 4), converge_passes=12, **kw)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pf, "PLAIN_CONVERGE_MISFIT_FALL", None)
        agreement_only, _ = frc_filtered_estimate(*_args(scan, 4), converge_passes=12, **kw)
    assert agreement_only.passes == 4 + CONVERGE_BLOCK
    assert with_misfit.passes == 4 + 3 * CONVERGE_BLOCK
    second = with_misfit.converge_blocks[1]
    assert second.rise <= pf.PLAIN_CONVERGE_RISE and second.misfit_fall > pf.PLAIN_CONVERGE_MISFIT_FALL
    assert _amp_error(with_misfit, scan) < 0.95 * _amp_error(agreement_only, scan)
