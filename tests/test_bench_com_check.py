"""benchmarks/bench_com_check.py: the scan prior alone with the centre-of-mass correction
off, unchecked and checked; bad arguments are refused before any work, by name."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_com_check  # noqa: E402

from ptychopinn.data import save_npz  # noqa: E402
from ptychopinn.simulation import SimulationConfig, simulate_scan  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--scan", "no-equals-sign"], "--scan expects LABEL=PATH"),
    (["--scan", "x=/nonexistent/scan.npz"], "--scan expects LABEL=PATH"),
    (["--iterations", "0"], "--iterations must be >= 1"),
    (["--check-patterns", "0"], "--check-patterns must be >= 1"),
    (["--timing", "-1"], "--timing must be >= 0"),
])
def test_bad_arguments_are_refused_by_name(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_com_check.py", *argv])
    with pytest.raises(SystemExit):
        bench_com_check.main()
    assert message in capsys.readouterr().err


def test_a_scan_without_its_truth_is_refused_by_file(tmp_path):
    scan = simulate_scan(SimulationConfig(seed=3, n_positions=16))
    path = tmp_path / "no_truth.npz"
    save_npz(replace(scan, object=None), path)
    with pytest.raises(SystemExit, match="no_truth.npz has no true object"):
        bench_com_check.scans([f"mine={path}"])


def test_each_mode_runs_its_own_prior():
    """Off, unchecked and checked are three priors of the same scan: with the correction
    the phase differs from the uncorrected prior's; under the default disk each turn lowers
    the misfit, so checked scores as unchecked."""
    scan = simulate_scan(SimulationConfig(seed=3, n_positions=100))
    r = {m: bench_com_check.prior_run(scan, c, k, 4) for m, c, k in bench_com_check.MODES}
    assert all(v["passes"] == 4 and v["s"] > 0 for v in r.values())
    assert r["unchecked"]["phase"] != r["off"]["phase"]
    assert r["checked"]["phase"] == pytest.approx(r["unchecked"]["phase"], abs=1e-6)


def test_timing_rows_time_the_three_modes():
    """--timing's table: one row per size with the three modes' seconds; the shares
    are the correction's (unchecked - off) and the check's (checked - unchecked) of the
    checked prior's time."""
    assert bench_com_check.timing_row(64, 625, 0.5, 0.8, 1.0) == (
        "| 64 | 625 | 0.50 | 0.80 | 1.00 | 30% | 20% |")
    lines = bench_com_check.timing_lines(1, sizes=(32,), patterns=49)
    assert lines[0].startswith("| N | patterns | off s") and len(lines) == 3
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:2] == ["32", "49"] and len(cells) == 7
    assert min(float(c) for c in cells[2:5]) >= 0  # seconds (rounded to 0.01)
