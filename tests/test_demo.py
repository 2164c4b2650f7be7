"""The quick start's main job (`ptychopinn demo`), on a tiny time budget."""

from __future__ import annotations

import json

import numpy as np
import pytest


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
    # its own folder: a rerun is not refused (it replaces scan.npz, run/, reconstruction/)
    from ptychopinn.cli.demo import check_demo_folder

    check_demo_folder(tmp_path)


def test_demo_folder_is_recognised_for_a_rerun(tmp_path) -> None:
    """A rerun into the demo's own folder (its marker, or an earlier demo's summary.json)
    replaces its files; a folder of the user's is refused (below)."""
    from ptychopinn.cli.demo import DEMO_MARKER, check_demo_folder

    (tmp_path / "scan.npz").write_bytes(b"an earlier demo's scan")
    (tmp_path / "reconstruction").mkdir()
    (tmp_path / DEMO_MARKER).write_text("written by `ptychopinn demo`\n")
    check_demo_folder(tmp_path)
    (tmp_path / DEMO_MARKER).unlink()
    (tmp_path / "summary.json").write_text(json.dumps({"scan": "s", "bundle": "b",
                                                       "amp_ssim": 0.9}))
    check_demo_folder(tmp_path)


def test_demo_refuses_a_folder_of_the_users(tmp_path) -> None:
    from ptychopinn.cli.demo import run_demo
    from ptychopinn.errors import OutputPathError

    busy = tmp_path / "busy"
    (busy / "run").mkdir(parents=True)
    (busy / "scan.npz").write_bytes(b"my scan")
    (busy / "run" / "model.ptychopinn.safetensors").write_bytes(b"my model")
    (busy / "summary.json").write_text('{"mine": 1}')  # not the demo's summary
    with pytest.raises(OutputPathError) as err:
        run_demo(busy, minutes=0.02, accelerator="cpu", seed=2)
    msg = str(err.value)
    assert "scan.npz" in msg and "model.ptychopinn.safetensors" in msg
    assert "another --output-dir" in msg
    assert (busy / "scan.npz").read_bytes() == b"my scan"
    assert (busy / "run" / "model.ptychopinn.safetensors").read_bytes() == b"my model"
    assert sorted(p.name for p in busy.iterdir()) == ["run", "scan.npz", "summary.json"]


def test_demo_checks_the_accelerator_before_writing(tmp_path, monkeypatch) -> None:
    import torch

    from ptychopinn.cli.demo import run_demo
    from ptychopinn.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--accelerator cuda"):
        run_demo(tmp_path / "dg", minutes=0.02, accelerator="cuda", seed=2)
    assert not (tmp_path / "dg").exists()
