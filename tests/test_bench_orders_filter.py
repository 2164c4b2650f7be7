"""benchmarks/bench_orders_filter.py: the prior's FRC filter between mini-batch orders,
off and on, scored for the prior alone and the network of a model whose prior averages
two orders (the featureless recipe on the whole scan)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_orders_filter  # noqa: E402

from ptychopinn import api  # noqa: E402
from ptychopinn.config import TrainingConfig  # noqa: E402
from ptychopinn.data import save_npz  # noqa: E402
from ptychopinn.simulation import SimulationConfig, simulate_scan  # noqa: E402


@pytest.fixture(scope="module")
def run_and_scan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("orders")
    scan = simulate_scan(SimulationConfig(N=32, n_positions=64, step_px=6, seed=5,
                                          probe_kind="gaussian", photons_per_pattern=1e5))
    cfg = TrainingConfig.model_validate({
        "output_dir": str(tmp / "run"), "nepochs": 1, "batch_size": 16, "seed": 0,
        "max_time_minutes": None,
        "model": {"N": 32, "n_filters_scale": 0.25, "prior_recipe": "featureless",
                  "prior_frc_filter": False, "prior_iterations": 3, "prior_settle_passes": 1},
        "execution": {"logger": "none", "progress_bar": False},
        "save_reconstruction": False})
    res = api.train(cfg, scan)
    return str(res.bundle_path), str(save_npz(scan, tmp / "scan.npz"))


def test_the_filter_changes_the_prior_and_reports_the_orders_agreement(run_and_scan,
                                                                        one_torch_thread):
    model, scan = run_and_scan
    r = bench_orders_filter.score_case(model, scan)
    assert r["trained"] is True  # train's default
    for what in ("prior", "network"):
        off, on = r["off", what], r["on", what]
        assert off[4] == on[4] == 2  # two orders averaged
        assert off[3] is None and 0 < on[3] < 1  # agreement only where the filter ran
        assert off[0] != on[0]  # the amplitude moved
        assert on[1] == pytest.approx(off[1], abs=0.02)  # the phase as estimated


def test_cli_prints_a_row_per_case_and_refuses_missing_files(run_and_scan, capsys,
                                                            one_torch_thread):
    model, scan = run_and_scan
    bench_orders_filter.main(["--case", "tiny", model, scan, "--threads", "1"])
    out = capsys.readouterr().out
    assert "| tiny | on | 2 |" in out
    with pytest.raises(SystemExit):
        bench_orders_filter.main(["--case", "gone", model, str(Path(scan).parent / "x.npz")])
    assert "--case 'gone': SCAN" in capsys.readouterr().err
