"""Global phase synchronisation (`inference.phase_sync`): the overlap matrix is
``A^H D^-1 A`` of the placed groups, its leading eigenvector recovers the groups'
phases per connected set, and it does not drift the way greedy waves do."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ptychopinn.grouping import group_neighbors
from ptychopinn.inference import phase_sync
from ptychopinn.inference.phase_sync import (
    bin_windows,
    leading_rotations,
    overlap_matrix,
    sync_fits,
    synchronise,
)
from ptychopinn.inference.stitching import radial_order, stitch_groups, sync_method
from ptychopinn.metrics import evaluate
from ptychopinn.physics.geometry import extract_patches, place_patches


def _groups(scan, gridsize=2):
    g = group_neighbors(scan.positions_px, gridsize, neighbor_count=6, seed=0)
    idx = torch.from_numpy(g.indices[radial_order(g.centers_px)])
    pos = torch.from_numpy(scan.positions_px)
    true = extract_patches(torch.from_numpy(scan.object), pos, scan.patch_size)
    return idx, pos, true


def _source(patches, pos, chunk=40):
    def source():
        for s in range(0, len(patches), chunk):
            sl = slice(s, min(s + chunk, len(patches)))
            yield torch.arange(sl.start, sl.stop), patches[sl], pos[sl]

    return source


def test_bin_windows_sums_blocks_and_pads_partial_ones():
    x = torch.arange(2 * 5 * 5, dtype=torch.float32).reshape(2, 5, 5)
    b = bin_windows(x, 2)
    assert b.shape == (2, 3, 3)
    assert float(b[0, 0, 0]) == float(x[0, :2, :2].sum())
    assert float(b[1, 2, 2]) == float(x[1, 4, 4])  # the partial corner block
    torch.testing.assert_close(b.sum(dim=(-2, -1)), x.sum(dim=(-2, -1)))
    z = torch.complex(x, -x)
    torch.testing.assert_close(bin_windows(z, 2), torch.complex(b, -b))
    torch.testing.assert_close(bin_windows(x, 1), x)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="binning factor must be an integer >= 1"):
            bin_windows(x, bad)


def test_overlap_matrix_is_the_placed_groups_gram_matrix(small_scan):
    """Unbinned (factor 1), ``M_ij = sum_x conj(a_i(x)) a_j(x) / D(x)`` with ``a_i`` the
    group's weighted patches placed on the canvas: computed here densely from
    `place_patches`, the adjoint of extraction."""
    idx, pos, true = _groups(small_scan)
    idx, n = idx[:12], small_scan.patch_size
    w = torch.linspace(0.2, 1.0, n * n).reshape(n, n)
    shape = small_scan.object.shape
    gen = torch.Generator().manual_seed(0)
    patches = true[idx] * torch.randn(len(idx), 1, 1, 1, dtype=torch.complex64, generator=gen)
    m = overlap_matrix((patches * w).to(torch.complex64), pos[idx], w, n, shape, 1).toarray()
    a = torch.stack([place_patches((patches[i] * w).to(torch.complex128), pos[idx[i]], shape)
                     for i in range(len(idx))]).reshape(len(idx), -1)
    den = place_patches(w.expand(idx.shape[1] * len(idx), n, n).double(),
                        pos[idx].reshape(-1, 2), shape).reshape(-1)
    inv = torch.where(den > 1e-3 * den.max(), 1 / den.clamp_min(1e-30), 0)
    ref = (a.conj() * inv) @ a.T
    np.testing.assert_allclose(m, ref.numpy(), rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    assert np.allclose(m, m.conj().T)
    assert np.linalg.eigvalsh(m).min() > -1e-4 * np.abs(m).max()  # positive semi-definite
    with pytest.raises(ValueError, match="need positions"):
        overlap_matrix(patches, pos[idx][:, :1], w, n, shape, 1)


@pytest.mark.parametrize("factor", [1, 4])
def test_global_sync_recovers_random_group_phases(small_scan, factor):
    idx, pos, true = _groups(small_scan)
    n = small_scan.patch_size
    rng = np.random.default_rng(1)
    turn = np.exp(1j * rng.uniform(-np.pi, np.pi, len(idx)))
    patches = true[idx] * torch.from_numpy(turn.astype(np.complex64)).view(-1, 1, 1, 1)
    w = torch.ones(n, n)
    rot = synchronise(bin_windows(patches * w, factor), pos[idx], bin_windows(w, factor), n,
                      small_scan.object.shape, factor).numpy()
    assert np.allclose(np.abs(rot), 1, atol=1e-5)
    residual = np.angle(rot * turn * np.conj(rot[0] * turn[0]))  # one common phase left
    assert np.abs(residual).max() < 0.05, np.abs(residual).max()


def test_leading_rotations_per_connected_set():
    """Two sets of groups that share no pixel and one lone group: each set's rotations
    undo its phases up to the set's own constant; the lone group keeps 1."""
    rng = np.random.default_rng(2)
    phases = np.exp(1j * rng.uniform(-np.pi, np.pi, 9))
    blocks = []
    for members in (slice(0, 5), slice(5, 8)):
        u = phases[members] * rng.uniform(0.5, 1.5, len(phases[members]))
        blocks.append(np.outer(u.conj(), u))  # M_ij = conj(t_i) t_j K_ij, K = 1
    m = sp.csr_matrix(sp.block_diag(blocks + [np.zeros((1, 1))]))
    rot = leading_rotations(m)
    for members in (slice(0, 5), slice(5, 8)):
        undone = rot[members] * phases[members]
        np.testing.assert_allclose(undone / undone[0], 1, atol=1e-9)
        assert abs(np.angle(rot[members].sum())) < 1e-9  # the set's phase: sum real > 0
    assert rot[8] == 1


def test_rotations_do_not_gather_on_the_most_energetic_groups():
    """A 40 x 40 grid of groups whose energies span 12 decades (a large scan, where the
    brightest groups' energies dwarf the rest): the unnormalised leading eigenvector
    decays away from the bright corner to below rounding, so the dim groups' phases were
    noise (rotation error 0.8 rad on a 10^4-pattern scan, docs/benchmarks.md); normalised
    by the groups' own energies every group is recovered."""
    side = 40
    rng = np.random.default_rng(5)
    phases = np.exp(1j * rng.uniform(-np.pi, np.pi, side * side))
    yy, xx = np.divmod(np.arange(side * side), side)
    energy = 10.0 ** (12 * (yy + xx) / (2 * (side - 1)))
    rows, cols, vals = [], [], []
    for dy, dx in ((0, 1), (1, 0)):
        ok = (yy + dy < side) & (xx + dx < side)
        i = np.flatnonzero(ok)
        j = (yy[ok] + dy) * side + xx[ok] + dx
        v = 0.3 * np.sqrt(energy[i] * energy[j]) * phases[i].conj() * phases[j]
        rows += [i, j]
        cols += [j, i]
        vals += [v, v.conj()]
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(side * side,) * 2) + sp.diags(energy)
    rot = leading_rotations(m.tocsr())  # Lanczos: more groups than DENSE_EIGEN_LIMIT
    undone = rot * phases
    err = np.angle(undone * undone[0].conj())
    assert np.abs(err).max() < 1e-6, np.abs(err).max()


def test_large_sets_are_solved_by_lanczos_as_densely(monkeypatch, small_scan):
    idx, pos, true = _groups(small_scan)
    n = small_scan.patch_size
    gen = torch.Generator().manual_seed(4)
    patches = true[idx] * torch.randn(len(idx), 1, 1, 1, dtype=torch.complex64, generator=gen)
    w = torch.ones(n, n)
    m = overlap_matrix(bin_windows(patches, 2), pos[idx], bin_windows(w, 2), n,
                       small_scan.object.shape, 2)
    dense = leading_rotations(m)
    monkeypatch.setattr(phase_sync, "DENSE_EIGEN_LIMIT", 2)
    lanczos = leading_rotations(m)
    np.testing.assert_allclose(lanczos, dense, atol=1e-5)

    def no_convergence(sub, **kw):  # Lanczos gives up with a poor vector: power iterations
        raise phase_sync.spla.ArpackNoConvergence(
            "test", np.zeros(0), np.ones((sub.shape[0], 1), dtype=np.complex128))

    monkeypatch.setattr(phase_sync.spla, "eigsh", no_convergence)
    np.testing.assert_allclose(leading_rotations(m), dense, atol=1e-4)


def test_global_sync_beats_greedy_waves_on_a_larger_scan():
    """Patches with smooth per-group phase errors (as a network's) on 400 positions: the
    greedy waves carry each alignment's error on outwards, the eigenvector balances all
    overlaps at once, so the globally synchronised phase is closer to the truth
    (0.943 vs 0.935 here; on trained models' scans -0.009 to +0.025, mean +0.007,
    docs/benchmarks.md: better on most, not on all)."""
    from scipy.ndimage import gaussian_filter

    from ptychopinn.simulation import SimulationConfig, simulate_scan

    scan = simulate_scan(SimulationConfig(N=32, n_positions=400, photons_per_pattern=1e5, seed=3))
    idx, pos, true = _groups(scan)
    rng = np.random.default_rng(6)
    field = gaussian_filter(rng.normal(size=(*idx.shape, 32, 32)), (0, 0, 6, 6))
    turn = np.exp(1j * rng.uniform(-np.pi, np.pi, len(idx)))[:, None, None, None]
    patches = (true[idx] * torch.from_numpy(np.exp(1j * 0.1 * field / field.std()) * turn))
    src = _source(patches.to(torch.complex64), pos[idx])
    scores = {}
    for sync in ("global", "waves"):
        obj, _, _ = stitch_groups(src, len(idx), scan.object.shape, torch.ones(32, 32), sync=sync)
        scores[sync] = evaluate(obj.numpy(), scan.object, positions_px=scan.positions_px,
                                patch_size=32)["phase_ssim"]
    assert scores["global"] > scores["waves"] + 0.004, scores


def test_sync_method_falls_back_to_waves_beyond_the_limit():
    assert sync_method(True, "global", 100, 64) == "global"
    assert sync_method(True, "waves", 100, 64) == "waves"
    assert sync_method(False, "global", 100, 64) == "off"
    too_many = phase_sync.SYNC_ENTRIES_LIMIT // (64 // phase_sync.SYNC_FACTOR + 1) ** 2 + 1
    assert not sync_fits(too_many, 64) and sync_fits(too_many - 1, 64)
    assert sync_method(True, "global", too_many, 64) == "waves"
    with pytest.raises(ValueError, match="phase_sync_method must be 'global' or 'waves'"):
        sync_method(True, "eigen", 100, 64)
    with pytest.raises(ValueError, match="sync must be 'global', 'waves' or 'off'"):
        stitch_groups(lambda: iter(()), 1, (8, 8), torch.ones(4, 4), sync="eigen")


def test_infer_records_the_synchronisation_it_ran(tmp_path, small_scan):
    from ptychopinn import api
    from ptychopinn.bundle.pytorch import save_pinn
    from ptychopinn.config import InferenceConfig, TrainingConfig
    from ptychopinn.errors import ConfigError
    from ptychopinn.inference.reconstruct import write_outputs
    from ptychopinn.models.pinn import PtychoPINN, normalise_probe

    cfg = TrainingConfig(model={"N": 32, "gridsize": 2, "n_filters_scale": 0.25})
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), cfg.model.probe_scale)
    torch.manual_seed(0)
    save_pinn(tmp_path / "m", PtychoPINN(cfg.model, probe).eval(), cfg)
    runs = {}
    for method, on in (("global", True), ("waves", True), ("global", False)):
        rec = api.reconstruct(tmp_path / "m", small_scan, InferenceConfig(
            phase_sync_method=method, phase_sync=on, figures=False))
        runs[rec.phase_sync] = rec
    assert set(runs) == {"global", "waves", "off"}
    assert not np.allclose(runs["global"].object, runs["waves"].object)
    unpolished = api.reconstruct(tmp_path / "m", small_scan, InferenceConfig(
        phase_sync_method="waves", phase_sync_polish=0, figures=False))
    assert not np.allclose(unpolished.object, runs["waves"].object)  # waves polish once
    once = api.reconstruct(tmp_path / "m", small_scan, InferenceConfig(
        phase_sync_method="global", phase_sync_polish=1, figures=False))
    assert not np.allclose(once.object, runs["global"].object)  # global does not by default
    assert api.reconstruct(tmp_path / "m", small_scan,
                           InferenceConfig(figures=False)).phase_sync == "global"  # the default
    write_outputs(runs["global"], tmp_path / "out", figures=False)
    with np.load(tmp_path / "out" / "reconstruction.npz") as z:
        assert str(z["phase_sync"]) == "global"
    with pytest.raises((ConfigError, ValueError), match="phase_sync_method"):
        InferenceConfig(phase_sync_method="eigen")


def test_infer_phase_sync_flag():
    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser

    def sync(*extra):
        args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz", *extra])
        cfg = infer_config_from_args(args)
        return cfg.phase_sync, cfg.phase_sync_method

    assert sync() == (True, "global")  # the default
    assert sync("--phase-sync", "waves") == (True, "waves")
    assert sync("--phase-sync", "global") == (True, "global")
    assert sync("--phase-sync", "off")[0] is False
    args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz",
                                      "--set", "phase_sync_method=waves", "--phase-sync", "off"])
    assert infer_config_from_args(args).phase_sync_method == "waves"  # --set kept, sync off
    with pytest.raises(SystemExit):
        sync("--phase-sync", "eigen")
