"""Giving memory back to the system after a burst of work (a listener run, a large log read).

A run allocates and frees many small buffers from several worker threads; glibc keeps what was
freed in per-thread arenas, so the process's RSS stays at its peak long after the run. `trim()`
hands the free pages back (`malloc_trim`) and asks Arrow's pool to release what it keeps cached.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

import pyarrow as pa

_libc = None
try:  # glibc only; elsewhere trim() is Arrow's part alone
    _name = ctypes.util.find_library("c")
    _lib = ctypes.CDLL(_name) if _name else None
    if _lib is not None and hasattr(_lib, "malloc_trim"):
        _libc = _lib
except OSError:
    _libc = None


def use_returning_pool() -> str:
    """Make jemalloc Arrow's memory pool, unless $ARROW_DEFAULT_MEMORY_POOL names one (D62): it hands
    what any thread freed back to the system over time, where mimalloc kept it per thread. Its name."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        with contextlib.suppress(NotImplementedError):  # a pyarrow built without jemalloc keeps its default
            pa.set_memory_pool(pa.jemalloc_memory_pool())
    return pa.default_memory_pool().backend_name


def trim() -> None:
    """Return freed memory to the system (cheap: a few ms)."""
    try:
        pa.default_memory_pool().release_unused()
    except Exception:  # noqa: BLE001 - an older pool without it
        pass
    if _libc is not None:
        _libc.malloc_trim(0)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc; 0 where unknown."""
    try:
        with open(f"/proc/{pid or os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
