"""This process's resident memory on Linux (`/proc/self/status`), for the memory benchmarks."""

from __future__ import annotations


def status_mb(key: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (the peak since the last `reset_peak`) of this
    process in MB; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reset_peak() -> bool:
    """Reset ``VmHWM`` to the current RSS (``clear_refs`` 5); False where that fails."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
