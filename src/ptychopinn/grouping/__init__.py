"""Grouping of neighbouring scan positions into the sets a model sees together."""

from ptychopinn.grouping.neighbors import Groups, coverage, group_neighbors, nearest_patterns

__all__ = ["Groups", "coverage", "group_neighbors", "nearest_patterns"]
