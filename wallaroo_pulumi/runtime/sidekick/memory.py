"""Sidekick memory limits enforced as Kubernetes enforces them, on resident memory: `guard`
samples the resident set of a worker and everything it spawned, and kills the process group
past the limit (docs/decisions.md, D9)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable

SAMPLE_INTERVAL_S = 0.05
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                found.extend(int(c) for c in f.read().split())
    return found


def tree_rss(pid: int) -> int | None:
    """Resident bytes of ``pid`` and its descendants; None where /proc cannot tell (not Linux)."""
    if not os.path.exists(f"/proc/{pid}/statm"):
        return None
    total, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            with open(f"/proc/{current}/statm", encoding="ascii") as f:
                total += int(f.read().split()[1]) * _PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue  # exited between listing and reading
        todo.extend(_children(current))
    return total


def format_bytes(n: int) -> str:
    """A Kubernetes-style binary quantity, rounded: ``612Mi``, ``1.5Gi``."""
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size:
            value = n / size
            return f"{value:.1f}".rstrip("0").rstrip(".") + unit
    return str(n)


async def guard(pid: int, limit: int, on_kill: Callable[[int], None], alive: Callable[[], bool]) -> None:
    """Kill process group ``pid`` once its resident memory passes ``limit`` bytes.

    ``on_kill`` gets the resident size that was seen, before the kill, so whoever
    notices the worker's death can already say why. Returns when ``alive()`` turns
    false or after the kill.
    """
    while alive():
        rss = tree_rss(pid)
        if rss is None:
            return  # nothing to measure with on this platform
        if rss > limit:
            on_kill(rss)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            return
        await asyncio.sleep(SAMPLE_INTERVAL_S)
