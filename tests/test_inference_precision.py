"""`execution.precision` at inference: the generator under autocast, the physics in float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ptychopinn import api
from ptychopinn.bundle.pytorch import save_pinn
from ptychopinn.config import InferenceConfig, TrainingConfig
from ptychopinn.errors import ConfigError
from ptychopinn.inference import precision
from ptychopinn.inference.precision import network_dtype
from ptychopinn.inference.reconstruct import write_outputs
from ptychopinn.models.pinn import PtychoPINN, normalise_probe


def test_network_dtype_of_each_precision(monkeypatch) -> None:
    assert network_dtype("32-true", "cpu") is None
    assert network_dtype("bf16-mixed", "cpu") is torch.bfloat16
    assert network_dtype("16-mixed", "cpu") is torch.float16
    monkeypatch.setattr(precision, "cpu_has_amx_bf16", lambda: True)
    assert network_dtype("auto", "cpu") is torch.bfloat16
    assert network_dtype("auto", "cuda") is None  # GPUs: float32 unless asked
    monkeypatch.setattr(precision, "cpu_has_amx_bf16", lambda: False)
    assert network_dtype("auto", "cpu") is None
    for bad in ("64-true", "half"):
        with pytest.raises(ConfigError, match=f"execution.precision='{bad}'.*'bf16-mixed'"):
            network_dtype(bad, "cpu")


def test_amx_probe_falls_back_to_cpuinfo(monkeypatch) -> None:
    """Without PyTorch's probe the answer is the amx_bf16 flag of /proc/cpuinfo."""
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    info = Path("/proc/cpuinfo")
    flags = info.read_text() if info.is_file() else ""
    assert precision.cpu_has_amx_bf16() == (" amx_bf16" in flags)


def test_training_auto_is_float32() -> None:
    from ptychopinn.training.runner import training_precision

    assert TrainingConfig().execution.precision == "auto"
    assert training_precision("auto") == "32-true"
    assert training_precision("bf16-mixed") == "bf16-mixed"


def _objects(tmp_path, scan, prior_iterations):
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25,
                                "prior_iterations": prior_iterations})
    probe, _ = normalise_probe(torch.from_numpy(scan.probe), 4.0)
    torch.manual_seed(0)
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)
    out = {}
    for prec in ("32-true", "bf16-mixed"):
        icfg = InferenceConfig(execution={"num_threads": 1, "precision": prec})
        out[prec] = api.reconstruct(tmp_path / "model", scan, icfg)
    return out


@pytest.mark.parametrize("prior_iterations", [0, 2])
def test_bf16_changes_only_the_network_and_only_a_little(tmp_path, small_scan,
                                                         prior_iterations) -> None:
    """bf16-mixed runs the generator in bfloat16: the object differs from float32's
    (so autocast is on) by about bfloat16's rounding, is complex64 and records its dtype."""
    recs = _objects(tmp_path, small_scan, prior_iterations)
    a, b = recs["32-true"].object, recs["bf16-mixed"].object
    assert b.dtype == np.complex64 and recs["bf16-mixed"].network_dtype == "bfloat16"
    assert recs["32-true"].network_dtype == "float32"
    w = recs["32-true"].weight > 0
    diff = np.abs(a - b)[w]
    rel = np.linalg.norm(diff) / np.linalg.norm(a[w])
    assert diff.max() > 1e-5, "bf16-mixed left the network in float32"
    assert rel < 0.03, rel
    write_outputs(recs["bf16-mixed"], tmp_path / "out", figures=False)
    assert str(np.load(tmp_path / "out" / "reconstruction.npz")["network_dtype"]) == "bfloat16"


def test_unsupported_precisions_are_refused_by_name(tmp_path, small_scan) -> None:
    """64-true (single-precision physics; it used to fail in the first training step)
    is refused when the config is built; an unvalidated one when inference starts."""
    from ptychopinn.config import build

    for section in (TrainingConfig, InferenceConfig):
        with pytest.raises(ConfigError, match="precision"):
            build(section, {"execution": {"precision": "64-true"}}, where="run.yaml")
    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 0})
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)
    icfg = InferenceConfig()
    icfg.execution.__dict__["precision"] = "64-true"  # bypassing validation
    with pytest.raises(ConfigError, match="execution.precision='64-true'"):
        api.reconstruct(tmp_path / "model", small_scan, icfg)


def test_infer_precision_flag() -> None:
    from ptychopinn.cli.commands import infer_config_from_args
    from ptychopinn.cli.main import build_parser

    def flag(*extra):
        args = build_parser().parse_args(["infer", "--model", "m", "--data", "s.npz", *extra])
        return infer_config_from_args(args).execution.precision

    assert flag() == "auto"
    assert flag("--precision", "32-true") == "32-true"
    assert flag("--precision", "bf16-mixed") == "bf16-mixed"
    with pytest.raises(SystemExit):
        flag("--precision", "64-true")


def test_network_batch_size_auto_follows_the_device_dtype_and_size() -> None:
    """'auto': 64 groups on GPUs and in reduced precision; a float32 network on a CPU gets
    32 at N=64, inversely proportional to N (a power of two, 4 to 64); numbers pass."""
    from ptychopinn.inference.precision import network_batch_size

    cpu = {n: network_batch_size("auto", n, None, "cpu") for n in (16, 32, 64, 96, 128, 256, 4096)}
    assert cpu == {16: 64, 32: 64, 64: 32, 96: 16, 128: 16, 256: 8, 4096: 4}
    assert network_batch_size("auto", 64, torch.bfloat16, "cpu") == 64
    assert network_batch_size("auto", 128, None, "cuda") == 64
    assert network_batch_size(7, 64, None, "cpu") == 7
    for bad in (0, -2, "big", True, 2.5):
        with pytest.raises(ConfigError, match="batch_size: expected a whole number >= 1 or 'auto'"):
            network_batch_size(bad, 64, None, "cpu")


def test_batch_size_changes_neither_the_object_nor_the_refusals(tmp_path, small_scan) -> None:
    """The groups per forward pass change how the network is called, not the object (the
    normalisation is per sample); the resolved number is recorded and written; the config
    refuses anything but a whole number >= 1 or 'auto', naming batch_size."""
    from ptychopinn.config import build

    cfg = TrainingConfig(model={"N": 32, "n_filters_scale": 0.25, "prior_iterations": 2})
    probe, _ = normalise_probe(torch.from_numpy(small_scan.probe), 4.0)
    torch.manual_seed(0)
    save_pinn(tmp_path / "model", PtychoPINN(cfg.model, probe), cfg)
    recs = {}
    for bs in (3, "auto"):
        icfg = InferenceConfig(batch_size=bs, execution={"num_threads": 1, "precision": "32-true"})
        recs[bs] = api.reconstruct(tmp_path / "model", small_scan, icfg)
    assert recs[3].network_batch_size == 3
    assert recs["auto"].network_batch_size == 64  # N=32, float32 on the CPU
    assert recs[3].timings_s["n_groups"] > 3  # several forward passes at 3
    np.testing.assert_allclose(recs[3].object, recs["auto"].object, rtol=0, atol=2e-5)
    write_outputs(recs[3], tmp_path / "out", figures=False)
    assert int(np.load(tmp_path / "out" / "reconstruction.npz")["network_batch_size"]) == 3
    assert InferenceConfig().batch_size == "auto"
    for bad in (0, "big"):
        with pytest.raises(ConfigError, match="batch_size"):
            build(InferenceConfig, {"batch_size": bad}, where="infer.yaml")


def test_batch_size_flag() -> None:
    """--batch-size takes a number or 'auto' (infer's default); train's refuses 'auto' when
    the arguments are parsed."""
    from ptychopinn.cli.commands import infer_config_from_args, train_config_from_args
    from ptychopinn.cli.main import build_parser

    def args(cmd, *extra):
        return build_parser().parse_args([cmd, "--data", "s.npz", *extra])

    assert infer_config_from_args(args("infer", "--model", "m")).batch_size == "auto"
    assert infer_config_from_args(args("infer", "--model", "m", "--batch-size", "auto")
                                  ).batch_size == "auto"
    assert infer_config_from_args(args("infer", "--model", "m", "--batch-size", "16")
                                  ).batch_size == 16
    for bad in ("0", "x", "2.5"):
        with pytest.raises(SystemExit):
            args("infer", "--batch-size", bad)
    assert train_config_from_args(args("train", "--batch-size", "8")).batch_size == 8
    with pytest.raises(SystemExit):  # refused at parsing: 'auto' is infer's only
        args("train", "--batch-size", "auto")
