"""The quick start's main job (`ptychopinn demo`), on a tiny time budget."""

from __future__ import annotations

import json

import numpy as np


def test_demo_runs_end_to_end_and_summarises(tmp_path, capsys) -> None:
    from ptychopinn.cli.demo import run_demo

    assert run_demo(tmp_path, minutes=0.02, accelerator="cpu", seed=2) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name in ("scan.npz", "probe.png", "positions.png", "run/model.ptychopinn.safetensors",
                 "reconstruction/reconstruction.npz", "reconstruction/metrics.json"):
        assert (tmp_path / name).is_file(), name
    # a barely trained model still reconstructs the physics prior's object
    assert 0.6 < summary["amp_ssim"] <= 1 and 0.6 < summary["phase_ssim"] <= 1, summary
    assert np.isfinite(summary["deviance_over_noise_floor"])
    assert 0.9 < summary["deviance_over_noise_floor"] < 50, summary
    assert "4/4 writing figures and metrics" in capsys.readouterr().out
