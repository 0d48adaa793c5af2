"""`Streaming`: a streamed answer over a `Channel`, shared by a local worker's supervisor and a pod's
link (D61). A stream takes one of the worker's slots until it ends; a consumer that stops early (or
is cancelled) leaves the rest to be read and dropped in the background, so the slot frees at the
end of that answer and the worker and the other requests on its channel go on undisturbed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick import protocol
from wallaroo_pulumi.runtime.sidekick.autoscale import BusyClock
from wallaroo_pulumi.runtime.sidekick.channel import Channel, Waiter
from wallaroo_pulumi.runtime.sidekick.merging import MergingQueue

log = logging.getLogger("wallaroo.sidekick")


class Streaming:
    """Mixin: `predict_stream` given where the channel comes from and how an answer frame reads."""

    _queue: MergingQueue
    _clock: BusyClock
    _drains: set[asyncio.Task[None]]

    # -- what the replica says ------------------------------------------------------------
    async def _ready_channel(self) -> Channel:
        """The live channel, raising when there is none."""
        raise NotImplementedError

    async def _next_frame(self, channel: Channel, waiter: Waiter) -> protocol.Frame:
        """The next frame of an answer (a replica may bound the wait)."""
        return await waiter.next()

    def _answer(self, ftype: bytes, body: bytes) -> pa.Table:
        """The answer frame's table, or the model's error raised."""
        raise NotImplementedError

    def _halted(self) -> bool:
        """Being stopped: an abandoned stream is not drained, the channel is closing."""
        raise NotImplementedError

    def _label(self) -> str:
        raise NotImplementedError

    # -- the stream -------------------------------------------------------------------------
    async def predict_stream(self, table: pa.Table) -> AsyncIterator[protocol.StreamPart]:
        """Answer one batch as a stream: each CHUNK as the worker sends it, then the whole answer
        (``final``). Never merged with other requests."""
        payload = memoryview(protocol.table_to_ipc(table))
        await self._queue.acquire()
        self._clock.start()
        waiter: Waiter | None = None
        channel: Channel | None = None
        finished = abandoned = False
        try:
            channel = await self._ready_channel()
            waiter = await channel.open(protocol.STREAM, payload)
            while True:
                frame = await self._next_frame(channel, waiter)
                if frame.ftype == protocol.CHUNK:
                    yield protocol.StreamPart(protocol.ipc_to_table(frame.payload), final=False)
                    continue
                finished = True
                yield protocol.StreamPart(self._answer(frame.ftype, frame.payload), final=True)
                return
        except (GeneratorExit, asyncio.CancelledError):
            abandoned = waiter is not None and not finished and not self._halted()
            raise
        finally:
            if abandoned and channel is not None and waiter is not None:
                drain = asyncio.create_task(self._drain(channel, waiter), name=f"drain-{self._label()}")
                self._drains.add(drain)
                drain.add_done_callback(self._drains.discard)
            else:
                if waiter is not None and channel is not None:
                    channel.forget(waiter)
                self._clock.stop()
                self._queue.release()

    async def _drain(self, channel: Channel, waiter: Waiter) -> None:
        """Read and drop the rest of an abandoned stream, then free its slot."""
        try:
            while (await self._next_frame(channel, waiter)).ftype == protocol.CHUNK:
                pass
        except Exception as exc:  # noqa: BLE001 - a crash was reported by the reader; nobody waits for this answer
            log.info("%s: abandoned stream ended with %s", self._label(), exc)
        finally:
            channel.forget(waiter)
            self._clock.stop()
            self._queue.release()
