"""Neighbour grouping: shapes, nearest-neighbour membership, seeding, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from ptychopinn.errors import ConfigError, DataError
from ptychopinn.grouping import Groups, coverage, group_neighbors, nearest_patterns


@pytest.fixture
def positions() -> np.ndarray:
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(np.arange(12), np.arange(11), indexing="ij"), -1).reshape(-1, 2)
    return grid * 8.0 + rng.normal(0, 0.7, size=grid.shape)


def test_gridsize1_all_patterns_in_order(positions):
    g = group_neighbors(positions, 1)
    assert isinstance(g, Groups)
    assert g.indices.shape == (len(positions), 1) and g.indices.dtype == np.int64
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(len(positions)))
    np.testing.assert_array_equal(g.centers_px, positions)
    assert np.all(g.offsets_px == 0)


def test_gridsize1_sample_without_replacement(positions):
    g = group_neighbors(positions, 1, n_groups=50, seed=3)
    assert g.indices.shape == (50, 1)
    assert len(np.unique(g.indices)) == 50
    with pytest.raises(ConfigError, match="n_groups"):
        group_neighbors(positions, 1, n_groups=len(positions) + 1)
    big = group_neighbors(positions, 1, n_groups=3 * len(positions), oversample=True)
    np.testing.assert_array_equal(coverage(big, len(positions)), 3)


@pytest.mark.parametrize("gridsize,k", [(2, 4), (2, 6), (3, 12)])
def test_members_are_among_k_nearest(positions, gridsize, k):
    c = gridsize**2
    g = group_neighbors(positions, gridsize, neighbor_count=k, seed=5)
    n = len(positions)
    assert g.indices.shape == (n, c)
    assert g.centers_px.shape == (n, 2) and g.offsets_px.shape == (n, c, 2)
    assert g.group_size == c and g.n_groups == n
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(n))  # seed first
    _, nn = cKDTree(positions).query(positions, k=k)
    for row in range(n):
        assert set(g.indices[row]) <= set(nn[row]), row
        assert len(set(g.indices[row])) == c  # distinct members
    np.testing.assert_allclose(g.offsets_px.sum(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(g.centers_px, positions[g.indices].mean(axis=1))
    np.testing.assert_allclose(g.offsets_px, positions[g.indices] - g.centers_px[:, None])


def test_random_choice_uses_all_k(positions):
    """With K > C the members vary: over many groups every rank 1..K-1 is used."""
    k = 8
    g = group_neighbors(positions, 2, neighbor_count=k, seed=0)
    _, nn = cKDTree(positions).query(positions, k=k)
    ranks = [list(nn[r]).index(m) for r in range(len(positions)) for m in g.indices[r, 1:]]
    assert set(ranks) == set(range(1, k))


def test_determinism_and_seed(positions):
    a = group_neighbors(positions, 2, seed=7)
    b = group_neighbors(positions, 2, seed=7)
    c = group_neighbors(positions, 2, seed=8)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)
    s1 = group_neighbors(positions, 2, n_groups=40, seed=1)
    s2 = group_neighbors(positions, 2, n_groups=40, seed=2)
    assert s1.indices.shape == (40, 4)
    assert not np.array_equal(s1.indices[:, 0], s2.indices[:, 0])


def test_coverage_full_when_every_pattern_seeds(positions):
    g = group_neighbors(positions, 2)
    cov = coverage(g, len(positions))
    assert cov.shape == (len(positions),) and cov.min() >= 1
    assert cov.sum() == g.indices.size


def test_oversample(positions):
    n = len(positions)
    with pytest.raises(ConfigError, match="oversample"):
        group_neighbors(positions, 2, n_groups=2 * n)
    g = group_neighbors(positions, 2, n_groups=2 * n, oversample=True)
    assert g.indices.shape == (2 * n, 4)
    np.testing.assert_array_equal(np.bincount(g.indices[:, 0], minlength=n), 2)


def test_errors(positions):
    with pytest.raises(ConfigError, match="neighbor_count.*gridsize"):
        group_neighbors(positions, 2, neighbor_count=3)
    with pytest.raises(ConfigError, match="gridsize"):
        group_neighbors(positions, 0)
    with pytest.raises(DataError, match="positions_px"):
        group_neighbors(positions[:, :1], 2)
    with pytest.raises(DataError, match="at least 9"):
        group_neighbors(positions[:5], 3, neighbor_count=9)


def test_duplicate_positions_keep_seed_first():
    pos = np.zeros((10, 2))
    g = group_neighbors(pos, 2, neighbor_count=4, seed=0)
    np.testing.assert_array_equal(g.indices[:, 0], np.arange(10))
    assert all(len(set(r)) == 4 for r in g.indices)


def test_large_scan_groups():
    """A big unordered scan groups completely (its speed is benchmarks/bench_grouping.py's)."""
    n = 200_000
    pos = np.random.default_rng(0).uniform(0, 8 * np.sqrt(n), (n, 2))
    g = group_neighbors(pos, 2)
    assert g.indices.shape == (n, 4)
    assert np.array_equal(g.indices[:, 0], np.arange(n))


def test_nearest_patterns_self_first_sorted_and_padded() -> None:
    from ptychopinn.grouping import nearest_patterns

    pos = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 7.0], [0.0, 7.0]])
    nn = nearest_patterns(pos, 3)
    assert nn.shape == (5, 3) and nn.dtype == np.int64
    assert np.array_equal(nn[:, 0], np.arange(5))  # each pattern first, duplicates included
    assert set(nn[0]) == {0, 1, 2} and set(nn[2]) == {2, 1, 0}
    assert set(nn[3, 1:]) >= {4}  # its duplicate is its nearest other
    padded = nearest_patterns(pos[:2], 4)  # fewer patterns than asked: repeat itself
    assert np.array_equal(padded, np.array([[0, 1, 0, 0], [1, 0, 1, 1]]))
    with pytest.raises(ConfigError, match="k"):
        nearest_patterns(pos, 0)
    with pytest.raises(DataError, match="positions_px"):
        nearest_patterns(np.zeros((3, 3)), 2)


@pytest.mark.parametrize("gridsize,k", [(2, 6), (2, 4), (3, 12)])
def test_cover_groups_hold_every_pattern_in_few_groups(positions, gridsize, k):
    from ptychopinn.grouping import cover_groups

    g = cover_groups(positions, gridsize, neighbor_count=k)
    c = gridsize * gridsize
    n = positions.shape[0]
    assert g.indices.shape[1] == c and g.indices.dtype == np.int64
    cov = coverage(g, n)
    assert cov.min() >= 1  # every pattern predicted
    assert g.n_groups < 0.5 * n  # far fewer than one group per pattern
    assert all(len(set(r)) == c for r in g.indices)  # distinct members
    # members are among the seed's k nearest, as in group_neighbors
    nn = nearest_patterns(positions, k)
    for row in g.indices:
        assert set(row[1:]) <= set(nn[row[0]])
    again = cover_groups(positions, gridsize, neighbor_count=k)
    assert np.array_equal(again.indices, g.indices)  # deterministic


def test_cover_groups_gridsize1_and_errors(positions):
    from ptychopinn.grouping import cover_groups

    g = cover_groups(positions, 1)
    assert np.array_equal(g.indices[:, 0], np.arange(positions.shape[0]))
    with pytest.raises(ConfigError, match="neighbor_count"):
        cover_groups(positions, 2, neighbor_count=3)
    with pytest.raises(DataError, match="at least 4"):
        cover_groups(positions[:3], 2)
    with pytest.raises(DataError, match="positions_px"):
        cover_groups(np.zeros((3, 3)), 2)


def test_inference_groups_follow_the_inference_options(positions):
    from ptychopinn.config import InferenceConfig
    from ptychopinn.inference.reconstruct import inference_groups

    n = positions.shape[0]
    cover = inference_groups(positions, 2, InferenceConfig())
    assert coverage(cover, n).min() >= 1 and cover.n_groups < 0.5 * n
    every = inference_groups(positions, 2, InferenceConfig(group_cover=False))
    assert np.array_equal(every.indices[:, 0], np.arange(n))  # one group per pattern
    some = inference_groups(positions, 2, InferenceConfig(n_groups=10))
    assert some.n_groups == 10  # an explicit count wins over the cover
