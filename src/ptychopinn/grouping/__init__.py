"""Grouping of neighbouring scan positions into the sets a model sees together."""

from ptychopinn.grouping.neighbors import (
    Groups,
    cover_groups,
    coverage,
    group_neighbors,
    nearest_patterns,
)

__all__ = ["Groups", "cover_groups", "coverage", "group_neighbors", "nearest_patterns"]
