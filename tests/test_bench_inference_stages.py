"""benchmarks/bench_inference_stages.py: the stage split of inference by batch size reads
the reconstruction's own timings, and the batch size does not change the object."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_inference_stages  # noqa: E402

from ptychopinn import api  # noqa: E402
from ptychopinn.config import TrainingConfig  # noqa: E402
from ptychopinn.data import load_npz, save_npz  # noqa: E402


@pytest.fixture(scope="module")
def run_and_scan(tmp_path_factory, small_scan):
    tmp = tmp_path_factory.mktemp("stages")
    cfg = TrainingConfig.model_validate({
        "output_dir": str(tmp / "run"), "nepochs": 1, "batch_size": 16, "seed": 0,
        "max_time_minutes": None, "model": {"N": 32, "n_filters_scale": 0.25},
        "execution": {"logger": "none", "progress_bar": False},
        "save_reconstruction": False})
    res = api.train(cfg, small_scan)
    return str(res.bundle_path), str(save_npz(small_scan, tmp / "scan.npz"))


def test_each_batch_size_gets_a_row_with_the_same_object(run_and_scan, one_torch_thread):
    model, scan = run_and_scan
    rows = bench_inference_stages.time_variants(model, load_npz(scan), scan, "cpu", [4, 32],
                                                repeats=1)
    assert [r["batch"] for r in rows] == [4, 32]
    for r in rows:
        assert r["total"] > 0 and r["prior"] >= 0 and r["predict"] > 0 and r["stitch"] > 0
        assert r["total"] >= r["predict"] + r["stitch"]
        assert r["patterns"] == 144
    assert rows[0]["amp"] == pytest.approx(rows[1]["amp"], abs=1e-4)
    assert rows[0]["phase"] == pytest.approx(rows[1]["phase"], abs=1e-4)


def test_cli_prints_a_table_and_refuses_bad_options(run_and_scan, capsys, one_torch_thread):
    model, scan = run_and_scan
    bench_inference_stages.main(["--run", model, scan, "--batch-sizes", "8",
                                 "--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert f"| {model} | scan.npz | 8 |" in out
    with pytest.raises(SystemExit):
        bench_inference_stages.main(["--run", model, scan, "--repeats", "0"])
    assert "--repeats must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench_inference_stages.main(["--run", model, str(Path(scan).parent / "none.npz")])
    err = capsys.readouterr().err
    assert "--run: SCAN" in err and "none.npz not found" in err
    with pytest.raises(SystemExit, match="no true object"):
        bench_inference_stages.time_variants(model, replace(load_npz(scan), object=None), scan,
                                             "cpu", [4], repeats=1)


def test_auto_is_shown_resolved_and_untrained_cases_parse(run_and_scan, one_torch_thread):
    """'auto' rows name the number it resolved to; --untrained N:G and --batch-sizes refuse
    malformed values by name."""
    import argparse

    model, scan = run_and_scan
    rows = bench_inference_stages.time_variants(model, load_npz(scan), scan, "cpu",
                                                [4, "auto"], repeats=1)
    assert [r["batch"] for r in rows] == [4, "auto (64)"]  # N=32: 64 groups on any CPU
    assert [r["used"] for r in rows] == [4, 64]
    assert bench_inference_stages.untrained_arg("128:2") == (128, 2)
    for bad in ("128", "a:b", "8:1", "64:0"):
        with pytest.raises(argparse.ArgumentTypeError, match="N"):
            bench_inference_stages.untrained_arg(bad)
    assert bench_inference_stages.batch_size_arg("auto") == "auto"
    with pytest.raises(argparse.ArgumentTypeError, match="'auto'"):
        bench_inference_stages.batch_size_arg("0")
