"""Request merging for one worker (docs/decisions.md, D8): requests that arrive while it is busy
go together as one batch of up to ``max_batch_rows`` rows, and the answer is split back by row
counts; with a model's `DynamicBatching` (D46) a batch also waits, up to its delay, to fill to its
target. `MergingQueue` reaches the worker only through an exchange function (table in, table out),
with up to ``slots`` batches in flight at once (D61: a worker that answers several at once)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick.batching import DynamicBatching
from wallaroo_pulumi.runtime.sidekick.errors import SidekickCrashedError, SidekickPredictError, stopped_error

Exchange = Callable[[pa.Table], Awaitable[pa.Table]]


class _Waiting:
    """A request waiting for its sidekick: its batch and the future its caller awaits."""

    __slots__ = ("arrived", "future", "table")

    def __init__(self, table: pa.Table, future: asyncio.Future[pa.Table], arrived: float) -> None:
        self.table = table
        self.future = future
        self.arrived = arrived

    def succeed(self, out: pa.Table) -> None:
        if not self.future.done():
            self.future.set_result(out)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class MergingQueue:
    """The requests of one worker. Without `batching` an idle worker gets a request at once
    (merging never waits for more); with it, the oldest request waits until `batch_size_target`
    rows wait or it has waited `max_batch_delay_ms`, and a batch holds at most `batch_size_limit`
    rows (else the larger of ``max_batch_rows`` and the target). A merged batch that fails with a
    model error, answers with a different number of rows, or crashes the worker is sent again one
    request at a time, so one bad request fails alone; after a crash the retries stop at the second
    request that crashes the worker alone. Up to ``slots`` batches (streams included) are in flight
    at once; with one slot a batch is sent when the one before it is answered."""

    def __init__(self, exchange: Exchange, *, step_name: str, max_batch_rows: int,
                 batching: DynamicBatching | None = None) -> None:
        self._exchange = exchange
        self._step_name = step_name
        self._batching = batching
        self._max_batch_rows = max_batch_rows if batching is None else (
            batching.batch_size_limit or max(max_batch_rows, batching.batch_size_target))
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._sender: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()
        self.slots = 1  # batches the worker answers at once (its READY says)
        self._in_flight = 0
        self._freed = asyncio.Event()
        self._batches: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Requests queued behind the batch in flight."""
        return len(self._waiting)

    @property
    def sender(self) -> asyncio.Task[None] | None:
        """The task that drains the queue (cancelling it fails the batch it is sending)."""
        return self._sender

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The task that drains the queue and those of batches in flight (cancelling them fails their batches)."""
        return [t for t in (self._sender, *self._batches) if t is not None and not t.done()]

    async def acquire(self) -> None:
        """Take one slot, waiting for one to free (a stream takes one, like a batch)."""
        while self._in_flight >= self.slots:
            self._freed.clear()
            await self._freed.wait()
        self._in_flight += 1

    def release(self) -> None:
        self._in_flight -= 1
        self._freed.set()

    async def submit(self, table: pa.Table) -> pa.Table:
        """Answer one batch; while the worker is busy it waits, to be merged with others."""
        loop = asyncio.get_running_loop()
        waiting = _Waiting(table, loop.create_future(), loop.time())
        self._waiting.append(waiting)
        self._arrived.set()
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_waiting(), name=f"sidekick-{self._step_name}-sender")
        # A caller that gives up (cancelled) leaves the batch in flight: its answer is dropped
        # when it comes, and the worker is not disturbed.
        return await waiting.future

    def fail_waiting(self, exc: BaseException) -> None:
        """Fail every request still queued with ``exc``."""
        while self._waiting:
            self._waiting.popleft().fail(exc)

    async def _send_waiting(self) -> None:
        """Drain the queue: merge what waits into batches, send each as a slot frees, hand back the slices."""
        batch: list[_Waiting] = []
        held = False  # a slot, not yet handed to a batch's task
        try:
            while self._waiting:
                await self.acquire()
                held = True
                if self._batching is not None:
                    await self._fill(self._batching)
                batch = self._take_batch()
                if batch and self.slots == 1:  # one at a time, on this task, as before D61
                    await self._send(batch)
                elif batch:
                    task = asyncio.create_task(self._send_then_release(batch), name=f"sidekick-{self._step_name}-batch")
                    self._batches.add(task)
                    task.add_done_callback(self._batches.discard)
                    held = False
                if held:
                    self.release()
                    held = False
                batch = []
        except asyncio.CancelledError:  # the sidekick is stopping: nobody may be left waiting
            if held:
                self.release()
            stopped = stopped_error(self._step_name)
            for waiting in batch:
                waiting.fail(stopped)
            raise

    async def _send_then_release(self, batch: list[_Waiting]) -> None:
        try:
            await self._send(batch)
        except asyncio.CancelledError:
            for waiting in batch:
                waiting.fail(stopped_error(self._step_name))
            raise
        finally:
            self.release()

    async def _fill(self, batching: DynamicBatching) -> None:
        """Wait until `batch_size_target` rows wait, or the oldest request has waited `max_batch_delay_ms`."""
        loop = asyncio.get_running_loop()
        while True:
            live = [w for w in self._waiting if not w.future.done()]
            if not live or sum(w.table.num_rows for w in live) >= batching.batch_size_target:
                return
            left = live[0].arrived + batching.max_batch_delay_ms / 1000 - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    async def _send(self, batch: list[_Waiting]) -> None:
        if len(batch) == 1:
            await self._answer(batch[0])
            return
        merged = pa.concat_tables([w.table for w in batch])
        try:
            out: pa.Table | None = await self._exchange(merged)
        except SidekickPredictError:
            out = None  # which request was at fault? ask them one by one
        except SidekickCrashedError:
            await self._answer_after_crash(batch)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. stopped: nothing to retry
            for waiting in batch:
                waiting.fail(exc)
            return
        if out is None or out.num_rows != merged.num_rows:
            for waiting in batch:
                await self._answer(waiting)
            return
        offset = 0
        for waiting in batch:
            waiting.succeed(out.slice(offset, waiting.table.num_rows))
            offset += waiting.table.num_rows

    def _take_batch(self) -> list[_Waiting]:
        """The oldest live request plus those behind it with its schema, up to ``max_batch_rows`` rows."""
        batch: list[_Waiting] = []
        rows = 0
        kept: list[_Waiting] = []
        while self._waiting:
            waiting = self._waiting.popleft()
            if waiting.future.done():
                continue  # its caller gave up
            if not batch:
                batch.append(waiting)
                rows = waiting.table.num_rows
            elif rows + waiting.table.num_rows > self._max_batch_rows:
                kept.append(waiting)
                break  # full: the rest keep their order for the next batch
            elif waiting.table.schema.equals(batch[0].table.schema):
                batch.append(waiting)
                rows += waiting.table.num_rows
            else:
                kept.append(waiting)
        self._waiting.extendleft(reversed(kept))
        return batch

    async def _answer(self, waiting: _Waiting) -> None:
        if waiting.future.done():
            return
        try:
            waiting.succeed(await self._exchange(waiting.table))
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            waiting.fail(exc)

    async def _answer_after_crash(self, batch: list[_Waiting]) -> None:
        """A merged batch crashed the worker: each request alone (once it is back), until a
        second one crashes it alone; the rest then fail with that crash, unsent."""
        crashes = 0
        last_crash: SidekickCrashedError | None = None
        for waiting in batch:
            if waiting.future.done():
                continue
            if crashes >= 2:
                waiting.fail(SidekickCrashedError(
                    f"{last_crash} (not retried: {crashes} requests crashed it alone)", step_name=self._step_name))
                continue
            try:
                waiting.succeed(await self._exchange(waiting.table))
            except SidekickCrashedError as exc:
                crashes += 1
                last_crash = exc
                waiting.fail(exc)
            except Exception as exc:  # noqa: BLE001 - handed to the caller
                waiting.fail(exc)
