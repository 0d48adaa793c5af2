"""Started listener-model executors, shared by the runs that use the same model and stopped when
idle or broken."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Hashable
from dataclasses import dataclass

from wallaroo_pulumi.runtime.sidekick import Placement

from .executor import Executor, ListenerModelRef, make_executor

Key = tuple[Hashable, ...]


@dataclass
class _Cached:
    executor: Executor
    refs: int
    last_used: float
    broken: bool = False


class ExecutorCache:
    def __init__(self, mode: str, idle_seconds: float, placement: Placement) -> None:
        self.mode = mode
        self.placement = placement
        self.idle_seconds = idle_seconds
        self._executors: dict[Key, _Cached] = {}
        self._lock = asyncio.Lock()

    async def acquire(self, ref: ListenerModelRef) -> tuple[Key, Executor]:
        """A started executor of `ref` (started here if none is), held until :meth:`release`."""
        key = (self.mode, *ref.cache_key)
        async with self._lock:
            c = self._executors.get(key)
            if c is None or c.broken:
                ex = make_executor(ref, self.mode, self.placement)
                await ex.start()
                c = self._executors[key] = _Cached(ex, 0, time.monotonic())
            c.refs += 1
            c.last_used = time.monotonic()
            return key, c.executor

    async def release(self, key: Key, broken: bool) -> None:
        """Give back an executor; a broken one is stopped once its last user releases it."""
        async with self._lock:
            c = self._executors.get(key)
            if c is None:
                return
            c.refs -= 1
            c.last_used = time.monotonic()
            if broken:
                c.broken = True
            if c.broken and c.refs <= 0:
                del self._executors[key]
                with contextlib.suppress(Exception):
                    await c.executor.stop()

    async def reap(self) -> None:
        """Stop the executors nobody has used for `idle_seconds`."""
        if self._lock.locked():  # a listener model is starting (maybe for minutes): reap next tick,
            return               # never stall the caller's heartbeats and kill checks behind it
        now = time.monotonic()
        async with self._lock:
            for key, c in list(self._executors.items()):
                if c.refs <= 0 and now - c.last_used > self.idle_seconds:
                    del self._executors[key]
                    with contextlib.suppress(Exception):
                        await c.executor.stop()

    async def close(self) -> None:
        for c in list(self._executors.values()):
            with contextlib.suppress(Exception):
                await c.executor.stop()
        self._executors.clear()
