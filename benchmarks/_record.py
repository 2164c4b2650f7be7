"""Shared helpers of the benchmark scripts: machine description and recording.

`append_section` appends a markdown section to ``docs/benchmarks.md``
atomically (read, write a temporary file in the same folder, rename), holding
an advisory lock on the folder so two benchmarks finishing together do not
lose a section.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
_PACKAGES = ("ptychopinn", "numpy", "scipy", "torch", "lightning", "scikit-image")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict:
    """Platform, CPU count, Python and package versions, and the UTC date."""
    info: dict = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "load_avg_1min": round(os.getloadavg()[0], 1),
    }
    torch = sys.modules.get("torch")  # only when the benchmark uses it: no import here
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    if torch is not None:  # execution.precision 'auto' runs the network in bfloat16 there
        from ptychopinn.inference.precision import cpu_has_amx_bf16

        info["amx_bf16"] = cpu_has_amx_bf16()
    for name in _PACKAGES:
        v = _version(name)
        if v is not None:
            info[name] = v
    return info


def format_machine(info: dict) -> str:
    """One markdown line describing the machine and versions."""
    versions = ", ".join(f"{k} {info[k]}" for k in _PACKAGES if k in info)
    return (
        f"_{info['date_utc']}; {info['platform']}, {info['cpu_count']} CPUs, "
        + (f"GPU {info['gpu']}, " if "gpu" in info else "")
        + ("" if "amx_bf16" not in info else
           "AMX-BF16 (inference precision 'auto': the network in bfloat16), " if info["amx_bf16"]
           else "no AMX-BF16 (inference precision 'auto': float32), ")
        + f"Python {info['python']}; {versions}; load average {info['load_avg_1min']} "
        "at the end of the run._"
    )


def append_section(
    title: str, table_md: str, notes: str = "", path: str | os.PathLike | None = None
) -> Path:
    """Append ``## title``, the machine line, the table and notes to the
    benchmarks file (default ``docs/benchmarks.md``), atomically."""
    target = Path(path) if path is not None else BENCHMARKS_MD
    target.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"## {title}", "", format_machine(machine_info()), "", table_md.strip(), ""]
    if notes.strip():
        parts += [notes.strip(), ""]
    section = "\n".join(parts) + "\n"
    dir_fd = os.open(target.parent, os.O_RDONLY)  # lock the folder: no stray lock file
    try:
        try:
            import fcntl

            fcntl.flock(dir_fd, fcntl.LOCK_EX)
        except (ImportError, OSError):  # pragma: no cover - not POSIX
            pass
        old = target.read_text() if target.exists() else "# Benchmarks\n\n"
        if not old.endswith("\n"):
            old += "\n"
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(old + ("" if old.endswith("\n\n") else "\n") + section)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    finally:
        os.close(dir_fd)
    return target


def print_and_record(title: str, table_md: str, notes: str, record: bool) -> None:
    """Print a benchmark's table and notes; with ``record`` also `append_section` them."""
    print(table_md)
    print(notes)
    if record:
        append_section(title, table_md, notes=notes)


def markdown_table(headers: list[str], rows: list[list[object]]) -> str:
    """A simple markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
