"""`RemoteSidekick`: one sidekick server (a pod of a step) seen from the runtime, over
:mod:`.link`. It connects with a timeout, hands the server the model if it has none, and keeps as
many batches in flight as the pod's worker answers at once (its READY says, D61), behind the same
merging queue and read by id by the same `Channel` as a local worker; a lost connection fails the
batches in flight as a crash (the pool sends them to another replica) and the next one links again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from wallaroo_pulumi.runtime.sidekick import link, protocol
from wallaroo_pulumi.runtime.sidekick.autoscale import BusyClock
from wallaroo_pulumi.runtime.sidekick.batching import DynamicBatching
from wallaroo_pulumi.runtime.sidekick.channel import Channel, Waiter
from wallaroo_pulumi.runtime.sidekick.errors import (
    SidekickCrashedError,
    SidekickError,
    SidekickLoadError,
    SidekickPredictError,
    stopped_error,
)
from wallaroo_pulumi.runtime.sidekick.merging import MergingQueue
from wallaroo_pulumi.runtime.sidekick.streaming import Streaming

log = logging.getLogger("wallaroo.sidekick.remote")
CONNECT_TIMEOUT_S = 3.0


class LinkDenied(SidekickError):
    """The server refused the link (wrong token, or it serves another model)."""


@dataclass(frozen=True)
class ModelBundle:
    """What a server needs to load a step: the artifact zip, its sha and extra requirements."""

    sha: str
    artifact: Path
    requirements: list[str] = field(default_factory=list)


class RemoteSidekick(Streaming):
    """One replica of a step, reached at ``host:port``; ``name`` is its pod's name."""

    def __init__(self, name: str, step_name: str, host: str, port: int, token: str, bundle: ModelBundle, *,
                 max_batch_rows: int = 64, batching: DynamicBatching | None = None, load_timeout_s: float = 120.0,
                 request_timeout_s: float = 300.0) -> None:
        self.name = name
        self.step_name = step_name
        self.host, self.port = host, port
        self._token = token
        self._bundle = bundle
        self.load_timeout_s = load_timeout_s
        self.request_timeout_s = request_timeout_s
        self._link: tuple[Channel, asyncio.StreamWriter] | None = None  # answers read by id (D61)
        self._relink = asyncio.Lock()
        self._state = "starting"
        self._last_error: str | None = None
        self._last_exit: str | None = None  # how its pod's container last ended badly (the kubelet's word)
        #: this replica's current link: a container restarted in place (same pod) is linked anew, and a
        #: request that failed on the old link may be tried on the new one
        self.link_id: tuple[str, int] = (name, 0)
        self._restarts = 0
        self.load_failed = False  # the server answered LOAD_ERROR: the model cannot load there
        self._clock = BusyClock()  # time spent answering batches, in proportion to the slots in use
        self._drains: set[asyncio.Task[None]] = set()  # abandoned streams read to their end
        self._queue = MergingQueue(self._exchange, step_name=step_name, max_batch_rows=max_batch_rows, batching=batching)

    # -- what the pool and status read ------------------------------------------------
    state = property(lambda self: self._state, doc="``starting`` | ``ready`` | ``failed`` | ``stopped``")
    last_error = property(lambda self: self._last_error or self._last_exit)
    restarts = property(lambda self: self._restarts)
    busy = property(lambda self: self._clock.busy)
    busy_seconds = property(lambda self: self._clock.seconds, doc="time spent answering batches so far")
    waiting = property(lambda self: self._queue.waiting)
    concurrency = property(lambda self: self._queue.slots, doc="batches its pod's worker answers at once (READY says)")
    pid = None  # in another pod
    pod = property(lambda self: self.name)

    def note(self, message: str | None) -> None:
        """What the pool knows of this replica's pod (e.g. the scheduler's reason), for status."""
        self._last_error = message

    def ended(self, message: str) -> None:
        """Its pod ended for good (evicted, say): no longer a replica, never linked again; why, for status."""
        self._drop(SidekickCrashedError(f"pod {self.name} of step {self.step_name!r}: {message}",
                                        step_name=self.step_name))
        self._state, self._last_error, self.load_failed = "failed", message, True

    def note_exit(self, message: str | None) -> None:
        """How its pod's container last ended badly (OOMKilled, an error exit): kept in status
        after the container restarts, until the pod goes."""
        self._last_exit = message

    def __repr__(self) -> str:
        return f"RemoteSidekick({self.name!r}, {self.host}:{self.port}, {self._state})"

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Connect (retrying while the server comes up) and load; raise `SidekickLoadError`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.load_timeout_s
        self._state = "starting"
        while True:
            try:
                await asyncio.wait_for(self._connect(), max(0.1, deadline - loop.time()))
                return
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                self._last_error = f"pod {self.name} ({self.host}:{self.port}) not reachable: {exc or type(exc).__name__}"
                if loop.time() >= deadline:
                    self._state = "failed"
                    raise SidekickLoadError(f"model {self.step_name!r}: {self._last_error} within "
                                            f"{self.load_timeout_s:g}s", step_name=self.step_name) from None
                await asyncio.sleep(0.2)
            except SidekickError as exc:
                self._state = "failed"
                self._last_error = str(exc)
                raise
            except protocol.ProtocolError as exc:  # e.g. a model over the frame limit: no retry helps
                self._state, self.load_failed = "failed", True
                self._last_error = f"model {self.step_name!r}: {exc}"
                raise SidekickLoadError(self._last_error, step_name=self.step_name) from None

    async def _connect(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S)
        try:
            link.write(writer, link.HELLO, protocol.json_payload(token=self._token, sha=self._bundle.sha,
                                                                 name=self.step_name))
            await writer.drain()
            ftype, _, body = await link.read(reader)
            if ftype == link.NEED_MODEL:
                await link.send_model(writer, {"requirements": self._bundle.requirements}, self._bundle.artifact)
                ftype, _, body = await link.read(reader)
        except BaseException:
            writer.close()
            raise
        if ftype == link.DENIED:
            writer.close()
            raise LinkDenied(f"pod {self.name} refused the link: {protocol.parse_json_payload(body).get('message')}",
                             step_name=self.step_name)
        if ftype != protocol.READY:
            writer.close()
            message = protocol.parse_json_payload(body).get("message") or f"model {self.step_name!r} failed to load"
            self.load_failed = True
            raise SidekickLoadError(message, step_name=self.step_name)
        ready = protocol.parse_json_payload(body)
        self._queue.slots = self._clock.slots = max(1, int(ready.get("concurrency") or 1))
        self.link_id = (self.name, self.link_id[1] + 1)
        channel: Channel

        async def lost(exc: BaseException, _streamed: bool) -> BaseException:
            return self._crash(channel, f"lost the connection ({type(exc).__name__})")

        channel = Channel(reader, writer, lost, self.name)
        self._link = (channel, writer)
        self._state = "ready"
        self._last_error = None

    async def stop(self) -> None:
        self._state = "stopped"
        for task in (*self._queue.tasks, *self._drains):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        stopped = stopped_error(self.step_name)
        if self._link is not None:
            await self._link[0].stop(stopped)
        self._drop(stopped)
        self._queue.fail_waiting(stopped)

    def _drop(self, exc: BaseException) -> None:
        """Close the link; every request still on it fails with ``exc``."""
        if self._link is not None:
            channel, writer = self._link
            self._link = None
            channel.close(exc)
            writer.close()

    def _crash(self, channel: Channel, what: str) -> SidekickCrashedError:
        """A lost or silent server is a crash of this replica (the pool retries elsewhere): the link
        is dropped, and the next request links again."""
        error = SidekickCrashedError(f"pod {self.name} of step {self.step_name!r} {what}", step_name=self.step_name)
        if self._link is not None and self._link[0] is channel:
            self._drop(error)
            if self._state != "stopped":
                self._state = "failed"
            self._last_error = str(error)
            log.warning("%s", error)
        return error

    # -- requests ----------------------------------------------------------------------
    async def predict(self, table: pa.Table) -> pa.Table:
        return await self._queue.submit(table)

    async def _exchange(self, table: pa.Table) -> pa.Table:
        """One batch over the link (the merging queue holds one of the worker's slots for it)."""
        payload = memoryview(protocol.table_to_ipc(table))
        channel = await self._ready_channel()
        self._clock.start()
        try:
            frame = await self._within(channel, channel.request(protocol.REQUEST, payload))
        finally:
            self._clock.stop()
        return self._answer(frame.ftype, frame.payload)

    def _halted(self) -> bool:
        return self._state == "stopped"

    def _label(self) -> str:
        return f"pod {self.name}"

    async def _ready_channel(self) -> Channel:
        """The live link, linking again (once, for every request that waits) if it was lost."""
        if self._link is None and self._state != "stopped":
            async with self._relink:
                if self._link is None and self._state != "stopped":
                    await self._reconnect()
        if self._link is None:
            raise SidekickCrashedError(f"pod {self.name} of step {self.step_name!r} is not connected "
                                       f"({self._last_error or self._state})", step_name=self.step_name)
        return self._link[0]

    async def _within(self, channel: Channel, answer: Awaitable[protocol.Frame]) -> protocol.Frame:
        """One frame of an answer within the request timeout; a silent server is a crash of this
        replica, failing every request on its link."""
        try:
            return await asyncio.wait_for(answer, self.request_timeout_s)
        except TimeoutError:
            error = self._crash(channel, f"did not answer within {self.request_timeout_s:g}s")
            channel.close(error)
            raise error from None

    async def _next_frame(self, channel: Channel, waiter: Waiter) -> protocol.Frame:
        return await self._within(channel, waiter.next())

    def _answer(self, ftype: bytes, body: bytes) -> pa.Table:
        if ftype == protocol.RESPONSE:
            return protocol.ipc_to_table(body)
        if ftype == protocol.ERROR:
            info = protocol.parse_json_payload(body)
            raise SidekickPredictError(info.get("message") or "unknown error", step_name=self.step_name,
                                       error_type=info.get("type"))
        raise SidekickError(f"pod {self.name} answered with an unexpected frame {ftype!r}", step_name=self.step_name)

    async def _reconnect(self) -> None:
        """One quick attempt (a pod restarted in place keeps its address)."""
        try:
            await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT_S * 2)
            self._restarts += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError, SidekickError) as exc:
            self._state = "failed"
            self._last_error = f"pod {self.name} ({self.host}:{self.port}) not reachable: {exc or type(exc).__name__}"
