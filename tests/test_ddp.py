"""Multi-process training: 2 CPU processes with DDP on gloo (slow)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg", PL_TORCH_DISTRIBUTED_BACKEND="gloo")
    run = [sys.executable, "-m", "ptychopinn.cli.main"]
    subprocess.run(
        [*run, "simulate", "scan.npz", "--N", "32", "--n-positions", "100", "-q"],
        cwd=tmp_path,
        check=True,
        env=env,
        timeout=300,
    )
    proc = subprocess.run(
        [
            *run,
            "train",
            "--data",
            "scan.npz",
            "--output-dir",
            "run",
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--epochs",
            "2",
            "--logger",
            "csv",
            "--no-progress",
            "--set",
            "model.N=32",
            "--set",
            "model.n_filters_scale=0.25",
            "--set",
            "save_reconstruction=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "world_size" in proc.stdout + proc.stderr
        or "distributed" in (proc.stdout + proc.stderr).lower()
    )
    assert (tmp_path / "run" / "model.ptychopinn.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
