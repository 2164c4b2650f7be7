"""How the network runs at inference: its numerical precision (`ExecutionConfig.precision`)
and the groups per forward pass (`InferenceConfig.batch_size`).

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

The batch size ``"auto"`` (`network_batch_size`) is 64 groups per forward pass on GPUs and
where the network runs in reduced precision on a CPU (the AMX machines 64 was chosen on),
and fewer where it runs in float32 on a CPU: there a forward pass over 64 groups' feature
maps ran slower per group than over 16-32 (docs/benchmarks.md, `bench_inference_stages.py`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

INFERENCE_PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
DEFAULT_BATCH = 64
"""Groups per forward pass of ``batch_size='auto'`` on GPUs and in reduced precision."""
CPU_FLOAT32_BATCH_AT_64 = 32
"""Groups per forward pass of ``batch_size='auto'`` for a float32 network on a CPU at N=64;
inversely proportional to N at other sizes (a power of two, 4 to `DEFAULT_BATCH`). On a 2-core
AMD EPYC (float32) the generator's forward time per scan was lowest at 32 groups for N=64 and
16 for N=128 (8 for N=128 and gridsize 2 as fast as 16), and 64 groups took 1.04-1.6x as long;
at N=256 (8 groups) 64 took 1.9x as long, and 4 groups were about as fast as 8
(`benchmarks/bench_inference_stages.py`, docs/benchmarks.md, thirty-seventh session)."""


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


def network_batch_size(batch_size: int | str, n: int, dtype: torch.dtype | None,
                       device: torch.device | str) -> int:
    """Groups per forward pass of the generator: ``batch_size`` itself when a number, else
    (``'auto'``) `DEFAULT_BATCH` on a GPU or with the network in reduced precision
    (``dtype``, `network_dtype`'s), and on a CPU in float32 `CPU_FLOAT32_BATCH_AT_64` scaled
    by 64 / ``n`` (the largest power of two not above it, at least 4, at most `DEFAULT_BATCH`).

    Raises `ConfigError` naming ``batch_size`` for anything else (a config built without
    validation)."""
    from ptychopinn.errors import ConfigError

    if batch_size == "auto":
        if torch.device(device).type != "cpu" or dtype is not None:
            return DEFAULT_BATCH
        target = max(1, CPU_FLOAT32_BATCH_AT_64 * 64 // max(int(n), 1))
        return int(min(DEFAULT_BATCH, max(4, 1 << (target.bit_length() - 1))))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size: expected a whole number >= 1 or 'auto'; found "
                          f"{batch_size!r}")
    return batch_size


def batch_size_from_text(text: str) -> int | str:
    """A batch size as written on a command line: a whole number >= 1, or 'auto'; else a
    ValueError saying what was expected and found."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"expected a whole number >= 1 or 'auto'; found {text!r}")
    return value
