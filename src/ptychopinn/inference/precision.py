"""The numerical precision of the network at inference (`ExecutionConfig.precision`).

Only the generator's convolutions and matrix products change precision (PyTorch
autocast); the physics prior, the residual correction of the prior, stitching
and refinement stay in float32 / complex64, and the generator's outputs are
cast back to float32 (`models.pinn.PtychoPINN.predict_amp_phase`).

* ``"32-true"``: float32 throughout.
* ``"bf16-mixed"`` / ``"16-mixed"``: the generator under autocast to bfloat16 /
  float16 on the inference device.
* ``"auto"`` (the default): ``"bf16-mixed"`` on a CPU whose oneDNN kernels have
  AMX-BF16 tile units (Intel Sapphire Rapids and later), where it runs the
  generator 1.7-1.9x as fast with the scores of the benchmark models
  unchanged to the third decimal (docs/benchmarks.md), and ``"32-true"`` everywhere else
  (CPUs without AMX, where bfloat16 is emulated and slower, and GPUs).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

INFERENCE_PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX-BF16 tile units that PyTorch can use.

    PyTorch's own check when it has one (``torch.cpu._is_amx_tile_supported``, which
    also asks the OS to enable the tiles), else the ``amx_bf16`` flag of
    ``/proc/cpuinfo``; False when neither can tell.
    """
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if check is not None:
        try:
            return bool(check())
        except Exception:  # noqa: BLE001 - a probe: any failure means "cannot tell"
            return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and " amx_bf16" in line for line in text.splitlines())


def network_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of the generator at inference, or None for float32.

    Raises `ConfigError` naming ``execution.precision`` for any other value (a
    config built without validation).
    """
    from ptychopinn.errors import ConfigError

    if precision not in INFERENCE_PRECISIONS:
        raise ConfigError(
            f"execution.precision={precision!r} is not an inference precision; expected one "
            f"of {', '.join(repr(p) for p in INFERENCE_PRECISIONS)}.")
    kind = torch.device(device).type
    if precision == "auto":
        return torch.bfloat16 if kind == "cpu" and cpu_has_amx_bf16() else None
    if precision == "32-true":
        return None
    return torch.bfloat16 if precision == "bf16-mixed" else torch.float16


def network_autocast(dtype: torch.dtype | None, device: torch.device | str):
    """A context that runs the generator in ``dtype`` (`network_dtype`); a no-op for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
