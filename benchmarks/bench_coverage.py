"""How many times over each scan lights its object, and the prior's passes that asks for.

For each ``--scan LABEL FILE`` (any format `ptychopinn.data.readers.load_scan` reads, the
measured Siemens star's ``.npz.bz2`` included) this script prints the scan's
`physics.coverage.scan_coverage` (probe footprints per lit pixel, with the scan's own
probe) and the plain prior's passes `models.scan_prior.coverage_passes` gives a model of
the default 4 passes with ``model.prior_coverage_passes`` on. No timing: the numbers are
properties of the scans.

Usage::

    python benchmarks/bench_coverage.py --scan "default raster" models/scans/seed11.npz \
        --scan "steps of 16 px" models/hidden/textured_step16.npz [--record]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import markdown_table, print_and_record  # noqa: E402


def main(argv: list[str] | None = None) -> list[list[object]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--scan", nargs=2, action="append", required=True, metavar=("LABEL", "FILE"))
    p.add_argument("--passes", type=int, default=4, help="the model's passes (default 4)")
    p.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    p.add_argument("--note", default="", help="added to the recorded heading")
    args = p.parse_args(argv)

    import numpy as np

    from ptychopinn.data.readers import load_scan
    from ptychopinn.models.scan_prior import COVERAGE_REFERENCE, coverage_passes
    from ptychopinn.physics.coverage import scan_coverage

    rows = []
    for label, path in args.scan:
        scan = load_scan(path)
        cov = scan_coverage(scan.positions_px, np.asarray(scan.probe))
        rows.append([label, scan.n_patterns, scan.patch_size, f"{cov:.2f}",
                     coverage_passes(args.passes, cov)])
    headers = ["scan", "patterns", "N", "coverage", f"plain passes of a {args.passes}-pass model"]
    notes = (f"coverage: physics.coverage.scan_coverage, the probe intensity the scan sums on "
             f"each lit pixel in units of the probe's peak, averaged over the lit pixels; "
             f"passes: models.scan_prior.coverage_passes (below {COVERAGE_REFERENCE:g} the "
             f"model's passes times ({COVERAGE_REFERENCE:g} / coverage)^2, rounded up, at most "
             "MAX_COVERAGE_PASSES), what the plain prior runs with model.prior_coverage_passes "
             "on. Scans: " + "; ".join(f"{label}: {path}" for label, path in args.scan) + ".")
    title = "The scans' coverage and the prior's passes (bench_coverage.py)"
    if args.note:
        title += f" [{args.note}]"
    print_and_record(title, markdown_table(headers, rows), notes, args.record)
    return rows


if __name__ == "__main__":
    main()
