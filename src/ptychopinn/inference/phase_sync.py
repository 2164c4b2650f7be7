"""Global phase synchronisation of stitched groups (angular synchronisation).

The network sees only diffraction magnitudes, so the patches of each group ``i``
carry an unknown global phase; stitching turns them by unit rotations ``r_i``:
``O = sum_i r_i a_i / D`` with ``a_i = E_i^T(w p_i)`` (the group's weighted patches
placed on the canvas) and ``D = sum_i E_i^T(w)``. The rotations under which the
groups agree best maximise the stitched energy ``sum_x |sum_i r_i a_i(x)|^2 / D(x)
= r^H M r`` with the groups' Hermitian overlap matrix ``M = A^H D^-1 A`` (sparse:
groups that share no pixel have ``M_ij = 0``). Relaxing ``|r_i| = 1`` to ``|r|^2 =
G`` makes the best ``r`` the leading eigenvector of ``M``, whose phases are taken
as the rotations (Singer's spectral synchronisation), one eigenvector per connected
set of groups. ``M`` is first normalised by each group's own energy (its diagonal ``S``:
``S^-1/2 M S^-1/2``, `normalised_overlap`): unnormalised, the eigenvector of a large scan
gathers on its most energetic groups and decays below rounding elsewhere, leaving those
groups' phases to noise (on a simulated 10^4-pattern scan the rotations were 0.82 rad
off the truth's, rms, against 0.37 normalised; docs/benchmarks.md).

Against greedy alignment (each group aligned to the groups stitched before it, in
waves growing out from the scan's centre, `stitching.stitch_groups` with
``sync='waves'``): the polishing passes that re-align every group to the finished
object are power iterations of the same ``M``, and the eigenvector is their limit,
found at once. It is the most self-consistent answer, not always the closest to the
truth: on 21 simulated scans the network's phase SSIM moved by -0.009 to +0.025
(mean +0.007; 15 higher, 2 equal, 4 lower) against the waves (docs/benchmarks.md), so it is the
default of ``InferenceConfig.phase_sync_method`` since 2026-12-04.

``M`` is computed from the patches binned by ``factor`` (weighted sums over
``factor x factor`` blocks, at the patches' positions scaled by it): the relative
phase of two overlapping groups is set mostly by the low spatial frequencies they
share, and the work is about ``1 / factor^2`` of a full-resolution stitch. The
rotations are then applied at full resolution.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
from scipy.sparse.csgraph import connected_components
from torch import Tensor

from ptychopinn.physics.geometry import window_entries, window_taps

SYNC_FACTOR = 4
"""Default binning of the patches for the overlap matrix (`overlap_matrix`)."""
SYNC_ENTRIES_LIMIT = 1 << 22
"""Most sparse entries (binned window pixels with their bilinear taps) the overlap
matrix is built from (about 11,000 patterns of 64 x 64 with gridsize 2; at 10^4 patterns
the peak of inference was 806 MB above the loaded data with 'global' against 714 MB with
waves, `benchmarks/bench_memory.py --phase-sync`): larger scans are synchronised in
waves (`sync_fits`), whose memory does not grow with the scan."""
DENSE_EIGEN_LIMIT = 512
"""Connected sets of at most this many groups are solved densely, larger ones by Lanczos."""


def binned_size(n: int, factor: int) -> int:
    """Side of an ``n x n`` window binned by ``factor`` (the last block may be partial)."""
    return -(-int(n) // int(factor))


def sync_entries(n_windows: int, n: int, factor: int) -> int:
    """Sparse entries `overlap_matrix` builds for ``n_windows`` windows of ``n x n``."""
    return int(n_windows) * (binned_size(n, factor) + 1) ** 2


def sync_fits(n_windows: int, n: int, factor: int = SYNC_FACTOR) -> bool:
    """Whether `overlap_matrix` of ``n_windows`` windows stays within `SYNC_ENTRIES_LIMIT`."""
    return sync_entries(n_windows, n, factor) <= SYNC_ENTRIES_LIMIT


def _check_factor(factor: int) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer) or factor < 1:
        raise ValueError(f"phase synchronisation: the binning factor must be an integer >= 1; "
                         f"found {factor!r}")
    return int(factor)


def bin_windows(values: Tensor, factor: int) -> Tensor:
    """Sums of ``values (..., n, n)`` (real or complex) over ``factor x factor`` blocks,
    the windows zero-padded to a multiple of ``factor``: ``(..., m, m)``,
    ``m = binned_size(n, factor)``."""
    f = _check_factor(factor)
    n = values.shape[-1]
    m = binned_size(n, f)
    if values.is_complex():
        return torch.complex(bin_windows(values.real, f), bin_windows(values.imag, f))
    lead = values.shape[:-2]
    x = values.reshape(-1, 1, n, n).float()
    if m * f != n:
        x = torch.nn.functional.pad(x, (0, m * f - n, 0, m * f - n))
    out = torch.nn.functional.avg_pool2d(x, f) * float(f * f)
    return out.reshape(*lead, m, m)


def binned_positions(positions_px: Tensor, n: int, factor: int) -> Tensor:
    """Centres, on the canvas binned by ``factor``, of the binned windows of ``n x n``
    windows centred at ``positions_px`` (same top-left corner, scaled)."""
    f = _check_factor(factor)
    return (positions_px.to(torch.float64) - n / 2.0) / f + binned_size(n, f) / 2.0


def overlap_matrix(binned: Tensor, positions_px: Tensor, binned_weight: Tensor, n: int,
                   shape: tuple[int, int], factor: int) -> sp.csr_matrix:
    """The groups' overlap matrix ``M = A^H D^-1 A`` (module docstring) on the canvas
    binned by ``factor``.

    ``binned`` ``(G, C, m, m)``: each group's weighted patches binned (`bin_windows` of
    ``w p``); ``positions_px`` ``(G, C, 2)``: their full-resolution centres;
    ``binned_weight`` ``(m, m)``: the binned stitching weight; ``n``: the full patch
    size; ``shape``: the full-resolution canvas. Canvas pixels whose binned weight is
    below 1e-3 of the largest do not count (as in stitching)."""
    f = _check_factor(factor)
    g, c, m, _ = binned.shape
    if tuple(positions_px.shape) != (g, c, 2) or tuple(binned_weight.shape) != (m, m):
        raise ValueError(f"overlap_matrix: {g} groups of {c} binned {m}x{m} windows need "
                         f"positions ({g}, {c}, 2) and a {m}x{m} weight; found "
                         f"{tuple(positions_px.shape)} and {tuple(binned_weight.shape)}")
    hb, wb = binned_size(shape[0], f) + 2, binned_size(shape[1], f) + 2
    taps = window_taps(binned_positions(positions_px, n, f).reshape(1, -1, 2).cpu(), m,
                       (hb, wb), torch.float32)
    vals = torch.view_as_real(binned.to(torch.complex64).cpu()).reshape(1, g * c, m, m, 2)
    index, spread = window_entries(taps, vals)
    _, wspread = window_entries(taps, binned_weight.float().cpu().expand(1, g * c, m, m)[..., None])
    rows = index.reshape(-1).to(torch.int32).numpy()
    den = np.bincount(rows, wspread.reshape(-1).double().numpy(), minlength=hb * wb)
    inv = np.where(den > 1e-3 * max(float(den.max()), 1e-30), 1.0 / np.maximum(den, 1e-30), 0.0)
    cols = np.repeat(np.arange(g, dtype=np.int32), c * index.shape[1])
    data = torch.view_as_complex(spread.reshape(-1, 2).contiguous()).numpy()
    a = sp.csr_matrix((data, (rows, cols)), shape=(hb * wb, g))
    del rows, cols, data, spread, index
    a = a.astype(np.complex128)
    m_mat = (a.conj().T @ sp.diags(inv) @ a).tocsr()
    return ((m_mat + m_mat.conj().T) * 0.5).tocsr()  # Hermitian to rounding


def normalised_overlap(m: sp.csr_matrix) -> sp.csr_matrix:
    """``S^-1/2 M S^-1/2`` with ``S`` the diagonal of the Hermitian overlap matrix ``m``
    (each group's stitched energy; groups without any keep zero rows): every entry the
    overlap of two groups relative to their own energies, so that the leading eigenvector
    weighs every group alike. Its phases are the rotations (`leading_rotations`)."""
    d = np.sqrt(np.maximum(m.diagonal().real, 0.0))
    inv = np.where(d > 0, 1.0 / np.maximum(d, 1e-300), 0.0)
    return (sp.diags(inv) @ m @ sp.diags(inv)).tocsr()


def leading_rotations(m: sp.csr_matrix) -> np.ndarray:
    """Unit rotations ``(G,)`` from the leading eigenvector of the Hermitian overlap
    matrix ``m``, one per connected set of groups (each set's common phase chosen so
    that its rotations sum to a positive real number); a group that overlaps no other,
    or whose eigenvector entry is zero, keeps rotation 1."""
    g = m.shape[0]
    rot = np.ones(g, dtype=np.complex128)
    # normalised by each group's own energy (the diagonal): unnormalised, the eigenvector
    # of a large scan gathers on its few most energetic groups and leaves the others'
    # phases to rounding (`normalised_overlap`)
    m = normalised_overlap(m)
    strong = m.copy()
    strong.data = np.abs(strong.data) > 0
    n_sets, label = connected_components(strong, directed=False)
    for k in range(n_sets):
        members = np.flatnonzero(label == k)
        if len(members) < 2:
            continue
        sub = m[members][:, members]
        if len(members) <= DENSE_EIGEN_LIMIT:
            # only the leading pair (LAPACK's MRRR driver): 2-4x faster than all of them
            v = sla.eigh(sub.toarray(), subset_by_index=[len(members) - 1] * 2)[1][:, 0]
        else:
            v = _lanczos_leading(sub)
        mag = np.abs(v)
        r = np.where(mag > 1e-12 * max(float(mag.max()), 1e-300), v / np.maximum(mag, 1e-300),
                     1.0)
        total = r.sum()
        if abs(total) > 0:
            r = r * (np.conj(total) / abs(total))
        rot[members] = r
    return rot


def _lanczos_leading(sub: sp.csr_matrix) -> np.ndarray:
    """The leading eigenvector of a large Hermitian ``sub`` (implicitly restarted Lanczos,
    from the all-ones start); power iterations carry on where Lanczos does not converge."""
    start = np.ones(sub.shape[0], dtype=np.complex128)
    try:
        return spla.eigsh(sub, k=1, which="LA", v0=start, tol=1e-8)[1][:, 0]
    except spla.ArpackNoConvergence as exc:
        v = exc.eigenvectors[:, 0] if exc.eigenvectors.shape[-1] else start
    for _ in range(200):
        w = sub @ v
        v = w / max(float(np.linalg.norm(w)), 1e-300)
    return v


def synchronise(binned: Tensor, positions_px: Tensor, binned_weight: Tensor, n: int,
                shape: tuple[int, int], factor: int = SYNC_FACTOR) -> Tensor:
    """Unit rotations ``(G,)`` complex64 of the groups (module docstring); the arguments
    as for `overlap_matrix`."""
    m = overlap_matrix(binned, positions_px, binned_weight, n, shape, factor)
    return torch.from_numpy(leading_rotations(m).astype(np.complex64))
