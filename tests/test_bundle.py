"""Bundles: round trip, and clear errors for damaged or foreign files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from ptychopinn.bundle.format import BUNDLE_FILENAME, read_bundle, save_bundle
from ptychopinn.bundle.pytorch import load_pinn, save_pinn
from ptychopinn.config import TrainingConfig
from ptychopinn.errors import BundleError
from ptychopinn.models.pinn import PtychoPINN


@pytest.fixture
def model_and_cfg():
    cfg = TrainingConfig(model={"N": 32, "gridsize": 2, "n_filters_scale": 0.5})
    probe = torch.polar(torch.rand(1, 32, 32) + 0.1, torch.rand(1, 32, 32))
    model = PtychoPINN(cfg.model, probe, log_intensity_scale=1.3).eval()
    model.train_input_scale.fill_(7.0)
    return model, cfg


def test_round_trip_identical_outputs(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    path = save_pinn(tmp_path, model, cfg, history=[{"epoch": 0, "train/loss": 1.0}])
    assert path.name == BUNDLE_FILENAME
    loaded = load_pinn(tmp_path)
    assert loaded.config == cfg and loaded.backend == "pytorch"
    assert loaded.history[0]["train/loss"] == 1.0
    x = torch.rand(3, 4, 32, 32)
    offs = torch.randn(3, 4, 2)
    prior = torch.polar(torch.rand(3, 4, 32, 32) + 0.5, torch.randn(3, 4, 32, 32))
    with torch.no_grad():
        a = model(x, offs, 7.0, prior)
        b = loaded.model(x, offs, 7.0, prior)
    assert torch.equal(a, b)
    assert torch.equal(loaded.model.probe, model.probe)


def test_manifest_contents(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    path = save_pinn(tmp_path, model, cfg)
    manifest, state = read_bundle(path)
    for key in (
        "format_version",
        "backend",
        "package_version",
        "created",
        "config",
        "tensors_sha256",
        "history",
    ):
        assert key in manifest
    assert manifest["extra"]["intensity_scale"] == pytest.approx(np.exp(1.3), rel=1e-6)
    assert np.iscomplexobj(state["physics.probe"])


def test_no_pickle_in_bundle(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    raw = save_pinn(tmp_path, model, cfg).read_bytes()
    assert b"\x80\x04" not in raw[:16] and raw[8:9] == b"{"  # safetensors JSON header


def test_truncated(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    path = save_pinn(tmp_path, model, cfg)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BundleError, match="truncated|corrupt"):
        load_pinn(path)
    path.write_bytes(raw[:5])
    with pytest.raises(BundleError, match="truncated"):
        load_pinn(path)


def test_tampered_weights(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    path = save_pinn(tmp_path, model, cfg)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum"):
        load_pinn(path)


def _rewrite_manifest(path, change):
    """The bundle with its manifest changed as another writer would (re-sealed, so the
    check under test is reached, not the manifest digest's)."""
    from safetensors.numpy import load, save

    from ptychopinn.bundle.format import seal_manifest

    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    manifest = json.loads(header["__metadata__"]["ptychopinn_manifest"])
    change(manifest)
    manifest = seal_manifest(manifest)
    path.write_bytes(save(load(raw), metadata={"ptychopinn_manifest": json.dumps(manifest)}))


def test_unknown_version(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    path = save_pinn(tmp_path, model, cfg)
    _rewrite_manifest(path, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match="version 99"):
        load_pinn(path)


def test_other_backend(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    path = save_pinn(tmp_path, model, cfg)
    _rewrite_manifest(path, lambda m: m.update(backend="tensorflow"))
    with pytest.raises(BundleError, match="tensorflow"):
        load_pinn(path)


def test_not_a_bundle(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_text("hello world, not a bundle at all")
    with pytest.raises(BundleError):
        load_pinn(p)
    with pytest.raises(BundleError, match="not found"):
        load_pinn(tmp_path / "missing.safetensors")
    with pytest.raises(BundleError, match="no bundle"):
        load_pinn(tmp_path)


def test_atomic_write_leaves_no_temp(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    save_bundle(
        tmp_path / "b.safetensors",
        model.state_dict(),
        config=cfg.model_dump(mode="json"),
        backend="pytorch",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["b.safetensors"]


def test_non_finite_weights_are_not_saved(tmp_path, model_and_cfg):
    """A diverged training's NaN weights would make a bundle every load refuses: saving
    one is refused instead, naming the tensor, and no file is written."""
    import copy

    model, cfg = model_and_cfg
    broken = copy.deepcopy(model)
    name, weight = next((k, v) for k, v in broken.state_dict().items()
                        if v.is_floating_point() and v.numel() > 1)
    with torch.no_grad():
        weight[(0,) * weight.dim()] = float("nan")
    with pytest.raises(BundleError, match=rf"not written: '{re.escape(name)}' holds non-finite"):
        save_pinn(tmp_path, broken, cfg)
    assert not list(tmp_path.iterdir())


def test_read_manifest_reads_the_header_only(tmp_path, model_and_cfg, monkeypatch):
    """The dispatcher's manifest comes from the header (no tensor read or verified);
    a file that is no bundle still gets read_bundle's message."""
    from ptychopinn.bundle import format as fmt

    model, cfg = model_and_cfg
    path = save_pinn(tmp_path, model, cfg)
    monkeypatch.setattr(fmt, "read_bundle", lambda p: pytest.fail("read the whole bundle"))
    assert fmt.read_manifest(tmp_path)["backend"] == "pytorch"
    monkeypatch.undo()
    other = tmp_path / "other.safetensors"
    other.write_text("not a bundle")
    with pytest.raises(BundleError, match="not a ptychopinn bundle"):
        fmt.read_manifest(other)
    assert path.is_file()
