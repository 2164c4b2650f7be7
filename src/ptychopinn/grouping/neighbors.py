"""Neighbour groups: which C = gridsize**2 patterns a model sees together.

``gridsize == 1``: every group is one pattern. ``gridsize > 1``: a group
starts from a seed pattern and adds C - 1 patterns drawn at random (seeded)
among the seed's ``neighbor_count`` nearest neighbours (the seed included in
that count), so members overlap on the object. Everything is vectorised: one
`scipy.spatial.cKDTree` query for all seeds and one argsort of random keys, so
10^6 positions group in seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ptychopinn.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Groups:
    """Groups of neighbouring patterns.

    Attributes
    ----------
    indices
        ``(G, C)`` int64 pattern indices; column 0 is the group's seed.
    centers_px
        ``(G, 2)`` float64 mean ``[y, x]`` of the members' positions.
    offsets_px
        ``(G, C, 2)`` float64 member position minus group centre.
    """

    indices: np.ndarray
    centers_px: np.ndarray
    offsets_px: np.ndarray

    @property
    def n_groups(self) -> int:
        """G, the number of groups."""
        return int(self.indices.shape[0])

    @property
    def group_size(self) -> int:
        """C = gridsize**2, the patterns per group."""
        return int(self.indices.shape[1])


def _check_positions(positions_px: np.ndarray) -> np.ndarray:
    pos = np.asarray(positions_px, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2 or pos.shape[0] == 0:
        raise DataError(
            f"positions_px: expected an (n, 2) array of [y, x] with n >= 1; "
            f"found shape {pos.shape}."
        )
    if not np.all(np.isfinite(pos)):
        raise DataError("positions_px: expected finite values; found NaN/Inf.")
    return pos


def _seed_order(
    n: int, n_groups: int | None, oversample: bool, rng: np.random.Generator
) -> np.ndarray:
    """The seed pattern of each group.

    None: every pattern once, in order. ``n_groups <= n``: a random sample
    without replacement. ``n_groups > n`` (only with ``oversample``):
    concatenated random permutations, so every pattern seeds about equally often.
    """
    if n_groups is None:
        return np.arange(n, dtype=np.int64)
    if isinstance(n_groups, bool) or int(n_groups) != n_groups or n_groups < 1:
        raise ConfigError(f"n_groups: expected a positive integer or None; found {n_groups!r}.")
    n_groups = int(n_groups)
    if n_groups > n and not oversample:
        raise ConfigError(
            f"n_groups: asked for {n_groups} groups from only {n} patterns; use n_groups <= {n} "
            "or oversample=True (patterns then seed several groups with different neighbours)."
        )
    reps = -(-n_groups // n)
    perms = [rng.permutation(n) for _ in range(reps)]
    return np.concatenate(perms)[:n_groups].astype(np.int64)


def _make(pos: np.ndarray, indices: np.ndarray) -> Groups:
    members = pos[indices]
    centers = members.mean(axis=1)
    return Groups(indices=indices, centers_px=centers, offsets_px=members - centers[:, None, :])


def _nearest(pos: np.ndarray, seeds: np.ndarray, k: int) -> np.ndarray:
    """``(len(seeds), k)`` indices of the k nearest patterns of each seed.

    Seeds are queried in the tree's leaf order (spatially coherent, about
    twice as fast for big unordered scans) and the answers put back in order.
    """
    tree = cKDTree(pos, balanced_tree=False)
    rank = np.empty(pos.shape[0], dtype=np.int64)
    rank[tree.indices] = np.arange(pos.shape[0])
    order = np.argsort(rank[seeds], kind="stable")
    _, found = tree.query(pos[seeds[order]], k=k, workers=-1)
    nn = np.empty((len(seeds), k), dtype=np.int64)
    nn[order] = np.asarray(found, dtype=np.int64).reshape(len(seeds), k)
    return nn


def group_neighbors(
    positions_px: np.ndarray,
    gridsize: int,
    *,
    neighbor_count: int = 6,
    n_groups: int | None = None,
    seed: int = 0,
    oversample: bool = False,
) -> Groups:
    """Group patterns into sets of ``C = gridsize**2`` neighbours.

    Parameters
    ----------
    positions_px
        ``(n, 2)`` probe centres ``[y, x]``.
    gridsize
        Side of the group; ``C = gridsize**2`` patterns per group.
    neighbor_count
        K, the nearest neighbours (the seed included) that members are drawn
        from; must be at least C. Ignored for gridsize 1.
    n_groups
        Number of groups; None = one per pattern (every pattern seeds once).
    seed
        Seed of all random choices (`numpy.random.default_rng`).
    oversample
        Allow ``n_groups`` above the number of patterns.
    """
    pos = _check_positions(positions_px)
    n = pos.shape[0]
    if isinstance(gridsize, bool) or int(gridsize) != gridsize or gridsize < 1:
        raise ConfigError(f"gridsize: expected a positive integer; found {gridsize!r}.")
    c = int(gridsize) ** 2
    rng = np.random.default_rng(seed)
    if c == 1:
        seeds = _seed_order(n, n_groups, oversample, rng)
        return _make(pos, seeds[:, None])

    k = int(neighbor_count)
    if k < c:
        raise ConfigError(
            f"neighbor_count: must be at least gridsize**2 = {c} (gridsize={gridsize}) so a group "
            f"can be drawn from the nearest neighbours; found neighbor_count={neighbor_count}."
        )
    if n < c:
        raise DataError(
            f"positions_px: gridsize={gridsize} needs at least {c} patterns per group; "
            f"the scan has only {n}."
        )
    if k > n:
        log.info("neighbor_count %d > %d patterns: using %d.", k, n, n)
        k = n
    seeds = _seed_order(n, n_groups, oversample, rng)
    nn = _seed_first(_nearest(pos, seeds, k), seeds)

    # C - 1 distinct others chosen uniformly among the K - 1 other neighbours.
    keys = rng.random((len(seeds), k - 1))
    pick = np.argsort(keys, axis=1)[:, : c - 1] + 1
    indices = np.concatenate([seeds[:, None], np.take_along_axis(nn, pick, axis=1)], axis=1)
    return _make(pos, indices)


def _seed_first(nn: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Put each row's seed in column 0 (with duplicate positions it may sit
    elsewhere or be missing from the K; then it replaces the farthest one)."""
    is_seed = nn == seeds[:, None]
    missing = ~is_seed.any(axis=1)
    nn[missing, -1] = seeds[missing]
    is_seed[missing, -1] = True
    col = np.argmax(is_seed, axis=1)
    rows = np.arange(len(seeds))
    nn[rows, col] = nn[:, 0]
    nn[:, 0] = seeds
    return nn


def nearest_patterns(positions_px: np.ndarray, k: int) -> np.ndarray:
    """``(n, k)`` int64: every pattern (column 0) and its ``k - 1`` nearest others.

    With fewer than ``k`` patterns in the scan, the missing columns repeat the
    pattern itself (a repeated member adds nothing new to a joint estimate).
    """
    pos = _check_positions(positions_px)
    n = pos.shape[0]
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ConfigError(f"k: expected a positive integer; found {k!r}.")
    k = int(k)
    seeds = np.arange(n, dtype=np.int64)
    kk = min(k, n)
    nn = _seed_first(_nearest(pos, seeds, kk), seeds)
    if kk < k:
        nn = np.concatenate([nn, np.repeat(seeds[:, None], k - kk, axis=1)], axis=1)
    return nn


def cover_groups(positions_px: np.ndarray, gridsize: int, *, neighbor_count: int = 6) -> Groups:
    """Few groups that together hold every pattern (deterministic).

    Patterns are visited in raster order; each one not yet in a group seeds a
    group and fills it with the nearest of its ``neighbor_count`` neighbours
    that are still ungrouped (then with the nearest grouped ones), so members
    are drawn from the same neighbourhoods as `group_neighbors`'s. About
    ``1.3 n / C`` groups instead of ``n``: inference predicts each pattern
    about once instead of ``C`` times.
    """
    pos = _check_positions(positions_px)
    n = pos.shape[0]
    if isinstance(gridsize, bool) or int(gridsize) != gridsize or gridsize < 1:
        raise ConfigError(f"gridsize: expected a positive integer; found {gridsize!r}.")
    c = int(gridsize) ** 2
    if c == 1:
        return _make(pos, np.arange(n, dtype=np.int64)[:, None])
    if int(neighbor_count) < c:
        raise ConfigError(
            f"neighbor_count: must be at least gridsize**2 = {c}; found {neighbor_count}."
        )
    if n < c:
        raise DataError(
            f"positions_px: gridsize={gridsize} needs at least {c} patterns per group; "
            f"the scan has only {n}."
        )
    seeds = np.arange(n, dtype=np.int64)
    nn = _seed_first(_nearest(pos, seeds, min(int(neighbor_count), n)), seeds)
    covered = np.zeros(n, dtype=bool)
    rows = []
    for s in np.lexsort((pos[:, 1], pos[:, 0])):
        if covered[s]:
            continue
        others = nn[s, 1:]
        fresh = covered[others]
        members = np.concatenate([[s], others[~fresh], others[fresh]])[:c]
        covered[members] = True
        rows.append(members)
    return _make(pos, np.asarray(rows, dtype=np.int64))


def coverage(groups: Groups, n: int) -> np.ndarray:
    """How many times each of the ``n`` patterns appears in ``groups`` (int64)."""
    return np.bincount(groups.indices.reshape(-1), minlength=int(n)).astype(np.int64)
