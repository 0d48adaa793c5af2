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
        self._retired: dict[int, _Cached] = {}  # broken, replaced, still in use: by id of their executor
        self._lock = asyncio.Lock()

    async def acquire(self, ref: ListenerModelRef) -> tuple[Key, Executor]:
        """A started executor of `ref` (started here if none is), held until :meth:`release`."""
        key = (self.mode, *ref.cache_key)
        async with self._lock:
            c = self._executors.get(key)
            if c is None or c.broken:
                if c is not None:  # still in use: its last user stops it
                    self._retired[id(c.executor)] = c
                ex = make_executor(ref, self.mode, self.placement)
                await ex.start()
                c = self._executors[key] = _Cached(ex, 0, time.monotonic())
            c.refs += 1
            c.last_used = time.monotonic()
            return key, c.executor

    def release(self, key: Key, executor: Executor, broken: bool) -> Executor | None:
        """Give back `executor` (at once: no lock, as a listener model starting may hold it for
        minutes). A broken one is returned, for the caller to stop, once its last user gave it back."""
        c = self._executors.get(key)
        if c is None or c.executor is not executor:  # already replaced: a broken one's last user stops it
            c = self._retired.get(id(executor))
            if c is None:
                return None
        c.refs -= 1
        c.last_used = time.monotonic()
        c.broken = c.broken or broken
        if not (c.broken and c.refs <= 0):
            return None
        if self._executors.get(key) is c:
            del self._executors[key]
        self._retired.pop(id(executor), None)
        return c.executor

    async def reap(self) -> None:
        """Stop the executors nobody has used for `idle_seconds`."""
        if self._lock.locked():  # a listener model is starting (maybe for minutes): reap next tick,
            return               # never stall the caller's heartbeats and kill checks behind it
        now = time.monotonic()
        async with self._lock:
            for key, c in list(self._executors.items()):
                if c.refs <= 0 and now - c.last_used > self.idle_seconds and self._executors.pop(key, None):
                    with contextlib.suppress(Exception):
                        await c.executor.stop()

    async def close(self) -> None:
        for c in [*self._executors.values(), *self._retired.values()]:
            with contextlib.suppress(Exception):
                await c.executor.stop()
        self._executors.clear()
        self._retired.clear()
