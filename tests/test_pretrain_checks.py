"""pretrain refuses bad plans before it simulates, and records a failed training."""

from __future__ import annotations

import importlib
import json
import logging

import numpy as np
import pytest
from pydantic import ValidationError

from ptychopinn.errors import ConfigError, DataError
from ptychopinn.pretraining import PretrainConfig, build_pretraining_scan, pretrain, resolve_source
from ptychopinn.simulation import make_probe

N = 32
TINY = {"n_objects": 1, "positions_per_object": 16}


@pytest.fixture(scope="module")
def probe() -> np.ndarray:
    return make_probe("disk", N, diameter_px=12.8, fresnel_number=4.0)


@pytest.fixture
def no_simulation(monkeypatch):
    """Make any simulation fail the test: the checks must come first."""
    def boom(*args, **kwargs):
        raise AssertionError("the pretraining scan was simulated before the check")

    # the package exports the function `pretrain` under the module's name
    module = importlib.import_module("ptychopinn.pretraining.pretrain")
    monkeypatch.setattr(module, "build_pretraining_scan", boom)


@pytest.mark.parametrize("name", ["gpu", "cuda", "mps"])
def test_missing_accelerator_is_refused_before_simulating(
        monkeypatch, no_simulation, probe, tmp_path, name):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=f"--accelerator {name}"):
        pretrain(probe, out_dir=tmp_path / "run", recipe=TINY,
                 overrides={"execution": {"accelerator": name}})
    assert not (tmp_path / "run" / "pretraining.json").exists()


def test_test_data_file_is_checked_before_simulating(no_simulation, probe, tmp_path):
    from ptychopinn.data.npz import save_npz
    from ptychopinn.simulation import SimulationConfig, simulate_scan

    path = save_npz(simulate_scan(SimulationConfig(N=64, n_positions=16, seed=1)),
                    tmp_path / "scan64.npz")
    with pytest.raises(DataError, match=r"test_data_file .*expected 32x32 .*found 64x64"):
        pretrain(probe, out_dir=tmp_path / "run", recipe=TINY,
                 overrides={"test_data_file": str(path)})


def test_failed_training_is_recorded(monkeypatch, probe, tmp_path):
    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("ptychopinn.training.runner.train_pytorch", fail)
    with pytest.raises(RuntimeError, match="boom"):
        pretrain(probe, out_dir=tmp_path / "run", recipe=TINY, max_minutes=1.0)
    meta = json.loads((tmp_path / "run" / "pretraining.json").read_text())
    assert meta["status"] == "failed" and "boom" in meta["error"]


@pytest.mark.parametrize(
    ("step", "jitter"), [(1e-6, 0.0), (0.2, 0.0), (N, 0.5), (200.0, 0.5)]
)
def test_step_without_distinct_positions_or_overlap_is_refused(probe, step, jitter):
    recipe = PretrainConfig(pattern="raster", jitter_px=jitter, **TINY)
    with pytest.raises(ConfigError, match=r"pretrain\.step_px: expected .* found"):
        build_pretraining_scan(probe, recipe, step_px=step, photons=1e4)


def test_plan_too_large_for_memory_is_refused(monkeypatch, probe):
    monkeypatch.setattr("ptychopinn.pretraining.dataset.MAX_MEMORY_GB", 1e-4, raising=False)
    with pytest.raises(ConfigError) as exc:
        build_pretraining_scan(probe, PretrainConfig(**TINY), step_px=4.0, photons=1e4)
    msg = str(exc.value)
    assert "GB" in msg and "pretrain.n_objects" in msg and "pretrain.margin_px" in msg


def test_too_many_patterns_are_refused():
    with pytest.raises(ValidationError, match="n_objects x positions_per_object"):
        PretrainConfig(n_objects=2000, positions_per_object=1000)
    assert PretrainConfig(n_objects=1000, positions_per_object=1000).n_objects == 1000


def test_scan_template_with_too_few_positions(probe, caplog):
    recipe = PretrainConfig(pattern="scan", **TINY)
    few = np.stack(np.meshgrid(np.arange(2.0), np.arange(2.0)), -1).reshape(-1, 2) * 4
    with pytest.raises(ConfigError, match=r"--scan: .*at least 16.*the scan has 4"):
        build_pretraining_scan(probe, recipe, step_px=4.0, photons=1e4, template_px=few)
    grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(4.0)), -1).reshape(-1, 2) * 4
    recipe = PretrainConfig(pattern="scan", n_objects=1, positions_per_object=30)
    with caplog.at_level(logging.WARNING, logger="ptychopinn"):
        scan = build_pretraining_scan(probe, recipe, step_px=4.0, photons=1e4, template_px=grid)
    assert scan.n_patterns == 20
    assert "20 positions, fewer than pretrain.positions_per_object=30" in caplog.text


def test_seed_from_set_names_the_key(probe, tmp_path, capsys):
    from ptychopinn.cli.main import main

    np.save(tmp_path / "probe.npy", probe.astype(np.complex64))
    rc = main(["pretrain", "--probe", str(tmp_path / "probe.npy"),
               "--output-dir", str(tmp_path / "run"), "--set", "seed=abc"])
    err = capsys.readouterr().err
    assert rc == 2 and "seed:" in err and "'abc'" in err and "invalid literal" not in err


def test_empty_object_kinds_names_the_key():
    from ptychopinn.config.io import build

    with pytest.raises(ConfigError, match=r"pretrain\.object_kinds: .*found an empty list"):
        build(PretrainConfig, {"object_kinds": []}, where="pretrain recipe",
              prefix="pretrain.")


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated"])
def test_unreadable_probe_npz_names_the_option(tmp_path, content):
    from ptychopinn.pretraining import load_probe

    (tmp_path / "probe.npz").write_bytes(content)
    with pytest.raises(DataError, match=r"^--probe .*probe\.npz"):
        load_probe(tmp_path / "probe.npz")


def test_bad_n_is_refused_before_the_probe_is_resampled(probe, tmp_path, caplog):
    np.save(tmp_path / "probe.npy", probe.astype(np.complex64))
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError, match=r"model\.N.*48"):
        resolve_source(tmp_path / "probe.npy", N=48)
    assert "padded" not in caplog.text


@pytest.mark.parametrize("minutes", [float("inf"), 1e13])
def test_unbounded_time_budget_is_refused_before_simulating(no_simulation, probe, tmp_path,
                                                            minutes):
    with pytest.raises(ConfigError, match="max_time_minutes"):
        pretrain(probe, out_dir=tmp_path / "run", recipe=TINY, max_minutes=minutes)
