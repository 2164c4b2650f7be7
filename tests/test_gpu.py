"""The GPU paths give the CPU's answers (skipped where torch sees no CUDA device).

CI has no GPU: these run when a machine with one is at hand
(``pytest tests/test_gpu.py``), and they are what the claim "runs on CPU and GPU"
rests on: the physics prior, training, the bundle written from a GPU run,
inference and refinement.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptychopinn import api
from ptychopinn.config import InferenceConfig, TrainingConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _cfg(tmp_path, accelerator: str) -> TrainingConfig:
    return TrainingConfig.model_validate({
        "output_dir": str(tmp_path / f"run_{accelerator}"),
        "nepochs": 4,
        "learning_rate": 3e-3,
        "max_time_minutes": None,
        "batch_size": 16,
        "seed": 0,
        "model": {"N": 32, "n_filters_scale": 0.25},
        "execution": {"logger": "none", "progress_bar": False, "accelerator": accelerator},
        "save_reconstruction": False,
    })


def test_scan_prior_on_cuda_matches_cpu(small_scan) -> None:
    from ptychopinn.physics.prior_scan import scan_error_reduction

    amps = torch.from_numpy(small_scan.diffraction).float()
    probe = torch.from_numpy(small_scan.probe)
    a = scan_error_reduction(amps, small_scan.positions_px, probe, 4)
    b = scan_error_reduction(amps, small_scan.positions_px, probe, 4, device="cuda")
    assert b.canvas.device.type == "cuda"
    pa = a.patches(small_scan.positions_px, 32)
    pb = b.patches(small_scan.positions_px, 32).cpu()
    assert float((pa - pb).abs().max()) < 1e-3 * float(pa.abs().max())


def test_training_on_gpu_learns_and_its_bundle_loads_on_cpu(tmp_path, small_scan) -> None:
    res = api.train(_cfg(tmp_path, "gpu"), small_scan)
    losses = [h["train/loss"] for h in res.history]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    loaded = api.load_bundle(res.bundle_path)
    assert next(loaded.model.parameters()).device.type == "cpu"
    cpu = api.reconstruct(loaded, small_scan, InferenceConfig(execution={"accelerator": "cpu"}))
    assert np.isfinite(cpu.object).all()


def test_inference_on_cuda_matches_cpu(tmp_path, small_scan) -> None:
    res = api.train(_cfg(tmp_path, "cpu"), small_scan)
    loaded = api.load_bundle(res.bundle_path)
    cpu = api.reconstruct(loaded, small_scan, InferenceConfig(execution={"accelerator": "cpu"}))
    gpu = api.reconstruct(loaded, small_scan, InferenceConfig(execution={"accelerator": "gpu"}))
    lit = cpu.weight > 0.1 * cpu.weight.max()
    err = np.abs(cpu.object - gpu.object)[lit]
    # TF32 convolutions on the GPU: agreement to a few per cent of the object's scale
    assert float(err.max()) < 0.05 * float(np.abs(cpu.object[lit]).max())
    assert float(err.mean()) < 0.005 * float(np.abs(cpu.object[lit]).mean())


def test_probe_retrieval_on_cuda_matches_cpu(small_scan) -> None:
    from ptychopinn.refinement import retrieve_probe

    a = retrieve_probe(small_scan, epochs=3, device="cpu").probe
    b = retrieve_probe(small_scan, epochs=3, device="cuda").probe
    assert np.abs(a - b).max() < 1e-2 * np.abs(a).max()
