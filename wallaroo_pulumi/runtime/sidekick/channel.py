"""`Channel`: the frames of one worker process seen from its supervisor (D61). Requests go out
tagged with ids; one reader task hands each answer frame to the waiter of its id, so several
requests can be in flight at once and a caller that gives up leaves nothing out of step: its
answer is dropped when it comes."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

from wallaroo_pulumi.runtime.sidekick import protocol

#: Given the exception that ended the reading and whether a stream was in flight, says what
#: each waiter gets instead of an answer (the supervisor's crash or stop error).
OnLost = Callable[[BaseException, bool], Awaitable[BaseException]]
_TERMINAL = (protocol.RESPONSE, protocol.ERROR)
_MAX_ID = 2**32 - 1


class Waiter:
    """The frames of one request's answer, as the reader hands them over (a deque and one future
    to wake the caller: lighter than an `asyncio.Queue` on the per-request path)."""

    __slots__ = ("_items", "_wake", "rid", "streamed")

    def __init__(self, rid: int, streamed: bool) -> None:
        self.rid = rid
        self.streamed = streamed
        self._items: collections.deque[protocol.Frame | BaseException] = collections.deque()
        self._wake: asyncio.Future[None] | None = None

    def put(self, item: protocol.Frame | BaseException) -> None:
        self._items.append(item)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def next(self) -> protocol.Frame:
        """The next frame of the answer (a CHUNK, or the final RESPONSE or ERROR)."""
        while not self._items:
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        item = self._items.popleft()
        if isinstance(item, BaseException):
            raise item
        return item


class Channel:
    """One worker's stdin and stdout: ``open`` sends a request, ``Waiter.next`` reads its answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, on_lost: OnLost,
                 name: str) -> None:
        self._writer = writer
        self._waiters: dict[int, Waiter] = {}
        self._last_id = 0
        self._lost: BaseException | None = None
        self._task = asyncio.create_task(self._read(reader, on_lost), name=f"sidekick-reader-{name}")

    async def open(self, ftype: bytes, payload: memoryview) -> Waiter:
        """Send one REQUEST or STREAM; its waiter (forget it once its answer ends, or is no longer wanted)."""
        if self._lost is not None:
            raise self._lost
        self._last_id = self._last_id % _MAX_ID + 1
        waiter = self._waiters[self._last_id] = Waiter(self._last_id, ftype == protocol.STREAM)
        try:
            await protocol.write_frame_async(self._writer, ftype, payload, waiter.rid)
        except ConnectionError:
            pass  # the worker is dead: the reader reports how it died to every waiter
        except BaseException:  # cancelled while the frame drains: nobody will read its answer
            self.forget(waiter)
            raise
        return waiter

    def forget(self, waiter: Waiter) -> None:
        """Stop waiting: frames of this request that still come are dropped."""
        self._waiters.pop(waiter.rid, None)

    async def request(self, ftype: bytes, payload: memoryview) -> protocol.Frame:
        """One request and its answer frame."""
        waiter = await self.open(ftype, payload)
        try:
            return await waiter.next()
        finally:
            self.forget(waiter)

    async def _read(self, reader: asyncio.StreamReader, on_lost: OnLost) -> None:
        try:
            while True:
                frame = await protocol.read_frame_async(reader)
                waiter = self._waiters.get(frame.rid)
                if waiter is None:
                    continue  # its caller gave up
                if frame.ftype in _TERMINAL:
                    self.forget(waiter)
                waiter.put(frame)
        except (asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError) as exc:
            streamed = any(w.streamed for w in self._waiters.values())
            self.close(await on_lost(exc, streamed))

    def close(self, exc: BaseException) -> None:
        """Fail every waiter, and every later request, with ``exc``."""
        if self._lost is None:
            self._lost = exc
        waiters, self._waiters = list(self._waiters.values()), {}
        for waiter in waiters:
            waiter.put(exc)

    async def stop(self, exc: BaseException) -> None:
        """Stop reading (the worker is being stopped) and fail what waits with ``exc``."""
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.close(exc)
