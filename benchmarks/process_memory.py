"""Memory of the running process from ``/proc/self/status`` (Linux), for the memory benchmarks' subprocesses."""

from __future__ import annotations


def status_bytes(field: str) -> int:
    """``VmRSS`` (resident now), ``VmHWM`` (resident high-water mark) ... in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")
