"""benchmarks/bench_refine_phase_first.py: issue 5's target per refine_phase_first, with
LSQML-100 read from the cache bench_side_by_side leaves beside the scan."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_refine_phase_first  # noqa: E402

from ptychopinn import api  # noqa: E402
from ptychopinn.config import TrainingConfig  # noqa: E402
from ptychopinn.data import save_npz  # noqa: E402
from ptychopinn.simulation import SimulationConfig, simulate_scan  # noqa: E402


@pytest.fixture(scope="module")
def run_and_scan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("phase_first")
    scan = simulate_scan(SimulationConfig(N=32, n_positions=36, seed=7, photons_per_pattern=1e5))
    cfg = TrainingConfig.model_validate({
        "output_dir": str(tmp / "run"), "nepochs": 1, "batch_size": 16, "seed": 0,
        "max_time_minutes": None, "model": {"N": 32, "n_filters_scale": 0.25},
        "execution": {"logger": "none", "progress_bar": False}, "save_reconstruction": False})
    res = api.train(cfg, scan)
    path = save_npz(scan, tmp / "scan.npz")
    return str(res.bundle_path), str(path), scan


def _cache(scan_path: str, obj: np.ndarray, seconds: float) -> Path:
    path = Path(scan_path).with_name(Path(scan_path).stem + "_ptychi_lsqml_100.npz")
    np.savez(path, object=obj, reconstruction_s=np.float64(seconds))
    return path


def test_verdicts_follow_the_reference_and_its_time(run_and_scan, capsys, one_torch_thread,
                                                    monkeypatch):
    """Against a reference at the truth no refinement reaches it (NOT MET, it ran on past
    its epochs while the time lasted); against a reference of noise every variant meets it at
    once; with --reuse-lsqml the earlier LSQML result is read, not rerun."""
    model, scan_path, scan = run_and_scan
    monkeypatch.setattr(bench_refine_phase_first, "EPOCHS", 3)
    monkeypatch.setattr("bench_side_by_side.MAX_BUDGET_EPOCHS", 5)

    def no_ptychi(*a, **k):
        raise AssertionError("pty-chi run although a cached result is beside the scan")

    monkeypatch.setattr(bench_refine_phase_first, "run_ptychi", no_ptychi)
    _cache(scan_path, scan.object, 1e6)  # the truth, and all the time in the world
    bench_refine_phase_first.main(["--case", "truth", model, scan_path, "--firsts", "2", "0",
                                   "--threads", "1", "--reuse-lsqml"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| truth |"))
    assert row.count("NOT MET (not in 5 epochs)") == 2
    assert "reused scan_ptychi_lsqml_100.npz" in out
    noise = np.random.default_rng(0).normal(1.0, 0.3, scan.object.shape)
    _cache(scan_path, noise.astype(np.complex64), 1e6)  # noise: reached at once
    bench_refine_phase_first.main(["--case", "noise", model, scan_path, "--firsts", "0",
                                   "--preconditioners", "batch", "scan", "--reuse-lsqml"])
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("| noise |"))
    assert row.count("MET (epoch 1,") == 2 and "NOT MET" not in row
    assert row.count("; step at release x1 |") == 2  # no phase-only epochs: the full step


def test_missing_files_and_bad_firsts_are_refused(run_and_scan, capsys):
    model, scan_path, _ = run_and_scan
    with pytest.raises(SystemExit):
        bench_refine_phase_first.main(["--case", "x", model, scan_path + ".gone"])
    assert "--case 'x': SCAN" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_refine_phase_first.main(["--case", "x", model, scan_path, "--firsts", "-1"])
    assert "--firsts must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_refine_phase_first.main(["--case", "x", model, scan_path, "--floor-afters",
                                       "-2"])
    assert "--floor-afters must be >= 0; found [-2]" in capsys.readouterr().err


def test_settings_cross_firsts_with_floor_afters_and_name_the_default():
    from ptychopinn.config import InferenceConfig

    default = InferenceConfig().refine_preconditioner
    restart = InferenceConfig().refine_release_restart
    compared = bench_refine_phase_first.settings([20, 0], [0, 10])
    common = {"refine_preconditioner": default, "refine_release_restart": restart}
    assert compared == [{"refine_phase_first": 20, "refine_floor_after": 0, **common},
                        {"refine_phase_first": 20, "refine_floor_after": 10, **common},
                        {"refine_phase_first": 0, "refine_floor_after": 0, **common},
                        {"refine_phase_first": 0, "refine_floor_after": 10, **common}]
    labels = [bench_refine_phase_first.setting_label(c) for c in compared]
    assert labels == ["refine_phase_first 20 (infer's default)",
                      "refine_phase_first 20, refine_floor_after 10",
                      "refine_phase_first 0", "refine_phase_first 0, refine_floor_after 10"]


def test_settings_cross_the_preconditioners_and_label_the_non_default_one():
    from ptychopinn.config import InferenceConfig

    default = InferenceConfig().refine_preconditioner
    other = "scan" if default == "batch" else "batch"
    compared = bench_refine_phase_first.settings([20], [0], ["batch", "scan"])
    assert [c["refine_preconditioner"] for c in compared] == ["batch", "scan"]
    labels = {c["refine_preconditioner"]: bench_refine_phase_first.setting_label(c)
              for c in compared}
    assert labels[default] == "refine_phase_first 20 (infer's default)"
    assert labels[other] == f"refine_phase_first 20, refine_preconditioner {other}"


def test_settings_cross_the_release_restarts_and_label_the_old_behaviour():
    from ptychopinn.config import InferenceConfig

    assert InferenceConfig().refine_release_restart is True
    compared = bench_refine_phase_first.settings([20], [0], None, [True, False])
    assert [c["refine_release_restart"] for c in compared] == [True, False]
    labels = [bench_refine_phase_first.setting_label(c) for c in compared]
    assert labels == ["refine_phase_first 20 (infer's default)",
                      "refine_phase_first 20, refine_release_restart False"]


def test_lsqml_runs_unless_reused_and_a_stale_result_is_refused(run_and_scan, monkeypatch):
    """By default LSQML-100 runs here (the side-by-side rule: one run, one machine); an
    earlier result older than the scan is refused by name, not read."""
    import os

    _, scan_path, scan = run_and_scan
    calls = []

    def fake_run(path):
        calls.append(path)
        return {"object": scan.object, "reconstruction_s": 7.0}

    monkeypatch.setattr(bench_refine_phase_first, "run_ptychi", fake_run)
    cached = _cache(scan_path, scan.object, 99.0)
    assert bench_refine_phase_first.lsqml_100(scan_path)[1:] == (7.0, "run here")
    assert calls == [scan_path]
    assert bench_refine_phase_first.lsqml_100(scan_path, reuse=True)[1] == 99.0
    old = Path(scan_path).stat().st_mtime - 60
    os.utime(cached, (old, old))
    with pytest.raises(SystemExit, match="older than"):
        bench_refine_phase_first.lsqml_100(scan_path, reuse=True)


def test_release_step_is_the_first_amplitude_epochs_step():
    steps = [1.0, 1.0, 0.5, 0.25, 0.125]
    s = bench_refine_phase_first.release_step
    assert s({"refine_phase_first": 0}, steps) == 1.0
    assert s({"refine_phase_first": 3}, steps) == 0.25  # epochs 1-3 phase only, 4th released
    assert np.isnan(s({"refine_phase_first": 5}, steps))  # the run ended first
