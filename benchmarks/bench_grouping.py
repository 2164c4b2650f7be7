"""Benchmark `group_neighbors` on 10^4, 10^5 and 10^6 random positions.

Usage: ``python benchmarks/bench_grouping.py [--gridsize 2] [--record]``.
Prints a markdown table; ``--record`` appends it to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import append_section, markdown_table  # noqa: E402

from ptychopinn.grouping import coverage, group_neighbors  # noqa: E402


def run(sizes: list[int], gridsize: int, neighbor_count: int, repeats: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for n in sizes:
        # density of a scan with 8 px steps
        pos = np.random.default_rng(0).uniform(0, 8 * np.sqrt(n), size=(n, 2))
        times = []
        for r in range(repeats):
            t0 = time.perf_counter()
            groups = group_neighbors(pos, gridsize, neighbor_count=neighbor_count, seed=r)
            times.append(time.perf_counter() - t0)
        best = min(times)
        covered = int(np.count_nonzero(coverage(groups, n)))
        rows.append([f"{n:,}", gridsize, neighbor_count, f"{best:.3f}",
                     f"{n / best:,.0f}", f"{covered / n:.0%}"])
        print(f"n={n:,}: {best:.3f} s", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    ap.add_argument("--gridsize", type=int, default=2)
    ap.add_argument("--neighbor-count", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    ap.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = ap.parse_args(argv)
    rows = run(args.sizes, args.gridsize, args.neighbor_count, args.repeats)
    table = markdown_table(
        ["positions", "gridsize", "K", "time (s)", "groups/s", "coverage"], rows
    )
    print(table)
    if args.record:
        path = append_section(
            "Neighbour grouping (group_neighbors)",
            table,
            notes="Uniform random positions at the density of an 8 px raster; one group per "
            f"pattern; best of {args.repeats} runs (cKDTree build + query + random choice).",
        )
        print(f"appended to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
