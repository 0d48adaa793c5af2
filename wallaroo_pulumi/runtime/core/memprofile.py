"""A debug-only memory profile of the runtime process: `$WALLAROO_TRACEMALLOC_MINUTES=N` starts
`tracemalloc` and, every N minutes, writes into `<data_dir>/memprofile/` the top allocation sites
by line (and their change since the previous and the first snapshot) beside the numbers that tell
Python heap growth apart from allocator fragmentation and Arrow memory: traced bytes, RSS, glibc's
arena (`mallinfo2`: in use vs free but kept), Arrow's pool, and RSS again after `memory.trim()`
(what the allocators kept but nothing uses). `$WALLAROO_TRACEMALLOC_FRAMES` (default 12) is the
depth of each trace; 0 records the numbers alone, without tracemalloc and its cost. Off (nothing
started) when the variable is unset.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
import logging
import os
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import pyarrow as pa

from wallaroo_pulumi.runtime.core.memory import rss_bytes, trim

ENV = "WALLAROO_TRACEMALLOC_MINUTES"
FRAMES_ENV = "WALLAROO_TRACEMALLOC_FRAMES"
TOP = 40
FRAMES = 12  # enough to reach our code from a library's allocation
log = logging.getLogger(__name__)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")  # runs `ldconfig -p`: once
    return ctypes.CDLL(name) if name else None


def _mallinfo() -> dict[str, int]:
    """glibc's heap: `arena` bytes from the system, `in_use` by live blocks, `free` kept but unused,
    `mmapped` in separate maps (empty where glibc has no mallinfo2)."""
    fn = getattr(_libc(), "mallinfo2", None)
    if fn is None:
        return {}
    fn.restype = _MallInfo2
    info = fn()
    return {"arena": info.arena, "in_use": info.uordblks, "free": info.fordblks, "mmapped": info.hblkhd}


def _numbers() -> dict:
    pool = pa.default_memory_pool()
    traced, peak = tracemalloc.get_traced_memory()
    types = Counter(type(o).__name__ for o in gc.get_objects())
    return {
        "time": time.time(), "rss": rss_bytes(), "traced": traced, "traced_peak": peak, "malloc": _mallinfo(),
        "arrow": {"total_allocated": pa.total_allocated_bytes(), "pool": pool.backend_name,
                  "bytes_allocated": pool.bytes_allocated(), "max_memory": pool.max_memory()},
        "gc_objects": sum(types.values()), "top_types": dict(types.most_common(25)),
        "asyncio_tasks": types.get("Task", 0), "futures": types.get("Future", 0),
    }


class MemoryProfile(threading.Thread):
    """Snapshots every `minutes` into `out`: snap-<k>.json (numbers), snap-<k>.txt (top sites and the
    change since the previous one and since snapshot 0), snap-<k>.tracemalloc (the raw snapshot, for `Snapshot.load`)."""

    def __init__(self, out: Path, minutes: float) -> None:
        super().__init__(daemon=True, name="memprofile")
        self.out, self.every = out, minutes * 60
        self.first: tracemalloc.Snapshot | None = None
        self.prev: tracemalloc.Snapshot | None = None

    def run(self) -> None:
        k = 0
        while True:
            try:
                self.snapshot(k)
            except Exception:  # noqa: BLE001 - a debug aid never takes the runtime down
                log.exception("memory profile snapshot %d failed", k)
            k += 1
            time.sleep(self.every)

    def snapshot(self, k: int) -> None:
        numbers = _numbers()
        trim()
        numbers["rss_after_trim"], numbers["malloc_after_trim"] = rss_bytes(), _mallinfo()
        (self.out / f"snap-{k}.json").write_text(json.dumps(numbers, indent=1) + "\n")
        if tracemalloc.is_tracing():
            self.sites(k, numbers)

    def sites(self, k: int, numbers: dict) -> None:
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__),
                                                            tracemalloc.Filter(False, __file__, all_frames=True)])
        snap.dump(str(self.out / f"snap-{k}.tracemalloc"))
        lines = [f"# snapshot {k}: rss {numbers['rss'] / 2**20:.1f} MB, traced {numbers['traced'] / 2**20:.1f} MB, "
                 f"malloc {numbers['malloc']}, arrow {numbers['arrow']}", "", "## top sites by line"]
        lines += [str(s) for s in snap.statistics("lineno")[:TOP]]
        for title, base in (("the previous snapshot", self.prev), ("snapshot 0", self.first)):
            if base is not None:
                lines += ["", f"## change since {title}"] + [str(s) for s in snap.compare_to(base, "lineno")[:TOP]]
        if self.prev is not None:
            lines += ["", "## where the ten largest growths since the previous snapshot were allocated"]
            for stat in snap.compare_to(self.prev, "traceback")[:10]:
                lines += [f"{stat.size_diff:+,} B, {stat.count_diff:+,} blocks:"] + stat.traceback.format(most_recent_first=True)
        self.first, self.prev = self.first or snap, snap
        (self.out / f"snap-{k}.txt").write_text("\n".join(lines) + "\n")


def start_from_env(data_dir: Path) -> MemoryProfile | None:
    """Start the profile when `$WALLAROO_TRACEMALLOC_MINUTES` is set (a number of minutes)."""
    value = os.environ.get(ENV)
    if not value:
        return None
    try:
        minutes = float(value)
    except ValueError:
        raise SystemExit(f"${ENV} must be a number of minutes between snapshots, got {value!r}") from None
    if minutes <= 0:
        raise SystemExit(f"${ENV} must be a positive number of minutes, got {value!r}")
    frames = os.environ.get(FRAMES_ENV, str(FRAMES))
    if not frames.isdigit():
        raise SystemExit(f"${FRAMES_ENV} must be a whole number of frames (0: no tracemalloc), got {frames!r}")
    out = data_dir / "memprofile"
    out.mkdir(parents=True, exist_ok=True)
    if int(frames):
        tracemalloc.start(int(frames))
    profile = MemoryProfile(out, minutes)
    profile.start()
    log.warning("tracemalloc on: a memory snapshot every %g min into %s (slower; for debugging only)", minutes, out)
    return profile
